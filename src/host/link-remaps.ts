// The links CRIU needs in the rootfs for files that were open but unlinked while other hard links remained
// (--link-remap). CRIU links each such file under a new name beside its old one (`link_remap.N`) during the dump
// and the restore opens it by that name; but a dump that leaves the tasks running, as a migration's final dump and a
// checkpoint's do, removes those links again at its end, so the rootfs sent after it would lack them and the restore
// would fail. Between the dump and sending the rootfs they are made anew from the frozen tasks' descriptors; a dump
// that did not leave the tasks running (post-copy's) keeps CRIU's own. Either way they are listed, and removed when
// the container runs on here (a rollback, a checkpoint that thaws): it must find its rootfs as it was.
import { lstat, readFile, realpath, rm } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize } from 'node:path';
import { FerryError } from '../core/errors.ts';
import { type LinkRemap, linkRemaps } from '../images/link-remaps.ts';
import { ProcessRunner, type Runner } from '../runtime/exec.ts';
import { hostProcFs, type ProcFs } from '../runtime/proc-fs.ts';

export interface RelinkTarget {
  /** The dump's image directory. */
  images: string;
  /** The container's bundle on this host (its rootfs is config.json's root.path). */
  bundle: string;
  /** Every process of the container (host pids), frozen; asked only when the dump made a remap. */
  pids: () => Promise<number[]>;
}

/** The remaps a dump made, read from its images; none when it made none. */
export async function dumpedRemaps(images: string): Promise<LinkRemap[]> {
  const read = (f: string) => readFile(join(images, f)).catch(() => undefined);
  const remaps = await read('remap-fpath.img');
  // (most dumps have no remap at all: files.img is read only for one that has)
  return remaps ? linkRemaps(remaps, await read('files.img')) : [];
}

/** The rootfs of a bundle (config.json's root.path). */
async function rootfsOf(bundle: string): Promise<string> {
  const config = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8')) as {
    root?: { path?: string };
  };
  const path = config.root?.path ?? 'rootfs';
  return realpath(isAbsolute(path) ? path : join(bundle, path));
}

/** The descriptor (`/proc/PID/fd/N`) of a frozen task that holds the unlinked file `orig` open. */
async function holder(fs: ProcFs, pids: number[], orig: string): Promise<string | undefined> {
  for (const pid of pids) {
    for (const fd of await fs.readdir(`/proc/${pid}/fd`)) {
      const path = `/proc/${pid}/fd/${fd}`;
      if ((await fs.readlink(path)) === `${orig} (deleted)`) return path;
    }
  }
  return undefined;
}

/**
 * Makes each link the dump removed again, from the descriptor of the task that holds the file, and pushes the
 * host path of each link the rootfs now holds for the restore onto `made` as it goes, CRIU's kept ones too (so that
 * removeRelinked removes them all, also after a failure half-way). The link is
 * made through /proc/PID/root, the container's own view of its rootfs: a file is linked only within the mount it is
 * on, and the task's descriptor is on the container's. The directory must be in the rootfs and reached without a
 * symlink (a rootfs the container wrote must not send a link made as root elsewhere).
 */
export async function relinkRemaps(
  t: RelinkTarget,
  made: string[],
  runner: Runner = new ProcessRunner(),
  fs: ProcFs = hostProcFs,
): Promise<void> {
  const remaps = await dumpedRemaps(t.images);
  if (!remaps.length) return;
  const root = await rootfsOf(t.bundle);
  const pids = await t.pids();
  for (const r of remaps) {
    // a leading slash makes normalize drop any `..` above the root
    const rel = normalize(`/${r.remap}`).slice(1);
    const host = join(root, rel);
    const fail = (why: string) =>
      new FerryError(
        'FERRY_E_CHECKPOINT_FAILED',
        `cannot link ${r.orig} (open, unlinked) back as ${r.remap} for the restore: ${why}`,
        { phase: 'checkpoint' },
      );
    const dir = dirname(host);
    if (!rel || (await realpath(dir).catch(() => undefined)) !== dir)
      throw fail('its directory is not in the rootfs, or is reached through a symlink');
    if (
      await lstat(host).then(
        () => true,
        () => false,
      )
    ) {
      made.push(host); // CRIU kept it (a dump that did not leave the tasks running)
      continue;
    }
    const fd = await holder(fs, pids, r.orig);
    const pid = fd?.split('/')[2];
    if (!fd || !pid) throw fail('no process of the container holds it open');
    const r2 = await runner.run(['ln', '-L', '--', fd, `/proc/${pid}/root/${rel}`], {
      allowFail: true,
      timeoutMs: 10_000,
    });
    if (r2.code !== 0) throw fail(r2.stderr.trim() || `ln exited ${r2.code}`);
    made.push(host);
  }
}

/** Removes the links relinkRemaps listed (the container runs on here: it finds its rootfs as it was). */
export async function removeRelinked(made: string[]): Promise<void> {
  for (const path of made) await rm(path, { force: true });
}
