// Writes a checkpoint archive as one stream (format.ts): files are read from disk as the stream is consumed, so
// the archive is never held in memory, and every file's SHA-256 goes into the manifest at the end.
//
// Compressed, it is a sequence of zstd frames, which any zstd reader takes as one stream (checkpointctl, Podman,
// `tar --zstd`): the data of every file of FRAME_OF_ITS_OWN bytes or more (the page images) is frames of its own,
// one per SLICE of it, each compressed by the zstd program from the file itself (dd reads the slice for it) and
// recording its length in its header; everything between them (headers, small files, padding) is a frame
// compressed from this process's tar bytes. A reader on the same host then has zstd decompress a large file's
// slices straight into its staged file, side by side (framed-source.ts). Every large file is hashed by reading it
// here beside zstd, which reads it too (from the page cache: one read from memory more). Slices compressed while
// CRIU still wrote the file (early.ts) are appended as they are, and only the rest is compressed here.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type Duplex, PassThrough, type Readable, type Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { traceStep } from '../core/trace.ts';
import { appendFiles } from '../runtime/concat.ts';
import { zstdCompress, zstdCompressInto, zstdCompressRange } from '../runtime/zstd.ts';
import type { EarlyFrames } from './early.ts';
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
import { header, padding, TRAILER } from './tar-header.ts';

/** Source files are read 1 MiB at a time (page images are most of an archive: fewer, larger chunks). */
const READ_CHUNK = 1 << 20;

/**
 * Files this large or larger get a zstd frame of their own: two more zstd runs each, on each side, so only where
 * the bytes are many (a CRIU dump's page images; the rootfs's tar when it is large).
 */
export const FRAME_OF_ITS_OWN = 8 << 20;

/**
 * A large file is compressed in slices of this size, one frame each, so that a reader can decompress them side by
 * side (zstd decompresses one frame on one core).
 */
export const SLICE = 256 << 20;

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
  /** Files of this many bytes or more get frames of their own (FRAME_OF_ITS_OWN; tests use less). */
  frameOfItsOwn?: number;
  /** Their slices (SLICE; tests use less). */
  slice?: number;
  /** Files of imagesDir whose first slices were compressed while CRIU wrote them (early.ts), by name. */
  early?: ReadonlyMap<string, EarlyFrames>;
}

/**
 * The archive as a byte stream. A read error of any source file ends the stream with that error (the reader then
 * sees a truncated archive, never a complete-looking one).
 */
export function archiveStream(src: ArchiveSources): Readable {
  const out = new PassThrough({ highWaterMark: READ_CHUNK });
  const sink = src.compress === 'zstd' ? new ZstdSink(out, src.slice) : new PlainSink(out);
  writeArchive(src, sink).then(
    () => out.end(),
    (err: Error) => {
      sink.abort(err);
      out.destroy(err);
    },
  );
  return out;
}

/**
 * The zstd archive written into the open file `fd` (from the descriptor's offset) by the zstd program itself: the
 * compressed bytes never pass through this process. `done` settles once the last zstd has exited 0, every byte
 * written (the caller then syncs the file); `cancel` stops it, and `done` fails.
 */
export function archiveIntoFile(
  src: Omit<ArchiveSources, 'compress'>,
  fd: number,
): { done: Promise<void>; cancel: (err: Error) => void } {
  const sink = new ZstdSink(fd, src.slice);
  const done = writeArchive({ ...src, compress: 'zstd' }, sink).catch((err: Error) => {
    sink.abort(err);
    throw err;
  });
  return { done, cancel: (err) => sink.abort(err) };
}

/** Where the tar's bytes go: as they are, or into zstd frames. */
interface Sink {
  /** Tar bytes: headers, small files, padding. */
  write(chunk: Buffer): Promise<void>;
  /**
   * A large file's content, whole; `hash` gets every byte of it (after those of `early`, which holds its first
   * slices already compressed and hashed). Resolves to the bytes hashed, `early`'s included.
   */
  file(path: string, hash: Hash, early?: EarlyFrames): Promise<number>;
  end(): Promise<void>;
  abort(err: Error): void;
}

async function writeArchive(src: ArchiveSources, sink: Sink): Promise<void> {
  const own = src.frameOfItsOwn ?? FRAME_OF_ITS_OWN;
  const manifest: Manifest = { files: [] };
  const mtime = new Date(src.meta.createdAt);
  const json = (v: unknown) => Buffer.from(`${JSON.stringify(v, null, 2)}\n`);
  const addBuffer = async (name: string, data: Buffer, listed = true) => {
    if (listed) manifest.files.push({ name, size: data.length, sha256: sha256(data) });
    await sink.write(header({ name, size: data.length, mode: 0o600, mtime, type: 'file' }));
    await sink.write(data);
    await sink.write(padding(data.length));
  };
  const addFile = async (name: string, path: string, early?: EarlyFrames) => {
    const { size } = await stat(path);
    // a head start is only for a file that gets frames of its own, and that has not shrunk since
    if (early && early.bytes > size) throw new Error(`${path} changed while it was archived`);
    const ahead = size >= own ? early : undefined;
    const hash = ahead?.hash ?? createHash('sha256');
    await sink.write(header({ name, size, mode: 0o600, mtime, type: 'file' }));
    let seen = 0;
    if (size >= own) seen = await sink.file(path, hash, ahead);
    else
      for await (const chunk of createReadStream(path, { highWaterMark: READ_CHUNK })) {
        hash.update(chunk as Buffer);
        seen += (chunk as Buffer).length;
        // more than the header said would shift every header after it
        if (seen > size) break;
        await sink.write(chunk as Buffer);
      }
    // a file that changed size while read would make the tar lie about it
    if (seen !== size) throw new Error(`${path} changed while it was archived`);
    await sink.write(padding(size));
    manifest.files.push({ name, size, sha256: hash.digest('hex') });
  };

  await addBuffer(META_FILE, json(src.meta));
  await addBuffer(CONFIG_DUMP, json(src.configDump));
  await addBuffer(SPEC_DUMP, json(src.spec));
  await sink.write(header({ name: CHECKPOINT_DIR, size: 0, mode: 0o700, mtime, type: 'directory' }));
  const images = (await readdir(src.imagesDir, { withFileTypes: true }))
    .filter((d) => d.isFile())
    .map((d) => d.name)
    .sort();
  for (const f of images) await addFile(`${CHECKPOINT_DIR}/${f}`, join(src.imagesDir, f), src.early?.get(f));
  if (images.includes('stats-dump')) await addFile(STATS_DUMP, join(src.imagesDir, 'stats-dump'));
  await addFile(ROOTFS_DIFF, src.rootfsTar);
  // the manifest lists every file before it; it is not listed itself (its own damage shows as bad JSON or a
  // mismatch)
  await addBuffer(MANIFEST_FILE, json(manifest), false);
  await sink.write(TRAILER);
  await sink.end();
}

/** Writes into `out`, waiting whenever it asks to. */
async function writeTo(out: Writable, chunk: Buffer): Promise<void> {
  if (out.destroyed) throw new Error('the archive stream was closed');
  if (!out.write(chunk)) await waitDrain(out);
}

function waitDrain(out: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      out.off('drain', ok);
      out.off('close', closed);
      out.off('error', done);
      if (err) reject(err);
      else resolve();
    };
    const ok = () => done();
    const closed = () => done(new Error('the archive stream was closed'));
    out.on('drain', ok).on('close', closed).on('error', done);
  });
}

/** An uncompressed tar into a stream. */
class PlainSink implements Sink {
  private readonly out: Writable;
  constructor(out: Writable) {
    this.out = out;
  }
  write(chunk: Buffer): Promise<void> {
    return chunk.length ? writeTo(this.out, chunk) : Promise.resolve();
  }
  async file(path: string, hash: Hash, early?: EarlyFrames): Promise<number> {
    // frames are zstd's: an uncompressed archive is never given any
    if (early) throw new Error('an uncompressed archive cannot take compressed frames');
    let seen = 0;
    for await (const chunk of createReadStream(path, { highWaterMark: READ_CHUNK })) {
      hash.update(chunk as Buffer);
      seen += (chunk as Buffer).length;
      await writeTo(this.out, chunk as Buffer);
    }
    return seen;
  }
  async end(): Promise<void> {}
  abort(): void {}
}

/**
 * zstd frames into an open file (each zstd writes it itself, one after the other from the descriptor's offset) or
 * into a stream (each zstd's output copied there in turn).
 */
class ZstdSink implements Sink {
  /** The zstd compressing the tar bytes since the last large file (one frame), if any. */
  private current: Duplex | undefined;
  private ended: Promise<void> | undefined;
  private failed: Error | undefined;
  private readonly out: number | Writable;
  private readonly slice: number;

  constructor(out: number | Writable, slice = SLICE) {
    this.out = out;
    this.slice = slice;
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.failed) throw this.failed;
    if (!chunk.length) return;
    if (!this.current) {
      this.current = typeof this.out === 'number' ? zstdCompressInto(this.out) : zstdCompress();
      this.ended = this.drain(this.current);
      // a zstd that fails mid-frame fails the next write; the error itself comes from `ended`
      this.ended.catch(() => {});
    }
    try {
      await writeTo(this.current, chunk);
    } catch (err) {
      await this.ended; // zstd's own error, when it is one
      throw err;
    }
  }

  async file(path: string, hash: Hash, early?: EarlyFrames): Promise<number> {
    await this.endFrame();
    if (this.failed) throw this.failed;
    const from = early?.bytes ?? 0;
    if (early) await this.append(early.frames);
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      // the hash reads the rest of the file beside zstd (both from the page cache)
      const hashed = (async () => {
        let seen = from;
        if (from >= size) return seen;
        for await (const chunk of createReadStream(path, { start: from, highWaterMark: READ_CHUNK })) {
          hash.update(chunk as Buffer);
          seen += (chunk as Buffer).length;
        }
        return seen;
      })();
      hashed.catch(() => {});
      for (let offset = from; offset < size; offset += this.slice) {
        if (this.failed) throw this.failed;
        const length = Math.min(this.slice, size - offset);
        const z = zstdCompressRange(
          { fd: fh.fd, offset, length },
          typeof this.out === 'number' ? this.out : undefined,
        );
        this.current = z;
        await this.drain(z);
        this.current = undefined;
      }
      return await hashed;
    } finally {
      await fh.close();
    }
  }

  async end(): Promise<void> {
    await this.endFrame();
  }

  /** Frames compressed ahead, appended as they are (into a file by cat, in the kernel), then removed. */
  private async append(frames: string[]): Promise<void> {
    const t = performance.now();
    if (typeof this.out === 'number') await appendFiles(frames, this.out);
    else
      for (const frame of frames)
        for await (const chunk of createReadStream(frame, { highWaterMark: READ_CHUNK }))
          await writeTo(this.out, chunk as Buffer);
    traceStep('checkpoint: frames compressed ahead appended', t, { frames: frames.length });
    // tmpfs: their memory is free again before the rest is compressed
    await Promise.all(frames.map((f) => rm(f, { force: true })));
  }

  abort(err: Error): void {
    this.failed ??= err;
    this.current?.destroy(err);
    this.current = undefined;
  }

  private async endFrame(): Promise<void> {
    const z = this.current;
    if (!z) return;
    z.end();
    await this.ended;
    this.current = undefined;
  }

  /** Resolves once zstd has exited 0 and all it gave is written on. */
  private async drain(z: Duplex): Promise<void> {
    if (typeof this.out === 'number') {
      // zstd writes the file itself; its readable side carries nothing and ends when it exited 0
      z.resume();
      await finished(z, { writable: false });
      return;
    }
    for await (const chunk of z) await writeTo(this.out, chunk as Buffer);
  }
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
