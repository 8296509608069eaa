// Which container a migration's images (in the images tmpfs, by migration id) belong to: a link in the
// container's directory. `ferry rm` removes the images of its container with it, and an agent that starts removes
// images no container links to and no migration holds (RAM would otherwise fill with dumps of failed migrations).
import { readdir, readlink, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { containerDir, type HostPaths, imageDir } from './paths.ts';

const LINK_PREFIX = 'images-';
const MIGRATION_ID = /^m[0-9a-f]{12}$/;
/**
 * A checkpoint's images and a staged archive (host/checkpoints.ts, host/archive-restore.ts) live only as long as the
 * agent that made them: at its start, any left are a crash's.
 */
const ARCHIVE_WORK = /^(checkpoint-k|restore-r|inspect-)[0-9a-f]{12}$/;

/** Notes that the images of migration `id` belong to container `name` (a source's local checkpoint). */
export async function linkImages(paths: HostPaths, name: string, id: string): Promise<void> {
  await symlink(imageDir(paths, id), join(containerDir(paths, name), `${LINK_PREFIX}${id}`)).catch(
    (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    },
  );
}

/** The migration ids whose images a container's directory links to. */
export async function linkedImageIds(paths: HostPaths, name: string): Promise<string[]> {
  const entries = await readdir(containerDir(paths, name)).catch(() => [] as string[]);
  return entries
    .filter((e) => e.startsWith(LINK_PREFIX))
    .map((e) => e.slice(LINK_PREFIX.length))
    .filter((id) => MIGRATION_ID.test(id));
}

/** Removes the images a container's directory links to (before the directory itself goes). */
export async function removeContainerImages(paths: HostPaths, name: string): Promise<void> {
  for (const id of await linkedImageIds(paths, name)) {
    const link = join(containerDir(paths, name), `${LINK_PREFIX}${id}`);
    // only where the link says, and only an image directory of this host
    if ((await readlink(link).catch(() => undefined)) === imageDir(paths, id))
      await rm(imageDir(paths, id), { recursive: true, force: true });
  }
}

/**
 * At agent start (after the incoming migrations were recovered): removes the image directories of migrations no
 * container links to, except those in `keep`, and those of checkpoints and staged archives. Returns the ids removed.
 */
export async function removeOrphanImages(
  host: { paths: HostPaths; names(): Promise<string[]> },
  keep: Iterable<string> = [],
): Promise<string[]> {
  const { paths } = host;
  const linked = new Set(keep);
  for (const n of await host.names()) for (const id of await linkedImageIds(paths, n)) linked.add(id);
  const removed: string[] = [];
  for (const id of await readdir(paths.imagesDir).catch(() => [] as string[])) {
    if (ARCHIVE_WORK.test(id)) {
      await rm(join(paths.imagesDir, id), { recursive: true, force: true });
      removed.push(id);
      continue;
    }
    if (!MIGRATION_ID.test(id) || linked.has(id)) continue;
    await rm(imageDir(paths, id), { recursive: true, force: true });
    removed.push(id);
  }
  return removed;
}
