// Progress updates while a phase runs (docs/events.md): at most one per interval however fast the bytes go, each
// with the rate since the one before, and always the last one. The checkpoint's figure is the image directory's
// size while CRIU writes it.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { PAGE_BYTES } from '../images/pagemap.ts';
import { PROGRESS_EVERY_MS } from './defaults.ts';
import type { MigrationEvent, MigrationPhase, ProgressUpdate } from './types.ts';

type Extra = Omit<ProgressUpdate, 'type' | 'phase' | 'bytes' | 'rate'>;

export class ProgressMeter {
  private readonly emit: (e: MigrationEvent) => void;
  private readonly now: () => number;
  private readonly phase: MigrationPhase;
  private readonly everyMs: number;
  private last: { t: number; bytes: number } | undefined;

  constructor(emit: (e: MigrationEvent) => void, now: () => number, phase: MigrationPhase, everyMs: number) {
    this.emit = emit;
    this.now = now;
    this.phase = phase;
    this.everyMs = everyMs;
  }

  /** Reports `bytes` if the interval has passed since the last report (`force`: whatever the interval). */
  update(bytes: number, extra: Extra = {}, force = false): void {
    const t = this.now();
    const last = this.last;
    if (!force && last && t - last.t < this.everyMs) return;
    const e: ProgressUpdate = { type: 'progress', phase: this.phase, bytes, ...extra };
    if (last && t > last.t && bytes >= last.bytes)
      e.rate = Math.round(((bytes - last.bytes) * 1000) / (t - last.t));
    this.last = { t, bytes };
    this.emit(e);
  }

  /** The phase's last figure: always reported. */
  finish(bytes: number, extra: Extra = {}): void {
    this.update(bytes, extra, true);
  }
}

/**
 * Post-copy's pages still on the source, from the bytes its page server's connection delivered. That connection
 * also carries CRIU's request headers, so its count runs a little ahead of the pages: none remaining is said only
 * once the page server has ended with every page delivered (`ended`).
 */
export function pagesLeft(pagesTotal: number, deliveredBytes: number, ended: boolean): number {
  if (ended || pagesTotal === 0) return 0;
  const left = Math.ceil(Math.max(0, pagesTotal * PAGE_BYTES - deliveredBytes) / PAGE_BYTES);
  return Math.min(pagesTotal, Math.max(1, left));
}

/** The bytes of the files directly in `dir` (a pre-copy parent's round directories are not this dump's). */
export async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (e.isFile())
      total += await stat(join(dir, e.name)).then(
        (s) => s.size,
        () => 0,
      );
  }
  return total;
}

/**
 * Runs the dump while reporting what CRIU has written into `dir` so far: one look per interval (the container is
 * frozen meanwhile, so no more often than that), and the final size once the dump has returned.
 */
export async function withDumpProgress<T>(
  dir: string,
  emit: (e: MigrationEvent) => void,
  now: () => number,
  dump: () => Promise<T>,
  everyMs: number = PROGRESS_EVERY_MS.checkpoint,
): Promise<T> {
  const meter = new ProgressMeter(emit, now, 'checkpoint', everyMs);
  let looking: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    looking = looking.then(async () => meter.update(await dirBytes(dir), {}, true));
  }, everyMs);
  try {
    return await dump();
  } finally {
    clearInterval(timer);
    await looking;
    meter.finish(await dirBytes(dir));
  }
}
