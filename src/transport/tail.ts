// Sending image files while CRIU still writes them. A cold dump freezes the container for the dump and the
// transfer; CRIU only ever appends to its page images, so whatever it has written can be on its way while it
// writes the rest. Each new stretch of whole pages goes as one range (ranges.ts); `finish`, once CRIU has
// exited, sends the tail of every file and returns which files travelled this way (the framed stream leaves
// them out).
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { FileRange } from './ranges.ts';

const PAGE = 4096;

export interface TailOptions {
  /** Which files to follow (default: CRIU's page images). */
  match?: RegExp;
  /** Smallest stretch worth a request while the file grows. */
  minBytes?: number;
  pollMs?: number;
}

export class GrowingFiles {
  private readonly sent = new Map<string, number>();
  private readonly dir: string;
  private readonly send: (r: FileRange) => Promise<unknown>;
  private readonly match: RegExp;
  private readonly minBytes: number;
  private readonly pollMs: number;
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();
  /** Bytes handed to `send` so far. */
  bytes = 0;

  constructor(dir: string, send: (r: FileRange) => Promise<unknown>, opts: TailOptions = {}) {
    this.dir = dir;
    this.send = send;
    this.match = opts.match ?? /^pages-\d+\.img$/;
    this.minBytes = opts.minBytes ?? 4 << 20;
    this.pollMs = opts.pollMs ?? 20;
  }

  start(): void {
    this.loop = this.run();
    this.loop.catch(() => {}); // reported by finish()
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      if (!(await this.sweep(false))) await new Promise((r) => setTimeout(r, this.pollMs));
    }
  }

  /** Sends what is new in every followed file; true when something went. */
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
      const from = this.sent.get(file) ?? 0;
      if (size < from)
        throw new Error(`${file} shrank from ${from} to ${size} bytes while it was being sent`);
      // while CRIU writes, only whole pages (a partial one may be mid-write); at the end, everything
      const to = final ? size : size - (size % PAGE);
      if (final ? this.sent.has(file) && to === from : to - from < this.minBytes) continue;
      await this.send({ file, offset: from, length: to - from, total: to });
      this.sent.set(file, to);
      this.bytes += to - from;
      any = true;
    }
    return any;
  }

  /** After the writer has exited: the rest of every file; resolves with the files sent this way. */
  async finish(): Promise<string[]> {
    this.stopped = true;
    await this.loop;
    await this.sweep(true);
    return [...this.sent.keys()];
  }

  /** Stops following (on failure); nothing more is sent. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop.catch(() => {});
  }
}
