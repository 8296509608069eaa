// What a probe run observed: counts, the arrival time of every reply, the server's counter, the first errors
// and notes; and the summary made of them (the longest gaps with wall-clock times, p99). The session
// (session.ts) decides what counts as what; this module only keeps and sums up.
import { performance } from 'node:perf_hooks';
import type { ProbeKind } from './codecs.ts';

/** A gap between two consecutive replies; from/to are wall-clock epoch milliseconds (sub-ms precision). */
export interface ProbeGap {
  ms: number;
  from: number;
  to: number;
}

export interface ProbeResult {
  kind: ProbeKind;
  target: string;
  intervalMs: number;
  /** Requests sent. */
  sent: number;
  /** Replies received (including late ones). */
  replies: number;
  /** Failures other than resets: missing/duplicate/malformed/error replies, requests unanswered in time (tcp,
   *  redis), ICMP errors (udp). */
  errors: number;
  /** The connection was closed or reset by the other side (or the network) before stop(). */
  resets: number;
  /** Requests never answered within replyTimeoutMs, or still unanswered when the probe stopped. */
  lost: number;
  /** Replies that came after their request had been counted lost. */
  late: number;
  /** Sends skipped because maxOutstanding requests were in flight. */
  throttled: number;
  maxGapMs: number;
  p99GapMs: number;
  /** Wall-clock epoch ms of the first and last reply. */
  firstReplyAt?: number;
  lastReplyAt?: number;
  /** Wall-clock epoch ms when start() was called and when the probe stopped. */
  startedAt: number;
  stoppedAt: number;
  /** The longest gaps (up to 16), longest first, with wall-clock times to line up with migration phases. */
  gaps: ProbeGap[];
  /** The first 10 errors and resets, in order. */
  errorsDetail: string[];
  /** The first 10 observations that are not errors (late or reordered replies, counter jumps, ...). */
  notes: string[];
  /** The server's counter (tcp, udp) or INCR value (redis) over the run. continuous: it always went up by
   *  exactly 1 per reply (udp: by at most the number of requests in between); monotonic: it never went back. */
  serverValues?: { first: number; last: number; continuous: boolean; monotonic: boolean };
}

/** Longest and 99th-percentile (nearest rank) gap between consecutive times (ms). Fewer than 2 times: zeros. */
export function gapStats(times: number[]): { maxGapMs: number; p99GapMs: number } {
  if (times.length < 2) return { maxGapMs: 0, p99GapMs: 0 };
  let sorted = times;
  for (let i = 1; i < times.length; i++) {
    if ((times[i] as number) < (times[i - 1] as number)) {
      sorted = [...times].sort((a, b) => a - b);
      break;
    }
  }
  const gaps = new Float64Array(sorted.length - 1);
  for (let i = 1; i < sorted.length; i++) gaps[i - 1] = (sorted[i] as number) - (sorted[i - 1] as number);
  gaps.sort();
  const rank = Math.max(1, Math.ceil(0.99 * gaps.length));
  return { maxGapMs: gaps[gaps.length - 1] as number, p99GapMs: gaps[rank - 1] as number };
}

/** The n longest gaps between consecutive times (performance.now() ms), longest first, in wall-clock time. */
export function topGaps(t: number[], n: number): ProbeGap[] {
  const top: { ms: number; i: number }[] = [];
  for (let i = 1; i < t.length; i++) {
    const ms = (t[i] as number) - (t[i - 1] as number);
    if (top.length === n && ms <= (top[n - 1] as { ms: number }).ms) continue;
    let j = top.length;
    while (j > 0 && (top[j - 1] as { ms: number }).ms < ms) j--;
    top.splice(j, 0, { ms, i });
    if (top.length > n) top.pop();
  }
  return top.map(({ ms, i }) => ({
    ms: round3(ms),
    from: epoch(t[i - 1] as number),
    to: epoch(t[i] as number),
  }));
}

const MAX_DETAIL = 10;
const TOP_GAPS = 16;

interface ServerTrack {
  first: number;
  last: number;
  lastSeq: number;
  /** udp: replies that arrived out of order since `last` was taken; the server counted their requests too. */
  skipped: number;
  continuous: boolean;
  monotonic: boolean;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** performance.now() time -> wall-clock epoch ms. */
function epoch(t: number): number {
  return round3(performance.timeOrigin + t);
}

/** The run's counters and observations. */
export class ProbeStats {
  sent = 0;
  replies = 0;
  errors = 0;
  resets = 0;
  lost = 0;
  late = 0;
  throttled = 0;
  private readonly kind: ProbeKind;
  private times: number[] = [];
  private readonly errorsDetail: string[] = [];
  private readonly notes: string[] = [];
  private sv: ServerTrack | undefined;

  constructor(kind: ProbeKind) {
    this.kind = kind;
  }

  /** A reply arrived at `now` (performance.now()). */
  reply(now: number): void {
    this.replies++;
    this.times.push(now);
  }

  error(message: string): void {
    this.errors++;
    this.detail(message);
  }

  /** An entry in errorsDetail without counting an error (resets, a failed start). */
  detail(message: string): void {
    if (this.errorsDetail.length < MAX_DETAIL) this.errorsDetail.push(message);
  }

  note(message: string): void {
    if (this.notes.length < MAX_DETAIL) this.notes.push(message);
  }

  /** The server's counter (or INCR value) in the reply to request `seq`. */
  trackValue(value: number, seq: number): void {
    const sv = this.sv;
    if (!sv) {
      this.sv = { first: value, last: value, lastSeq: seq, skipped: 0, continuous: true, monotonic: true };
      return;
    }
    if (this.kind === 'udp') {
      if (seq < sv.lastSeq) {
        this.note(`reordered reply: seq ${seq} after ${sv.lastSeq}`);
        // Its counter is not comparable with `last`, but the server counted its request: the next in-order
        // reply may be that much further on (a move can reorder datagrams held during the freeze).
        sv.skipped++;
        return;
      }
      const dc = value - sv.last;
      if (dc < 1 || dc > seq - sv.lastSeq + sv.skipped) this.discontinuity(sv, value, dc);
      sv.skipped = 0;
    } else if (value !== sv.last + 1) {
      this.discontinuity(sv, value, value - sv.last);
    }
    sv.last = value;
    sv.lastSeq = seq;
  }

  private discontinuity(sv: ServerTrack, value: number, delta: number): void {
    sv.continuous = false;
    if (delta < 1) sv.monotonic = false;
    this.note(`server value went from ${sv.last} to ${value} (${delta >= 0 ? '+' : ''}${delta})`);
  }

  /** The result of the run (once: the reply times are let go). */
  summary(run: { target: string; intervalMs: number; startedAt: number; stoppedAt: number }): ProbeResult {
    const { maxGapMs, p99GapMs } = gapStats(this.times);
    const r: ProbeResult = {
      kind: this.kind,
      target: run.target,
      intervalMs: run.intervalMs,
      sent: this.sent,
      replies: this.replies,
      errors: this.errors,
      resets: this.resets,
      lost: this.lost,
      late: this.late,
      throttled: this.throttled,
      maxGapMs: round3(maxGapMs),
      p99GapMs: round3(p99GapMs),
      startedAt: run.startedAt,
      stoppedAt: run.stoppedAt,
      gaps: topGaps(this.times, TOP_GAPS),
      errorsDetail: this.errorsDetail,
      notes: this.notes,
    };
    const first = this.times[0];
    const last = this.times[this.times.length - 1];
    if (first !== undefined) r.firstReplyAt = epoch(first);
    if (last !== undefined) r.lastReplyAt = epoch(last);
    if (this.sv) {
      const { first: f, last: l, continuous, monotonic } = this.sv;
      r.serverValues = { first: f, last: l, continuous, monotonic };
    }
    this.times = [];
    return r;
  }
}
