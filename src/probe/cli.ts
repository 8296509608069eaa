// `ferry probe KIND ADDR:PORT`: measures, from where it runs, the downtime a client of a server sees.
// Network namespaces are the caller's business (src/cli wires that up).
import { FerryError } from '../core/errors.ts';
import { PROBE_KINDS, type ProbeKind } from './codecs.ts';
import { Probe, type ProbeOptions } from './session.ts';
import type { ProbeResult } from './stats.ts';

export interface ProbeTarget {
  host: string;
  port: number;
}

function inputError(message: string): FerryError {
  return new FerryError('FERRY_E_INPUT_ARGS', message, { phase: 'input' });
}

/** Milliseconds between requests unless `--interval` says otherwise. */
export const DEFAULT_INTERVAL_MS = 2;

/** Parses `A.B.C.D:PORT` (IPv4 only). */
export function parseTarget(target: string): ProbeTarget {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3}):(\d{1,5})$/.exec(target.trim());
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const port = m ? Number(m[5]) : 0;
  if (!m || octets.some((o) => o > 255) || port < 1 || port > 65535)
    throw inputError(
      `invalid probe target '${target}': expected IPV4:PORT, e.g. 10.0.0.2:7000 (port 1..65535)`,
    );
  return { host: octets.join('.'), port };
}

/** Parses a decimal number within [min, max]; `what` names it in the error. */
function parseNumber(value: string, what: string, min: number, max: number, unit: string): number {
  const v = value.trim();
  const n = /^\d+(\.\d+)?$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isFinite(n) || n < min || n > max)
    throw inputError(`invalid ${what} '${value}': expected a number of ${unit} in ${min}..${max}`);
  return n;
}

/** What `ferry probe` reads of its command line (strings: parsed and range-checked here). */
export interface ProbeCliOptions {
  interval?: string;
  duration?: string;
  replyTimeout?: string;
  json?: boolean;
}

export function probeOptions(kind: string, target: string, o: ProbeCliOptions): ProbeOptions {
  if (!(PROBE_KINDS as readonly string[]).includes(kind))
    throw inputError(`unknown probe kind '${kind}': expected one of ${PROBE_KINDS.join(', ')}`);
  const { host, port } = parseTarget(target);
  const opts: ProbeOptions = {
    kind: kind as ProbeKind,
    host,
    port,
    intervalMs:
      o.interval === undefined
        ? DEFAULT_INTERVAL_MS
        : parseNumber(o.interval, 'interval', 1, 1000, 'milliseconds'),
  };
  if (o.replyTimeout !== undefined) {
    opts.replyTimeoutMs = parseNumber(o.replyTimeout, 'reply-timeout', 10, 3_600_000, 'milliseconds');
  }
  if (o.duration !== undefined)
    opts.durationMs = parseNumber(o.duration, 'duration', 0.001, 31 * 24 * 3600, 'seconds') * 1000;
  return opts;
}

export type ProbeSummary = Pick<
  ProbeResult,
  'replies' | 'errors' | 'resets' | 'lost' | 'maxGapMs' | 'p99GapMs' | 'serverValues' | 'gaps'
> & { ok: boolean; errorsDetail?: string[] };

/** What `--json` prints: ok (no errors, no resets), the counts, the gaps, and serverValues and errorsDetail
 *  when there are any. */
export function summary(r: ProbeResult): ProbeSummary {
  const out: ProbeSummary = {
    ok: r.errors === 0 && r.resets === 0,
    replies: r.replies,
    errors: r.errors,
    resets: r.resets,
    lost: r.lost,
    maxGapMs: r.maxGapMs,
    p99GapMs: r.p99GapMs,
    gaps: r.gaps,
  };
  if (r.serverValues) out.serverValues = r.serverValues;
  if (r.errorsDetail.length > 0) out.errorsDetail = r.errorsDetail;
  return out;
}

function human(r: ProbeResult): string {
  const lines = [
    `${r.kind} ${r.target} every ${r.intervalMs} ms: ${r.replies} replies to ${r.sent} requests, ` +
      `${r.errors} errors, ${r.resets} resets, ${r.lost} lost`,
    `downtime (longest gap between replies) ${r.maxGapMs} ms, p99 gap ${r.p99GapMs} ms`,
  ];
  if (r.serverValues) {
    const s = r.serverValues;
    lines.push(
      `server values ${s.first} .. ${s.last}, ${s.continuous ? 'continuous' : s.monotonic ? 'with jumps' : 'went back (server state lost?)'}`,
    );
  }
  for (const e of r.errorsDetail) lines.push(`error: ${e}`);
  for (const n of r.notes) lines.push(`note: ${n}`);
  lines.push(r.errors === 0 && r.resets === 0 ? 'ok' : 'FAILED');
  return `${lines.join('\n')}\n`;
}

/**
 * Runs a probe against TARGET until the duration (seconds) elapses or SIGINT/SIGTERM, then prints the result
 * (one JSON line with --json). process.exitCode = 1 when there were errors or resets.
 */
export async function probeCommand(kind: string, target: string, o: ProbeCliOptions): Promise<void> {
  const probe = new Probe(probeOptions(kind, target, o));
  const onSignal = (): void => {
    void probe.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let result: ProbeResult;
  try {
    await probe.start();
    if (!o.json)
      process.stderr.write(
        `probing ${kind} ${target} every ${probe.opts.intervalMs} ms` +
          `${o.duration === undefined ? ' until interrupted (Ctrl-C)' : ` for ${o.duration} s`}\n`,
      );
    result = await probe.done();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  process.stdout.write(o.json ? `${JSON.stringify(summary(result))}\n` : human(result));
  if (result.errors > 0 || result.resets > 0) process.exitCode = 1;
}
