// Sending image files while CRIU still writes them. A cold dump freezes the container for the dump and the
// transfer; CRIU only ever appends to its page images, so whatever it has written can be on its way while it
// writes the rest. Each new stretch of whole pages goes as one range (ranges.ts), up to `parallel` ranges at a
// time on their own connections; `finish`, once CRIU has exited, sends the tail of every file and returns which
// files travelled this way (the framed stream leaves them out).
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { FileRange } from './ranges.ts';

const PAGE = 4096;

export interface TailOptions {
  /** Which files to follow (default: CRIU's page images). */
  match?: RegExp;
  /** Smallest stretch worth a request while the file grows. */
  minBytes?: number;
  /** Largest range in one request. */
  maxBytes?: number;
  /** Ranges in flight at once. */
  parallel?: number;
  pollMs?: number;
}

export class GrowingFiles {
  /** Per file: how far ranges have been handed out. */
  private readonly next = new Map<string, number>();
  private readonly inflight = new Set<Promise<void>>();
  private readonly dir: string;
  private readonly send: (r: FileRange) => Promise<unknown>;
  private readonly match: RegExp;
  private readonly minBytes: number;
  private readonly maxBytes: number;
  private readonly parallel: number;
  private readonly pollMs: number;
  private stopped = false;
  private error: unknown;
  private loop: Promise<void> = Promise.resolve();
  /** Ends the poll's wait at once: `finish` runs inside the freeze and must not sit out a poll interval. */
  private wake: (() => void) | undefined;
  /** Bytes sent so far (ranges completed). */
  bytes = 0;

  constructor(dir: string, send: (r: FileRange) => Promise<unknown>, opts: TailOptions = {}) {
    this.dir = dir;
    this.send = send;
    this.match = opts.match ?? /^pages-\d+\.img$/;
    this.minBytes = opts.minBytes ?? 4 << 20;
    this.maxBytes = opts.maxBytes ?? 64 << 20;
    this.parallel = Math.max(1, opts.parallel ?? 1);
    this.pollMs = opts.pollMs ?? 20;
  }

  start(): void {
    this.loop = this.run();
    this.loop.catch(() => {}); // reported by finish()
  }

  private async run(): Promise<void> {
    while (!this.stopped && this.error === undefined) {
      const dispatched = await this.sweep(false);
      if (this.inflight.size >= this.parallel) await Promise.race(this.inflight);
      else if (!dispatched) await this.nap();
    }
  }

  private nap(): Promise<void> {
    // finish (or stop) may have come while the sweep before this nap read the directory: its wake found no nap
    // to end, so a nap begun now would be sat out whole
    if (this.stopped) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, this.pollMs);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    }).finally(() => {
      this.wake = undefined;
    });
  }

  private dispatch(r: FileRange): void {
    const p = this.send(r).then(
      () => {
        this.bytes += r.length;
      },
      (err: unknown) => {
        this.error ??= err;
      },
    );
    const tracked = p.finally(() => this.inflight.delete(tracked));
    this.inflight.add(tracked);
  }

  /** Hands out what is new in every followed file, as far as the parallel limit allows; true when any went. */
  private async sweep(final: boolean): Promise<boolean> {
    let any = false;
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter((f) => this.match.test(f)).sort();
    } catch {
      return false;
    }
    for (const file of names) {
      const size = (await stat(join(this.dir, file))).size;
      let from = this.next.get(file) ?? 0;
      if (size < from)
        throw new Error(`${file} shrank from ${from} to ${size} bytes while it was being sent`);
      // while CRIU writes, only whole pages (a partial one may be mid-write); at the end, everything
      const end = final ? size : size - (size % PAGE);
      if (final && !this.next.has(file) && end === 0) {
        this.dispatch({ file, offset: 0, length: 0, total: 0 }); // an empty image still has to exist there
        this.next.set(file, 0);
        any = true;
      }
      while (end > from && (final || end - from >= this.minBytes) && this.inflight.size < this.parallel) {
        const length = Math.min(end - from, this.maxBytes);
        this.dispatch({ file, offset: from, length, total: from + length });
        from += length;
        this.next.set(file, from);
        any = true;
      }
      if (final && end > from) return true; // more to hand out once a connection frees up
    }
    return any;
  }

  /** After the writer has exited: the rest of every file; resolves with the files sent this way. */
  async finish(): Promise<string[]> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
    for (;;) {
      if (this.error !== undefined) break;
      const more = await this.sweep(true);
      if (!more && this.inflight.size === 0) break;
      if (this.inflight.size > 0) await Promise.race(this.inflight);
    }
    await Promise.all(this.inflight);
    if (this.error !== undefined) throw this.error;
    return [...this.next.keys()];
  }

  /** Stops following (on failure): nothing more is handed out; waits for what is in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop.catch(() => {});
    await Promise.all(this.inflight);
  }
}
