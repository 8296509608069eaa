// A large file's slices compressed while CRIU still writes it. In an archive the data of a page image is frames of
// its own, one per SLICE (writer.ts), each compressed from the file itself; CRIU only ever appends to its page
// images, so a slice is final once the file has grown past its end. Those slices are compressed during the dump,
// one after the other (zstd runs on every core), each into a frame file of its own beside the images, and the
// file's SHA-256 is taken of them in order as they go. The writer then appends those frames to the archive as they
// are and compresses only the rest: the archive is the same sequence of frames, written sooner (the dump and the
// compression no longer take turns).
//
// What it did is a head start, never a condition: anything that fails here is dropped (its frames removed), and the
// writer compresses that file whole, as it would without.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { finished } from 'node:stream/promises';
import { traceStep } from '../core/trace.ts';
import { zstdCompressRange } from '../runtime/zstd.ts';

/** Of one file: the frames of its first whole slices, done while it was written. */
export interface EarlyFrames {
  /** Frame files, one per slice from the file's start, in order. */
  frames: string[];
  /** How many of the file's bytes they hold (whole slices). */
  bytes: number;
  /** SHA-256 of those bytes, to be continued with the rest of the file. */
  hash: Hash;
}

export interface EarlyOptions {
  /** The slice size of the archive's frames (writer.ts SLICE; tests use less). */
  slice: number;
  /** Which files of the directory to follow (default: CRIU's page images). */
  match?: RegExp;
  pollMs?: number;
}

const READ_CHUNK = 1 << 20;

export class EarlySlices {
  private readonly dir: string;
  private readonly work: string;
  private readonly slice: number;
  private readonly match: RegExp;
  private readonly pollMs: number;
  private readonly files = new Map<string, EarlyFrames>();
  private stopped = false;
  private failed: unknown;
  private current: Duplex | undefined;
  private loop: Promise<void> = Promise.resolve();

  /** Follows `dir` (CRIU's images); the frames go into `work`, a folder of their own it makes. */
  constructor(dir: string, work: string, opts: EarlyOptions) {
    this.dir = dir;
    this.work = work;
    this.slice = opts.slice;
    this.match = opts.match ?? /^pages-\d+\.img$/;
    this.pollMs = opts.pollMs ?? 50;
  }

  /** Starts following (before the dump starts). */
  start(): void {
    this.loop = this.run();
  }

  /**
   * After the writer (CRIU) has exited: stops following, lets the slice under way finish, and hands over what was
   * done, by file name. Nothing (and no frame left behind) if anything failed.
   */
  async finish(): Promise<{ files: Map<string, EarlyFrames>; error?: Error }> {
    this.stopped = true;
    await this.loop;
    if (this.failed === undefined) return { files: this.files };
    await rm(this.work, { recursive: true, force: true });
    return { files: new Map(), error: this.failed as Error };
  }

  /** Stops at once (the dump failed): the slice under way is killed and the frames removed. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.current?.destroy(new Error('stopped'));
    await this.loop;
    await rm(this.work, { recursive: true, force: true });
  }

  private async run(): Promise<void> {
    try {
      await mkdir(this.work, { recursive: true, mode: 0o700 });
      while (!this.stopped) {
        if (!(await this.next())) await new Promise((r) => setTimeout(r, this.pollMs));
      }
    } catch (err) {
      this.failed = err;
      this.current = undefined;
    }
  }

  /** Compresses the next whole slice of a followed file, if one is there; true if it did. */
  private async next(): Promise<boolean> {
    const names = (await readdir(this.dir).catch(() => [] as string[]))
      .filter((f) => this.match.test(f))
      .sort();
    for (const name of names) {
      const path = join(this.dir, name);
      const { size } = await stat(path);
      let f = this.files.get(name);
      if (size < (f?.bytes ?? 0)) throw new Error(`${path} shrank while CRIU wrote it`);
      if (size - (f?.bytes ?? 0) < this.slice) continue;
      if (!f) {
        f = { frames: [], bytes: 0, hash: createHash('sha256') };
        this.files.set(name, f);
      }
      await this.compress(path, name, f);
      return true;
    }
    return false;
  }

  private async compress(path: string, name: string, f: EarlyFrames): Promise<void> {
    const t = performance.now();
    const offset = f.bytes;
    const length = this.slice;
    const frame = join(this.work, `${name}.${f.frames.length}.zst`);
    const [src, dest] = await Promise.all([open(path, 'r'), open(frame, 'wx', 0o600)]);
    try {
      const z = zstdCompressRange({ fd: src.fd, offset, length }, dest.fd);
      this.current = z;
      z.resume();
      // the slice's bytes are hashed beside zstd (both read the page cache), in the file's order
      const hashed = (async () => {
        let seen = 0;
        for await (const chunk of createReadStream(path, {
          start: offset,
          end: offset + length - 1,
          highWaterMark: READ_CHUNK,
        })) {
          f.hash.update(chunk as Buffer);
          seen += (chunk as Buffer).length;
        }
        if (seen !== length) throw new Error(`${path} ended inside a slice it had grown past`);
      })();
      const [zipped, read] = await Promise.allSettled([finished(z, { writable: false }), hashed]);
      this.current = undefined;
      for (const r of [zipped, read]) if (r.status === 'rejected') throw r.reason;
    } finally {
      await Promise.all([src.close(), dest.close()]);
    }
    f.frames.push(frame);
    f.bytes += length;
    traceStep('checkpoint: a slice compressed while CRIU writes', t, { name, offset, bytes: length });
  }
}
