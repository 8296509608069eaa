// An archive file read where it lies, its large files' frames (writer.ts) decompressed by the zstd program
// straight into staged files: their bytes pass through no pipe, tar reader or write of this process. Everything
// else goes through zstd into the tar reader as before. The tar reader still reads every header and the whole
// structure (order, names, sizes, the end): where a file's data was staged, it is handed that many zero bytes
// instead, and the file's own bytes are checked where they lie, their SHA-256 read back from the staging directory
// (tmpfs) as zstd writes them, and checked against the manifest with every other file's (reader.ts).
//
// A large file's data is one or more frames (its slices, writer.ts), decompressed side by side, each into its
// place in the staged file. Frames are taken for a file's data only when each records its content's size, the
// first starts at a block boundary of the tar stream, the 512 bytes just before it are the ustar header of a
// regular file, and their sizes add up to exactly that file's: then their content is that file's data by the tar
// format's own rules, whoever wrote the archive.
import { createHash, type Hash } from 'node:crypto';
import { readSync } from 'node:fs';
import { type FileHandle, open, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { FerryError } from '../core/errors.ts';
import { traceStep } from '../core/trace.ts';
import { zstdDecompressRange, zstdDecompressRangeInto } from '../runtime/zstd.ts';
import { type Frame, zstdFrames } from './frames.ts';
import { BLOCK, fileHeader } from './tar-header.ts';

/** A file's data, staged by zstd under a name of the reader's; the tar entry `name` claims it. */
export interface StagedFrame {
  name: string;
  size: number;
  path: string;
  /** Of the staged file's bytes, read back once zstd wrote them. */
  sha256: string;
}

export interface FramedSource {
  /** The tar stream, with each staged file's data as zeroes. */
  stream: Readable;
  /** Files staged and not yet claimed by their tar entry, in archive order. */
  staged: StagedFrame[];
}

const ZEROS = Buffer.alloc(1 << 20);

/**
 * The archive in `file` (zstd) as a framed source staging into `dest`, or undefined when it has no frame of a file
 * of its own (an archive of an older ferry, or one recompressed whole): the caller reads it as one stream then.
 */
export async function framedSource(
  file: FileHandle,
  dest: string,
  maxBytes: number,
): Promise<FramedSource | undefined> {
  const frames = await zstdFrames(file);
  if (!frames?.some((f) => (f.contentSize ?? 0) > 0)) return undefined;
  const staged: StagedFrame[] = [];
  const { fd } = file;
  // zstd decompresses on one core: a large file's slices go side by side, one per core
  const parallel = Math.max(1, Math.min(availableParallelism(), 4));

  async function* tarBytes(): AsyncGenerator<Buffer> {
    let pos = 0;
    // the last 512 bytes handed on: the header in front of a frame of a file's own
    let tail = Buffer.alloc(0);
    const seen = (chunk: Buffer) => {
      pos += chunk.length;
      tail =
        chunk.length >= BLOCK
          ? Buffer.from(chunk.subarray(-BLOCK))
          : Buffer.concat([tail, chunk]).subarray(-BLOCK);
    };
    let stagedBytes = 0;
    for (let i = 0; i < frames!.length; ) {
      const h =
        frames![i]!.contentSize && pos % BLOCK === 0 && tail.length === BLOCK ? fileHeader(tail) : undefined;
      const slices = h ? slicesOf(frames!, i, h.size) : undefined;
      if (h && slices) {
        stagedBytes += h.size;
        if (stagedBytes > maxBytes)
          throw new FerryError('FERRY_E_ARCHIVE_INVALID', `the archive holds more than ${maxBytes} bytes`, {
            phase: 'input',
          });
        const path = join(dest, `.frame-${staged.length}-${i}`);
        const t = performance.now();
        const sha256 = await stageSlices(fd, slices, path, h.size, parallel);
        traceStep('restore: a large file staged by zstd', t, {
          name: h.name,
          bytes: h.size,
          frames: slices.length,
        });
        staged.push({ name: h.name.replace(/^\.\//, ''), size: h.size, path, sha256 });
        for (let left = h.size; left > 0; ) {
          const chunk = ZEROS.subarray(0, Math.min(left, ZEROS.length));
          left -= chunk.length;
          seen(chunk);
          yield chunk;
        }
        i += slices.length;
        continue;
      }
      const f = frames![i]!;
      // the frames up to the next one that may be a file's own, through one zstd
      let j = i + 1;
      while (j < frames!.length && frames![j]!.contentSize === undefined) j += 1;
      const last = frames![j - 1]!;
      const z = zstdDecompressRange({ fd, offset: f.offset, length: last.offset + last.length - f.offset });
      for await (const chunk of z) {
        seen(chunk as Buffer);
        yield chunk as Buffer;
      }
      i = j;
    }
  }
  return { stream: Readable.from(tarBytes(), { objectMode: false }), staged };
}

/** The frames from `i` on whose contents add up to exactly `size` (a large file's slices), if they do. */
function slicesOf(frames: Frame[], i: number, size: number): Frame[] | undefined {
  let sum = 0;
  let k = i;
  while (sum < size && k < frames.length && (frames[k]!.contentSize ?? 0) > 0) {
    sum += frames[k]!.contentSize!;
    k += 1;
  }
  return sum === size ? frames.slice(i, k) : undefined;
}

/**
 * zstd decompresses each slice straight into the new file at `path`, at its place (`parallel` at a time); zstd
 * checks each frame's content size and checksum, and the file must end up `size` long.
 * The file's SHA-256 is taken beside them, each slice read back from tmpfs as soon as it and those before it are
 * written: on a busy machine the hash then runs while zstd does, not after it.
 */
async function stageSlices(
  fd: number,
  slices: Frame[],
  path: string,
  size: number,
  parallel: number,
): Promise<string> {
  await (await open(path, 'wx', 0o600)).close();
  let next = 0;
  let at = 0;
  const work = slices.map((f) => {
    const job = { frame: f, at, length: f.contentSize!, ...settles() };
    at += f.contentSize!;
    return job;
  });
  let stop = false;
  const worker = async () => {
    while (next < work.length && !stop) {
      const job = work[next++]!;
      try {
        const { frame } = job;
        await zstdDecompressRangeInto(
          { fd, offset: frame.offset, length: frame.length },
          { path, at: job.at },
        );
        job.resolve();
      } catch (err) {
        stop = true;
        job.reject(err as Error);
        throw err;
      }
    }
  };
  const hashed = (async () => {
    const hash = createHash('sha256');
    const fh = await open(path, 'r');
    try {
      for (const job of work) {
        await job.done;
        await hashRange(fh.fd, job.at, job.length, hash);
      }
    } finally {
      await fh.close();
    }
    return hash.digest('hex');
  })();
  // a failed slice fails the hash too; that failure is the workers' to report
  hashed.catch(() => {});
  const workers = Array.from({ length: Math.min(parallel, work.length) }, worker);
  // every worker settles before the error, if any, goes on: no zstd is left writing into a file being removed
  const results = await Promise.allSettled(workers);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) {
    for (const job of work) job.reject(new Error('staging stopped'));
    await hashed.catch(() => {});
    throw (failed as PromiseRejectedResult).reason;
  }
  const { size: got } = await stat(path);
  if (got !== size) throw new Error(`${path} holds ${got} bytes after staging, its header says ${size}`);
  return await hashed;
}

/** A promise with its settlers (rejections are handled where it is awaited, or dropped when nobody waits). */
function settles(): { done: Promise<void>; resolve: () => void; reject: (err: Error) => void } {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const done = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  done.catch(() => {});
  return { done, resolve, reject };
}

/**
 * Hashes `length` bytes of `fd` from `at`, 1 MiB at a time into one buffer. The reads are synchronous (by hand, a
 * tenth less CPU than through the thread pool, the same wall time), with a turn of the event loop every 16 MiB.
 */
async function hashRange(fd: number, at: number, length: number, hash: Hash): Promise<void> {
  const buf = Buffer.allocUnsafe(Math.min(1 << 20, Math.max(length, 1)));
  for (let done = 0, n = 1; done < length; n++) {
    const got = readSync(fd, buf, 0, Math.min(buf.length, length - done), at + done);
    if (got === 0) throw new Error(`the staged file ends at ${at + done}, before its ${at + length} bytes`);
    hash.update(buf.subarray(0, got));
    done += got;
    if (n % 16 === 0) await new Promise((r) => setImmediate(r));
  }
}
