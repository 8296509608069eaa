// The zstd program as a stream filter, for checkpoint archives. Node's own zstd (node:zlib) runs one stream on one
// thread and at about two thirds of the program's speed; the program compresses on every core (-T0), decompresses
// faster, and works in a process of its own, beside the event loop that hashes, tars and sends.
//
// The filter's output ends only once the program has exited 0: zstd writes what it has before it reports a damaged
// or cut frame, and a reader that saw a clean end first would take a cut archive for a whole one.
//
// zstd reads a file or writes one itself where it can (a page image compressed from its path, a frame decompressed
// straight into a staged file): those bytes then never pass through Node. A byte range of a file (one frame of an
// archive) reaches it through dd, which reads just that range: zstd itself reads its input to the end.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { constants } from 'node:fs';
import { access, open } from 'node:fs/promises';
import { join } from 'node:path';
import { Duplex, type Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { FerryError } from '../core/errors.ts';
import { traceLine } from '../core/trace.ts';

/**
 * Level 1: on page data (text, heap, zeroes) it compresses as tightly as level 3 or tighter at a third of the time;
 * levels below 1 stop entropy-coding literals and double the size of text.
 */
export const ZSTD_LEVEL = 1;

/** Chunks of 1 MiB through the filter: fewer round trips through the event loop per gigabyte. */
const CHUNK = 1 << 20;

/** How much of zstd's standard error an error message keeps. */
const STDERR_KEEP = 2000;

class ZstdFilter extends Duplex {
  private readonly child: ChildProcess;
  private readonly started = performance.now();
  private readonly what: string;
  private stderr = '';
  /** dd feeding zstd a byte range: its exit status counts too (a failed read would look like a short frame). */
  private readonly feeder: ChildProcess | undefined;

  /**
   * `input`: a file descriptor zstd reads by itself, or a range of one that dd reads for it, or 'ignore' (zstd reads
   * the file its arguments name); the writable side then takes nothing. `output`: a file descriptor zstd writes into
   * itself (the readable side then gives nothing, and ends once zstd has exited 0).
   */
  constructor(
    args: string[],
    what: string,
    fds: { input?: number | 'ignore' | FileRange; output?: number | undefined } = {},
  ) {
    super({ readableHighWaterMark: CHUNK, writableHighWaterMark: CHUNK });
    this.what = what;
    let input: number | 'ignore' | 'pipe' | Readable = 'pipe';
    if (typeof fds.input === 'object') {
      const { fd, offset, length } = fds.input;
      // /proc/self/fd/0 opens the file anew: dd's seek leaves the caller's descriptor where it was
      this.feeder = spawn(
        'dd',
        [
          'if=/proc/self/fd/0',
          'iflag=skip_bytes,count_bytes',
          `skip=${offset}`,
          `count=${length}`,
          'bs=1M',
          'status=none',
        ],
        { stdio: [fd, 'pipe', 'pipe'] },
      );
      input = this.feeder.stdout!;
    } else if (fds.input !== undefined) input = fds.input;
    this.child = spawn('zstd', args, { stdio: [input, fds.output ?? 'pipe', 'pipe'] });
    const { child, feeder } = this;
    // zstd holds the pipe's reading end now; this process's copy is closed before the event loop could read from it
    feeder?.stdout?.destroy();
    let feederExit: Promise<string | undefined> = Promise.resolve(undefined);
    if (feeder) {
      let err = '';
      feeder.stderr!.setEncoding('utf8').on('data', (d: string) => {
        if (err.length < STDERR_KEEP) err += d;
      });
      feederExit = new Promise((resolve) => {
        feeder.on('error', (e) => resolve(`cannot run dd: ${e.message}`));
        feeder.on('close', (code, signal) =>
          resolve(
            code === 0
              ? undefined
              : `dd failed (${signal ? `killed by ${signal}` : `exit status ${code}`})${err.trim() ? `: ${err.trim()}` : ''}`,
          ),
        );
      });
    }
    const stdout = child.stdout;
    stdout?.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) stdout.pause();
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      if (this.stderr.length < STDERR_KEEP) this.stderr += d;
    });
    // a zstd that died mid-stream: its stdin fails with EPIPE; 'close' below says why
    child.stdin?.on('error', () => {});
    child.on('error', (err) => {
      this.destroy(
        new FerryError('FERRY_E_CAPABILITY', `cannot run zstd: ${err.message}`, {
          hint: 'install zstd (Debian: apt-get install zstd; scripts/setup.sh does)',
          cause: err,
        }),
      );
    });
    // every byte of stdout has been pushed by now
    child.on('close', async (code, signal) => {
      traceLine(
        { code, argv: ['zstd', ...args] },
        this.started,
        Math.round(performance.now() - this.started),
      );
      const fed = code === 0 ? await feederExit : undefined;
      if (fed) this.destroy(new Error(`zstd (${this.what}): ${fed}`));
      else if (code === 0) this.push(null);
      else
        this.destroy(
          new Error(
            `zstd (${this.what}) failed (${signal ? `killed by ${signal}` : `exit status ${code}`})` +
              (this.stderr.trim() ? `: ${this.stderr.trim()}` : ''),
          ),
        );
    });
  }

  override _read(): void {
    this.child.stdout?.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const { stdin } = this.child;
    if (!stdin) cb(new Error('zstd reads a file here, not what is written to it'));
    else if (stdin.write(chunk)) cb();
    else stdin.once('drain', () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.child.stdin) this.child.stdin.end(() => cb());
    else cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    for (const c of [this.child, this.feeder])
      if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    cb(err);
  }
}

/** Refuses with FERRY_E_CAPABILITY unless the zstd program is on PATH (asked before a container is frozen). */
export async function requireZstd(host: string): Promise<void> {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (!dir) continue;
    try {
      await access(join(dir, 'zstd'), constants.X_OK);
      return;
    } catch {
      // not in this one
    }
  }
  throw new FerryError('FERRY_E_CAPABILITY', `the zstd program is not installed on ${host}`, {
    hint: 'install zstd (Debian: apt-get install zstd; scripts/setup.sh does), or checkpoint with --compress none',
  });
}

/** Compresses at `level` on every core, with a content checksum (a flipped byte anywhere fails decompression). */
export function zstdCompress(level = ZSTD_LEVEL): Duplex {
  return new ZstdFilter(['-q', '-c', `-${level}`, '-T0', '--check'], 'compress');
}

/**
 * As zstdCompress, zstd writing into the open file `fd` itself, from the descriptor's offset: no compressed byte
 * passes through Node. The filter's readable side carries nothing and ends once zstd has exited 0 (every byte
 * written; a failed write, such as a full disk, is a non-zero exit and fails the stream with zstd's message).
 */
export function zstdCompressInto(fd: number, level = ZSTD_LEVEL): Duplex {
  return new ZstdFilter(['-q', '-c', `-${level}`, '-T0', '--check'], 'compress', { output: fd });
}

/** A byte range of an open file. */
export interface FileRange {
  fd: number;
  offset: number;
  length: number;
}

/**
 * zstd compresses `range`, which dd reads for it, into one frame that records the range's length, written into the
 * open file `output` (from the descriptor's offset) or, without one, given on the readable side.
 */
export function zstdCompressRange(range: FileRange, output?: number, level = ZSTD_LEVEL): Duplex {
  const z = new ZstdFilter(
    ['-q', '-c', `-${level}`, '-T0', '--check', `--stream-size=${range.length}`],
    'compress',
    { input: range, output },
  );
  z.end();
  return z;
}

/** Decompresses the frames in `range` (whole frames: a cut one fails), which dd reads for it. */
export function zstdDecompressRange(range: FileRange): Duplex {
  const z = new ZstdFilter(['-q', '-d', '-c'], 'decompress', { input: range });
  z.end();
  return z;
}

/**
 * Decompresses the frames in `range` into the existing file `out.path` from byte `out.at` on, zstd writing it itself
 * (calls for different places may run side by side). The file is opened anew, at offset 0, and dd moves that
 * descriptor's offset forward to `at` (it seeks its standard output, the same open file, and copies nothing): Node
 * has no lseek.
 */
export async function zstdDecompressRangeInto(
  range: FileRange,
  out: { path: string; at: number },
): Promise<void> {
  const fh = await open(out.path, 'r+');
  try {
    if (out.at > 0) {
      const seek = spawn(
        'dd',
        ['if=/dev/null', 'count=0', `seek=${out.at}`, 'oflag=seek_bytes', 'conv=notrunc', 'status=none'],
        { stdio: ['ignore', fh.fd, 'pipe'] },
      );
      let err = '';
      seek.stderr?.setEncoding('utf8').on('data', (d: string) => {
        err += d;
      });
      const [code] = (await once(seek, 'close')) as [number | null];
      if (code !== 0) throw new Error(`dd could not seek to ${out.at} (exit status ${code}): ${err.trim()}`);
    }
    const z = new ZstdFilter(['-q', '-d', '-c'], 'decompress', { input: range, output: fh.fd });
    z.end();
    z.resume();
    await finished(z, { writable: false });
  } finally {
    await fh.close();
  }
}

/**
 * Decompresses one or more frames, checking each frame's content checksum; a cut, damaged or trailing-garbage
 * input fails the stream.
 */
export function zstdDecompress(): Duplex {
  return new ZstdFilter(['-q', '-d', '-c'], 'decompress');
}

/** As zstdDecompress, zstd reading the open file `fd` itself from its start: no byte of it passes through Node. */
export function zstdDecompressFile(fd: number): Duplex {
  const z = new ZstdFilter(['-q', '-d', '-c'], 'decompress', { input: fd });
  z.end();
  return z;
}
