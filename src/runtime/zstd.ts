// The zstd program as a stream filter, for checkpoint archives. Node's own zstd (node:zlib) runs one stream on one
// thread and at about two thirds of the program's speed; the program compresses on every core (-T0), decompresses
// faster, and works in a process of its own, beside the event loop that hashes, tars and sends.
//
// The filter's output ends only once the program has exited 0: zstd writes what it has before it reports a damaged
// or cut frame, and a reader that saw a clean end first would take a cut archive for a whole one.
import { type ChildProcess, spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
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

  /**
   * `input`: a file descriptor zstd reads by itself (the writable side then takes nothing); `output`: one it writes
   * into itself (the readable side then gives nothing, and ends once zstd has exited 0).
   */
  constructor(args: string[], what: string, fds: { input?: number; output?: number } = {}) {
    super({ readableHighWaterMark: CHUNK, writableHighWaterMark: CHUNK });
    this.what = what;
    this.child = spawn('zstd', args, { stdio: [fds.input ?? 'pipe', fds.output ?? 'pipe', 'pipe'] });
    const { child } = this;
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
    child.on('close', (code, signal) => {
      traceLine(
        { code, argv: ['zstd', ...args] },
        this.started,
        Math.round(performance.now() - this.started),
      );
      if (code === 0) this.push(null);
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
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
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
