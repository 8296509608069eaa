// Terminal output: progress bars and phase lines for a TTY, plain lines otherwise (progress at most every second),
// nothing in --json mode (--json --events streams the events themselves, docs/events.md).
import type { MigrationEvent, MigrationReport, ProgressUpdate } from '../api/types.ts';
import { table } from '../core/table.ts';

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 && i > 0 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** How often a plain progress line is written when the output is not a terminal. */
const PLAIN_PROGRESS_MS = 1000;
const BAR_WIDTH = 30;

/** Where the renderer writes: a terminal gets a bar redrawn in place, anything else plain lines. */
export interface RenderTarget {
  write(s: string): unknown;
  isTTY?: boolean;
}

/** Is this the phase's last figure (it must be shown even inside the plain lines' second)? */
function isLast(e: ProgressUpdate): boolean {
  if (e.phase === 'pages') return e.pagesRemaining === 0;
  return e.total !== undefined && e.bytes >= e.total;
}

/** The figures of one progress update, without the bar: what a plain line and the bar's text both say. */
export function progressText(e: ProgressUpdate, rate: number | undefined): string {
  const speed = rate !== undefined && rate > 0 ? `  ${formatBytes(rate)}/s` : '';
  const of = e.total !== undefined ? ` / ${formatBytes(e.total)}` : '';
  switch (e.phase) {
    case 'checkpoint':
      return `${formatBytes(e.bytes)} written${speed}`;
    case 'rounds':
      return `round ${e.round ?? '?'}: ${formatBytes(e.bytes)}${speed}`;
    case 'pages':
      return e.pagesRemaining !== undefined && e.pagesTotal !== undefined
        ? `${e.pagesRemaining} of ${e.pagesTotal} pages remaining (${formatBytes(e.bytes)}${of} arrived)${speed}`
        : `${formatBytes(e.bytes)}${of} arrived${speed}`;
    default:
      return `${formatBytes(e.bytes)}${of}${speed}`;
  }
}

/** How much of the phase is done, 0..1, when it has a total. */
function fraction(e: ProgressUpdate): number | undefined {
  if (e.phase === 'pages' && e.pagesTotal !== undefined && e.pagesRemaining !== undefined)
    return e.pagesTotal === 0 ? 1 : 1 - e.pagesRemaining / e.pagesTotal;
  return e.total ? Math.min(1, e.bytes / e.total) : undefined;
}

export class MigrationRenderer {
  private readonly out: RenderTarget;
  private readonly tty: boolean;
  private readonly now: () => number;
  private barShown = false;
  private readonly started: number;
  /** The last update seen, for a rate when the source sent none. */
  private last: { phase: string; bytes: number; t: number } | undefined;
  private rate: number | undefined;
  /** When the last plain progress line was written (no TTY), and for which phase. */
  private lastLine = Number.NEGATIVE_INFINITY;
  private lastLinePhase: string | undefined;
  private lastLineBytes: number | undefined;
  /** The newest figure the second's limit held back (no TTY): shown when its phase ends. */
  private heldBack: { phase: string; line: string } | undefined;

  constructor(out: RenderTarget = process.stderr, opts: { now?: () => number } = {}) {
    this.out = out;
    this.tty = out.isTTY === true;
    this.now = opts.now ?? (() => performance.now());
    this.started = this.now();
  }

  private clearBar(): void {
    if (this.barShown) {
      this.out.write('\r\x1b[2K');
      this.barShown = false;
    }
  }

  event(e: MigrationEvent): void {
    const t = ((this.now() - this.started) / 1000).toFixed(2).padStart(6);
    if (e.type === 'phase') {
      if (e.state === 'start') return;
      this.clearBar();
      // the phase's last figure, if the limit held it back
      if (this.heldBack?.phase === e.phase) this.out.write(this.heldBack.line);
      this.heldBack = undefined;
      const mark = e.state === 'end' ? 'ok  ' : 'FAIL';
      this.out.write(`${t}s  ${mark} ${e.phase.padEnd(10)} ${String(e.ms ?? 0).padStart(6)} ms\n`);
    } else if (e.type === 'progress') {
      this.progress(e, t);
    } else if (e.type === 'info') {
      this.clearBar();
      this.out.write(`        ${e.message}\n`);
    }
  }

  private progress(e: ProgressUpdate, t: string): void {
    const now = this.now();
    const prev = this.last;
    if (!prev || prev.phase !== e.phase) this.rate = undefined;
    // the source's own rate when it sent one (over its interval, or a whole pre-copy round); otherwise measured
    // here between updates, smoothed
    if (e.rate !== undefined) this.rate = e.rate;
    else if (prev && prev.phase === e.phase && now > prev.t && e.bytes >= prev.bytes) {
      const inst = ((e.bytes - prev.bytes) * 1000) / (now - prev.t);
      this.rate = this.rate === undefined ? inst : this.rate * 0.7 + inst * 0.3;
    }
    this.last = { phase: e.phase, bytes: e.bytes, t: now };
    if (!this.tty) {
      // a log or a pipe: a plain line at most every second, a new phase's first and each phase's last
      const fresh = this.lastLinePhase !== e.phase;
      const line = `${t}s       ${e.phase.padEnd(10)} ${progressText(e, this.rate)}\n`;
      if (!fresh && e.bytes === this.lastLineBytes && e.round === undefined) return; // nothing new to say
      if (!fresh && now - this.lastLine < PLAIN_PROGRESS_MS && !isLast(e)) {
        this.heldBack = { phase: e.phase, line };
        return;
      }
      this.heldBack = undefined;
      this.lastLine = now;
      this.lastLinePhase = e.phase;
      this.lastLineBytes = e.bytes;
      this.out.write(line);
      return;
    }
    const frac = fraction(e);
    let bar = '';
    if (frac !== undefined) {
      const fill = Math.round(frac * BAR_WIDTH);
      bar = ` [${'#'.repeat(fill)}${'.'.repeat(BAR_WIDTH - fill)}]`;
    }
    this.out.write(`\r\x1b[2K        ${e.phase}${bar} ${progressText(e, this.rate)}`);
    this.barShown = true;
  }

  finish(): void {
    this.clearBar();
  }
}

/**
 * How `ferry migrate` shows a migration's events: `--json --events`, each as one NDJSON line on stdout (the
 * report's `result` line ends the stream); `--json` alone, nothing until the report; otherwise the renderer.
 */
export function eventPrinter(
  mode: { json?: boolean; events?: boolean },
  io: { stdout: RenderTarget; stderr: RenderTarget; now?: () => number },
): { event(e: MigrationEvent): void; finish(): void } {
  if (mode.json && mode.events)
    return { event: (e) => io.stdout.write(`${JSON.stringify(e)}\n`), finish: () => {} };
  if (mode.json) return { event: () => {}, finish: () => {} };
  const r = new MigrationRenderer(io.stderr, io.now ? { now: io.now } : {});
  return { event: (e) => r.event(e), finish: () => r.finish() };
}

export function reportText(r: MigrationReport): string {
  const lines: string[] = [];
  const head = r.ok
    ? `migrated ${r.container}: ${r.from} -> ${r.to} (${r.strategy})`
    : `migration of ${r.container} ${r.from} -> ${r.to} FAILED`;
  lines.push(head);
  if (r.strategyReason && r.strategyReason !== 'requested') lines.push(`  strategy: ${r.strategyReason}`);
  const rows = [['phase', 'ms']];
  for (const p of r.phases) rows.push([p.name, String(p.ms)]);
  lines.push(
    table(rows)
      .split('\n')
      .map((l) => `  ${l}`)
      .join('\n'),
  );
  if (r.ok) {
    lines.push(
      `  freeze ${r.freezeMs} ms${r.predictedFreezeMs !== undefined ? ` (predicted ${r.predictedFreezeMs} ms)` : ''}, total ${r.totalMs} ms, sent ${formatBytes(r.bytesSent)}${r.bytesUncompressed !== undefined ? ` (zstd, ${formatBytes(r.bytesUncompressed)} uncompressed)` : ''}${r.zeroBytesSkipped ? ` (zero pages skipped: ${formatBytes(r.zeroBytesSkipped)})` : ''}`,
    );
    const d = r.criu.dump;
    const s = r.criu.restore;
    if (d || s) {
      const parts: string[] = [];
      if (d?.frozenTimeUs !== undefined) parts.push(`frozen ${(d.frozenTimeUs / 1000).toFixed(1)} ms`);
      if (d?.memdumpTimeUs !== undefined) parts.push(`memdump ${(d.memdumpTimeUs / 1000).toFixed(1)} ms`);
      if (d?.pagesWritten !== undefined) parts.push(`${d.pagesWritten} pages written`);
      if (s?.restoreTimeUs !== undefined) parts.push(`restore ${(s.restoreTimeUs / 1000).toFixed(1)} ms`);
      lines.push(`  criu: ${parts.join(', ')}`);
    }
    if (r.postcopy)
      lines.push(
        `  post-copy window ${r.postcopy.lastPageMs} ms (restore to last page)${r.postcopy.bytes !== undefined && r.postcopy.rate !== undefined ? `: ${formatBytes(r.postcopy.bytes)} at ${formatBytes(r.postcopy.rate)}/s` : ''}`,
      );
    if (r.sourceHeldBytes)
      lines.push(`  source held ${formatBytes(r.sourceHeldBytes)} frozen until the commit (its rollback)`);
  }
  if (r.rollback) {
    lines.push(
      `  rollback${r.rollback.action ? ` (${r.rollback.action})` : ''}: source ${r.rollback.sourceRunning ? 'running' : 'NOT running'}, destination ${r.rollback.destinationCleaned ? 'cleaned' : 'NOT cleaned'}${r.rollback.note ? ` (${r.rollback.note})` : ''}`,
    );
  }
  return lines.join('\n');
}
