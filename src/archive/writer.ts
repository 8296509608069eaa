// Writes a checkpoint archive as one stream (format.ts): files are read from disk as the stream is consumed, so
// the archive is never held in memory, and every file's SHA-256 goes into the manifest at the end.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { zstdCompress, zstdCompressInto } from '../runtime/zstd.ts';
import {
  type ArchiveMeta,
  CHECKPOINT_DIR,
  CONFIG_DUMP,
  MANIFEST_FILE,
  type Manifest,
  META_FILE,
  ROOTFS_DIFF,
  SPEC_DUMP,
  STATS_DUMP,
} from './format.ts';

/** Source files are read 1 MiB at a time (page images are most of an archive: fewer, larger chunks). */
const READ_CHUNK = 1 << 20;

export interface ArchiveSources {
  meta: ArchiveMeta;
  /** Podman's config.dump and the OCI spec, as JSON values. */
  configDump: Record<string, unknown>;
  spec: Record<string, unknown>;
  /** CRIU's image directory. */
  imagesDir: string;
  /** The writable rootfs as a tar file, already written. */
  rootfsTar: string;
  compress: 'zstd' | 'none';
}

/**
 * The archive as a byte stream. A read error of any source file ends the stream with that error (the reader then
 * sees a truncated archive, never a complete-looking one).
 */
export function archiveStream(src: ArchiveSources): Readable {
  const pack = tarStream(src);
  const out = new PassThrough({ highWaterMark: READ_CHUNK });
  if (src.compress === 'zstd') {
    // the zstd program on every core, with a content checksum (runtime/zstd.ts says why not node:zlib)
    pipeline(pack, zstdCompress(), out).catch((err: Error) => out.destroy(err));
  } else {
    pipeline(pack, out).catch((err: Error) => out.destroy(err));
  }
  return out;
}

/**
 * The zstd archive written into the open file `fd` (from the descriptor's offset) by the zstd program itself: the
 * compressed bytes never pass through this process. `done` settles once zstd has exited 0, every byte written
 * (the caller then syncs the file); `cancel` stops it, and `done` fails.
 */
export function archiveIntoFile(
  src: Omit<ArchiveSources, 'compress'>,
  fd: number,
): { done: Promise<void>; cancel: (err: Error) => void } {
  const pack = tarStream({ ...src, compress: 'zstd' });
  const z = zstdCompressInto(fd);
  // the filter's readable side carries nothing: it ends when zstd exited 0
  const done = pipeline(
    pack,
    z,
    new Writable({
      write: (_c, _e, cb) => cb(),
    }),
  );
  return { done, cancel: (err) => pack.destroy(err) };
}

/** The archive as an uncompressed tar stream, its files read as it is consumed. */
function tarStream(src: ArchiveSources): Readable {
  const pack = tar.pack();
  const manifest: Manifest = { files: [] };
  const mtime = new Date(src.meta.createdAt);
  const addBuffer = (name: string, data: Buffer) =>
    new Promise<void>((resolve, reject) => {
      manifest.files.push({ name, size: data.length, sha256: sha256(data) });
      pack.entry({ name, size: data.length, mode: 0o600, mtime }, data, (err) =>
        err ? reject(err) : resolve(),
      );
    });
  const addFile = async (name: string, path: string) => {
    const { size } = await stat(path);
    const hash = createHash('sha256');
    let seen = 0;
    const count = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        seen += chunk.length;
        cb(null, chunk);
      },
    });
    await new Promise<void>((resolve, reject) => {
      const entry = pack.entry({ name, size, mode: 0o600, mtime }, (err) => (err ? reject(err) : resolve()));
      pipeline(createReadStream(path, { highWaterMark: READ_CHUNK }), count, entry).catch(reject);
    });
    // a file that changed size while read would make the tar lie about it
    if (seen !== size) throw new Error(`${path} changed while it was archived`);
    manifest.files.push({ name, size, sha256: hash.digest('hex') });
  };
  const json = (v: unknown) => Buffer.from(`${JSON.stringify(v, null, 2)}\n`);

  const fill = async () => {
    await addBuffer(META_FILE, json(src.meta));
    await addBuffer(CONFIG_DUMP, json(src.configDump));
    await addBuffer(SPEC_DUMP, json(src.spec));
    await new Promise<void>((resolve, reject) =>
      pack.entry({ name: CHECKPOINT_DIR, type: 'directory', mode: 0o700, mtime }, (err) =>
        err ? reject(err) : resolve(),
      ),
    );
    const images = (await readdir(src.imagesDir, { withFileTypes: true }))
      .filter((d) => d.isFile())
      .map((d) => d.name)
      .sort();
    for (const f of images) await addFile(`${CHECKPOINT_DIR}/${f}`, join(src.imagesDir, f));
    if (images.includes('stats-dump')) await addFile(STATS_DUMP, join(src.imagesDir, 'stats-dump'));
    await addFile(ROOTFS_DIFF, src.rootfsTar);
    // the manifest lists every file before it; it is not listed itself (its own damage shows as bad JSON or a
    // mismatch)
    const m = json(manifest);
    await new Promise<void>((resolve, reject) =>
      pack.entry({ name: MANIFEST_FILE, size: m.length, mode: 0o600, mtime }, m, (err) =>
        err ? reject(err) : resolve(),
      ),
    );
    pack.finalize();
  };

  fill().catch((err: Error) => pack.destroy(err));
  return pack as unknown as Readable;
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
