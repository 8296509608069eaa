// Terminal output: progress bars and phase lines for a TTY, plain lines otherwise (progress at most every second),
// nothing in --json mode (--json --events streams the events themselves).
import type { MigrationEvent, MigrationReport } from '../api/types.ts';
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

export class MigrationRenderer {
  private readonly out: NodeJS.WriteStream;
  private readonly tty: boolean;
  private barShown = false;
  private readonly started = performance.now();
  private lastBytes = 0;
  private lastT = performance.now();
  private rate = 0;
  /** When the last plain progress line was written (no TTY). */
  private lastLine = Number.NEGATIVE_INFINITY;

  constructor(out: NodeJS.WriteStream = process.stderr) {
    this.out = out;
    this.tty = out.isTTY === true;
  }

  private clearBar(): void {
    if (this.barShown) {
      this.out.write('\r\x1b[2K');
      this.barShown = false;
    }
  }

  event(e: MigrationEvent): void {
    const t = ((performance.now() - this.started) / 1000).toFixed(2).padStart(6);
    if (e.type === 'phase') {
      if (e.state === 'start') return;
      this.clearBar();
      const mark = e.state === 'end' ? 'ok  ' : 'FAIL';
      this.out.write(`${t}s  ${mark} ${e.phase.padEnd(10)} ${String(e.ms ?? 0).padStart(6)} ms\n`);
    } else if (e.type === 'progress') {
      const now = performance.now();
      if (now > this.lastT) {
        const inst = ((e.bytes - this.lastBytes) / (now - this.lastT)) * 1000;
        this.rate = this.rate ? this.rate * 0.7 + inst * 0.3 : inst;
      }
      this.lastBytes = e.bytes;
      this.lastT = now;
      if (!this.tty) {
        // a log or a pipe: a plain line at most every second, and the last one
        const done = e.total !== undefined && e.bytes >= e.total;
        if (now - this.lastLine < PLAIN_PROGRESS_MS && !done) return;
        this.lastLine = now;
        this.out.write(
          `${t}s       ${e.phase.padEnd(10)} ${formatBytes(e.bytes)}${e.total ? ` / ${formatBytes(e.total)}` : ''}  ${formatBytes(this.rate)}/s\n`,
        );
        return;
      }
      const frac = e.total ? Math.min(1, e.bytes / e.total) : 0;
      const width = 30;
      const fill = Math.round(frac * width);
      const bar = `[${'#'.repeat(fill)}${'.'.repeat(width - fill)}]`;
      this.out.write(
        `\r\x1b[2K        ${e.phase} ${bar} ${formatBytes(e.bytes)}${e.total ? ` / ${formatBytes(e.total)}` : ''}  ${formatBytes(this.rate)}/s`,
      );
      this.barShown = true;
    } else if (e.type === 'info') {
      this.clearBar();
      this.out.write(`        ${e.message}\n`);
    }
  }

  finish(): void {
    this.clearBar();
  }
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
      `  freeze ${r.freezeMs} ms, total ${r.totalMs} ms, sent ${formatBytes(r.bytesSent)}${r.zeroBytesSkipped ? ` (zero pages skipped: ${formatBytes(r.zeroBytesSkipped)})` : ''}`,
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
