// Downtime probe: ONE connection to a server inside a container, a small request every intervalMs (pipelined,
// never waiting for replies), and the arrival time of every reply. Downtime is the longest gap between two
// consecutive replies. A reset, a missing or duplicated reply, or a reply that does not come within
// replyTimeoutMs is a failure (counted in errors/resets), never folded into a gap. The probe never reconnects.
//
// Protocols (servers in src/workloads/servers.ts, or redis-server):
//   tcp    sends "<seq>\n", expects "<counter> <seq>\n" in order; counter +1 per reply.
//   udp    sends datagram "<seq>", expects "<counter> <seq>"; a missing reply is `lost` (not an error);
//          ICMP errors (ECONNREFUSED: port unreachable) are errors.
//   redis  sends "INCR ferry:probe" (RESP), expects ":N\r\n" in order; N +1 per reply; "-ERR" is an error.
import dgram from 'node:dgram';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { FerryError } from '../core/errors.ts';

export type ProbeKind = 'tcp' | 'udp' | 'redis';
export const PROBE_KINDS: readonly ProbeKind[] = ['tcp', 'udp', 'redis'];

/** A request unanswered this long counts as lost, unless the caller says otherwise. */
export const DEFAULT_REPLY_TIMEOUT_MS = 10_000;

export interface ProbeOptions {
  kind: ProbeKind;
  host: string;
  port: number;
  /** Time between two requests, 1..1000 ms (fractions allowed). */
  intervalMs: number;
  /** Stop this long after the first reply (start() resolving); undefined = until stop(). */
  durationMs?: number;
  /** A request unanswered this long counts as lost (default DEFAULT_REPLY_TIMEOUT_MS). */
  replyTimeoutMs?: number;
  /** At stop, how long to wait for replies to requests already sent (default min(replyTimeoutMs, 2000)). */
  drainMs?: number;
  /** Most requests in flight; when reached, sends are skipped (default 10000). */
  maxOutstanding?: number;
}

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

const START_TIMEOUT_MS = 5000;
const MAX_DETAIL = 10;
const MAX_LINE = 1 << 20;

interface Pending {
  seq: number;
  at: number;
  timedOut: boolean;
}

interface ServerTrack {
  first: number;
  last: number;
  lastSeq: number;
  continuous: boolean;
  monotonic: boolean;
}

type Phase = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped';

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function epoch(t: number): number {
  return round3(performance.timeOrigin + t);
}

function inputError(message: string): FerryError {
  return new FerryError('FERRY_E_INPUT_ARGS', message, { phase: 'input' });
}

export class Probe {
  readonly opts: Readonly<ProbeOptions>;
  private readonly target: string;
  private readonly replyTimeoutMs: number;
  private readonly drainMs: number;
  private readonly maxOutstanding: number;

  private phase: Phase = 'idle';
  private tcp: net.Socket | undefined;
  private udp: dgram.Socket | undefined;
  private connected = false;
  private closing = false;

  private t0 = 0;
  private startedAtEpoch = 0;
  private lastSlot = -1;
  private nextSeq = 1;
  private sendTimer: NodeJS.Timeout | undefined;
  private startTimer: NodeJS.Timeout | undefined;
  private durationTimer: NodeJS.Timeout | undefined;

  // tcp/redis: requests in send order (replies come in the same order); queue[qHead..] are in flight.
  private queue: Pending[] = [];
  private qHead = 0;
  private qTimeoutScan = 0;
  // udp: requests in flight by seq (insertion order = send order), and seqs already counted lost.
  private inflight = new Map<number, number>();
  private lostSeqs = new Set<number>();
  private maxSeqReplied = 0;

  private rx = '';
  private times: number[] = [];
  private sent = 0;
  private replies = 0;
  private errors = 0;
  private resets = 0;
  private lost = 0;
  private late = 0;
  private throttled = 0;
  private errorsDetail: string[] = [];
  private notes: string[] = [];
  private sv: ServerTrack | undefined;

  private startResolve: (() => void) | undefined;
  private startReject: ((e: FerryError) => void) | undefined;
  private drainWake: (() => void) | undefined;
  private stopPromise: Promise<ProbeResult> | undefined;
  private result: ProbeResult | undefined;
  private doneResolve!: (r: ProbeResult) => void;
  private readonly donePromise: Promise<ProbeResult>;

  constructor(opts: ProbeOptions) {
    if (!PROBE_KINDS.includes(opts.kind))
      throw inputError(`unknown probe kind '${String(opts.kind)}' (expected tcp, udp or redis)`);
    if (typeof opts.host !== 'string' || opts.host === '') throw inputError('probe host is empty');
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535)
      throw inputError(`probe port ${String(opts.port)} is not an integer in 1..65535`);
    if (!Number.isFinite(opts.intervalMs) || opts.intervalMs < 1 || opts.intervalMs > 1000)
      throw inputError(`probe interval ${String(opts.intervalMs)} ms is not in 1..1000`);
    if (opts.durationMs !== undefined && !(Number.isFinite(opts.durationMs) && opts.durationMs > 0))
      throw inputError(`probe duration ${String(opts.durationMs)} ms is not a positive number`);
    const positive = (v: number | undefined, what: string): void => {
      if (v !== undefined && !(Number.isFinite(v) && v > 0))
        throw inputError(`probe ${what} ${String(v)} is not a positive number`);
    };
    positive(opts.replyTimeoutMs, 'reply timeout');
    positive(opts.drainMs, 'drain time');
    positive(opts.maxOutstanding, 'outstanding cap');
    this.opts = { ...opts };
    this.target = `${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${opts.port}`;
    this.replyTimeoutMs = opts.replyTimeoutMs ?? DEFAULT_REPLY_TIMEOUT_MS;
    this.drainMs = opts.drainMs ?? Math.min(this.replyTimeoutMs, 2000);
    this.maxOutstanding = Math.max(1, Math.floor(opts.maxOutstanding ?? 10_000));
    this.donePromise = new Promise((resolve) => {
      this.doneResolve = resolve;
    });
  }

  /** Connects and sends; resolves once the first reply arrived. Rejects (FERRY_E_HOST_UNREACHABLE) if that
   *  does not happen within 5 s, or the connection is refused or lost before it. */
  start(): Promise<void> {
    if (this.phase !== 'idle')
      return Promise.reject(new FerryError('FERRY_E_INTERNAL', 'probe already started', { phase: 'run' }));
    this.phase = 'starting';
    this.startedAtEpoch = Date.now();
    const p = new Promise<void>((resolve, reject) => {
      this.startResolve = resolve;
      this.startReject = reject;
    });
    this.startTimer = setTimeout(() => {
      this.failStart(
        this.connected
          ? `connected to ${this.opts.kind} ${this.target} but no reply within ${START_TIMEOUT_MS / 1000} s`
          : `cannot connect to ${this.opts.kind} ${this.target} within ${START_TIMEOUT_MS / 1000} s`,
      );
    }, START_TIMEOUT_MS);
    try {
      if (this.opts.kind === 'udp') this.openUdp();
      else this.openTcp();
    } catch (err) {
      this.failStart(`cannot connect to ${this.opts.kind} ${this.target}: ${(err as Error).message}`);
    }
    return p;
  }

  /** Stops sending, waits briefly for replies in flight, closes the connection; idempotent. */
  stop(): Promise<ProbeResult> {
    if (this.stopPromise) return this.stopPromise;
    if (this.phase === 'idle' || this.phase === 'starting') {
      if (this.phase === 'starting')
        this.failStart(`probe stopped before the first reply from ${this.target}`);
      else this.finish();
      this.stopPromise = this.donePromise;
      return this.stopPromise;
    }
    if (this.phase === 'stopped') {
      this.stopPromise = this.donePromise;
      return this.stopPromise;
    }
    this.stopPromise = this.gracefulStop();
    return this.stopPromise;
  }

  /** Resolves with the result once the probe stopped: after durationMs, stop(), a failed start, or a reset. */
  done(): Promise<ProbeResult> {
    return this.donePromise;
  }

  // ---- connection ----

  private openTcp(): void {
    const sock = net.connect({ host: this.opts.host, port: this.opts.port, noDelay: true });
    this.tcp = sock;
    sock.setEncoding('latin1');
    sock.on('connect', () => {
      this.connected = true;
      this.beginSending();
    });
    sock.on('data', (chunk: string) => this.onTcpData(chunk));
    sock.on('error', (err: NodeJS.ErrnoException) =>
      this.connectionLost(`socket error: ${err.code ?? err.message}`),
    );
    sock.on('end', () => this.connectionLost('connection closed by peer (FIN)'));
    sock.on('close', () => this.connectionLost('connection closed'));
  }

  private openUdp(): void {
    const sock = dgram.createSocket(net.isIPv6(this.opts.host) ? 'udp6' : 'udp4');
    this.udp = sock;
    sock.on('message', (msg: Buffer) => this.onUdpMessage(msg.toString('latin1')));
    sock.on('error', (err: NodeJS.ErrnoException) => this.onUdpError(err));
    sock.on('close', () => this.connectionLost('socket closed'));
    sock.connect(this.opts.port, this.opts.host, () => {
      this.connected = true;
      this.beginSending();
    });
  }

  private onUdpError(err: NodeJS.ErrnoException): void {
    const what =
      err.code === 'ECONNREFUSED' ? 'ECONNREFUSED (ICMP port unreachable)' : (err.code ?? err.message);
    if (this.phase === 'starting') {
      this.failStart(`cannot reach udp ${this.target}: ${what}`);
      return;
    }
    if (this.phase !== 'running' && this.phase !== 'stopping') return;
    this.error(`udp error: ${what}`);
  }

  private connectionLost(reason: string): void {
    if (this.closing) return;
    if (this.phase === 'starting') {
      this.failStart(`cannot connect to ${this.opts.kind} ${this.target}: ${reason}`);
      return;
    }
    if (this.phase === 'stopping') {
      // stop() was called and is waiting for the last replies: not a reset, but what is unanswered is lost.
      this.note(`connection lost while stopping: ${reason}`);
      this.closeSocket();
      this.drainWake?.();
      return;
    }
    if (this.phase !== 'running') return;
    this.resets++;
    this.detail(`reset after ${this.replies} replies: ${reason}`);
    this.phase = 'stopping';
    this.stopPromise = this.donePromise;
    this.closeSocket();
    this.finish();
  }

  private closeSocket(): void {
    this.closing = true;
    this.tcp?.destroy();
    if (this.udp) {
      try {
        this.udp.close();
      } catch {
        // already closed
      }
    }
  }

  private failStart(message: string): void {
    if (this.phase !== 'starting') return;
    this.phase = 'stopping';
    this.closeSocket();
    this.detail(message);
    const reject = this.startReject;
    this.startResolve = undefined;
    this.startReject = undefined;
    this.finish();
    reject?.(
      new FerryError('FERRY_E_HOST_UNREACHABLE', message, {
        phase: 'run',
        hint: 'is the server listening, and is the address reachable from this network namespace?',
        details: { kind: this.opts.kind, target: this.target },
      }),
    );
  }

  // ---- sending ----

  private beginSending(): void {
    if (this.phase !== 'starting' || this.sendTimer) return;
    this.t0 = performance.now();
    this.lastSlot = -1;
    this.tick();
  }

  private readonly tick = (): void => {
    this.sendTimer = undefined;
    if (this.phase !== 'starting' && this.phase !== 'running') return;
    const now = performance.now();
    this.checkTimeouts(now);
    const slot = Math.floor((now - this.t0) / this.opts.intervalMs);
    // One request per slot; after a stall, catch up by at most one extra (no bursts).
    const due = Math.min(slot - this.lastSlot, 2);
    for (let i = 0; i < due; i++) this.sendOne(now);
    this.lastSlot = slot;
    const next = this.t0 + (slot + 1) * this.opts.intervalMs;
    this.sendTimer = setTimeout(this.tick, Math.max(0, next - performance.now()));
  };

  private outstanding(): number {
    return this.opts.kind === 'udp' ? this.inflight.size : this.queue.length - this.qHead;
  }

  private sendOne(now: number): void {
    if (this.outstanding() >= this.maxOutstanding) {
      if (this.throttled === 0)
        this.note(`${this.maxOutstanding} requests in flight: skipping sends until replies come`);
      this.throttled++;
      return;
    }
    const seq = this.nextSeq++;
    if (this.opts.kind === 'udp') {
      const sock = this.udp;
      if (!sock) return;
      this.inflight.set(seq, now);
      this.sent++;
      sock.send(String(seq), (err) => {
        if (err) this.onUdpError(err as NodeJS.ErrnoException);
      });
      return;
    }
    const sock = this.tcp;
    if (!sock || sock.destroyed) return;
    this.queue.push({ seq, at: now, timedOut: false });
    this.sent++;
    sock.write(this.opts.kind === 'redis' ? '*2\r\n$4\r\nINCR\r\n$11\r\nferry:probe\r\n' : `${seq}\n`);
  }

  private checkTimeouts(now: number): void {
    const limit = now - this.replyTimeoutMs;
    if (this.opts.kind === 'udp') {
      for (const [seq, at] of this.inflight) {
        if (at > limit) break;
        this.inflight.delete(seq);
        this.markLost(seq);
      }
      return;
    }
    let i = Math.max(this.qTimeoutScan, this.qHead);
    for (; i < this.queue.length; i++) {
      const p = this.queue[i] as Pending;
      if (p.at > limit) break;
      p.timedOut = true;
      this.lost++;
      this.error(`request ${p.seq} unanswered for ${this.replyTimeoutMs} ms`);
    }
    this.qTimeoutScan = i;
  }

  private markLost(seq: number): void {
    this.lost++;
    if (this.lostSeqs.size < 100_000) this.lostSeqs.add(seq);
  }

  // ---- receiving ----

  private popFront(): Pending | undefined {
    if (this.qHead >= this.queue.length) return undefined;
    const p = this.queue[this.qHead++];
    if (this.qHead > 4096 && this.qHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.qHead);
      this.qTimeoutScan = Math.max(0, this.qTimeoutScan - this.qHead);
      this.qHead = 0;
    }
    return p;
  }

  private onTcpData(chunk: string): void {
    if (this.phase !== 'starting' && this.phase !== 'running' && this.phase !== 'stopping') return;
    const now = performance.now();
    this.rx += chunk;
    if (this.opts.kind === 'redis') this.parseResp(now);
    else this.parseLines(now);
    if (this.rx.length > MAX_LINE) this.protocolFailure('reply stream does not parse (no line end in 1 MiB)');
  }

  private parseLines(now: number): void {
    let pos = 0;
    for (;;) {
      const nl = this.rx.indexOf('\n', pos);
      if (nl < 0) break;
      const line = this.rx.slice(pos, nl).trim();
      pos = nl + 1;
      const m = /^(\d+) (\d+)$/.exec(line);
      if (!m) {
        this.error(`malformed reply ${JSON.stringify(line.slice(0, 40))}`);
        continue;
      }
      this.onSeqReply(Number(m[2]), Number(m[1]), now);
    }
    this.rx = this.rx.slice(pos);
  }

  private onSeqReply(seq: number, counter: number, now: number): void {
    const front = this.queue[this.qHead];
    if (!front || seq < front.seq || seq >= this.nextSeq) {
      this.error(`unexpected reply for seq ${seq} (duplicate or never sent)`);
      return;
    }
    if (seq > front.seq) {
      let missing = 0;
      while (this.qHead < this.queue.length && (this.queue[this.qHead] as Pending).seq < seq) {
        const p = this.popFront() as Pending;
        if (!p.timedOut) this.lost++;
        missing++;
      }
      this.error(`replies missing for seq ${front.seq}..${seq - 1} (${missing})`);
    }
    const p = this.popFront() as Pending;
    this.onReply(now, p.timedOut, counter, seq);
  }

  private parseResp(now: number): void {
    let pos = 0;
    for (;;) {
      const nl = this.rx.indexOf('\r\n', pos);
      if (nl < 0) break;
      const type = this.rx[pos];
      const body = this.rx.slice(pos + 1, nl);
      if (type === ':' || type === '-' || type === '+') {
        pos = nl + 2;
        const p = this.popFront();
        if (!p) {
          this.error(`unsolicited reply ${JSON.stringify(`${type}${body}`.slice(0, 60))}`);
          continue;
        }
        if (type === ':' && /^-?\d+$/.test(body)) {
          this.onReply(now, p.timedOut, Number(body), p.seq);
        } else {
          this.error(`redis replied ${JSON.stringify(`${type}${body}`.slice(0, 80))} to INCR`);
          this.onReply(now, p.timedOut, undefined, p.seq);
        }
        continue;
      }
      if (type === '$' && /^-?\d+$/.test(body)) {
        const len = Number(body);
        const end = len < 0 ? nl + 2 : nl + 2 + len + 2;
        if (end > this.rx.length) break;
        pos = end;
        const p = this.popFront();
        this.error(`redis replied a bulk string to INCR${p ? '' : ' (unsolicited)'}`);
        if (p) this.onReply(now, p.timedOut, undefined, p.seq);
        continue;
      }
      this.rx = '';
      this.protocolFailure(
        `redis reply does not parse: ${JSON.stringify(`${type ?? ''}${body}`.slice(0, 60))}`,
      );
      return;
    }
    this.rx = this.rx.slice(pos);
  }

  private onUdpMessage(text: string): void {
    if (this.phase !== 'starting' && this.phase !== 'running' && this.phase !== 'stopping') return;
    const now = performance.now();
    const m = /^(\d+) (\d+)$/.exec(text.trim());
    if (!m) {
      this.note(`malformed datagram ${JSON.stringify(text.slice(0, 40))}`);
      return;
    }
    const counter = Number(m[1]);
    const seq = Number(m[2]);
    const at = this.inflight.get(seq);
    if (at !== undefined) {
      this.inflight.delete(seq);
      this.onReply(now, false, counter, seq);
      return;
    }
    if (this.lostSeqs.delete(seq)) {
      this.onReply(now, true, counter, seq);
      return;
    }
    this.note(`duplicate or unsolicited datagram for seq ${seq}`);
  }

  private onReply(now: number, late: boolean, value: number | undefined, seq: number): void {
    this.replies++;
    this.times.push(now);
    if (seq > this.maxSeqReplied) this.maxSeqReplied = seq;
    if (late) {
      this.late++;
      this.note(`late reply for seq ${seq} (after ${this.replyTimeoutMs} ms)`);
    }
    if (value !== undefined) this.trackValue(value, seq);
    if (this.phase === 'starting') {
      this.phase = 'running';
      clearTimeout(this.startTimer);
      this.startTimer = undefined;
      const resolve = this.startResolve;
      this.startResolve = undefined;
      this.startReject = undefined;
      if (this.opts.durationMs !== undefined)
        this.durationTimer = setTimeout(() => void this.stop(), this.opts.durationMs);
      resolve?.();
    }
    if (this.drainWake && this.drained()) this.drainWake();
  }

  private trackValue(value: number, seq: number): void {
    const sv = this.sv;
    if (!sv) {
      this.sv = { first: value, last: value, lastSeq: seq, continuous: true, monotonic: true };
      return;
    }
    if (this.opts.kind === 'udp') {
      if (seq < sv.lastSeq) {
        this.note(`reordered reply: seq ${seq} after ${sv.lastSeq}`);
        return; // counters of reordered replies are not comparable
      }
      const dc = value - sv.last;
      if (dc < 1 || dc > seq - sv.lastSeq) this.discontinuity(sv, value, dc);
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

  private protocolFailure(message: string): void {
    this.error(message);
    if (this.phase === 'starting') {
      this.failStart(`${this.opts.kind} ${this.target}: ${message}`);
      return;
    }
    this.closeSocket();
    if (this.phase === 'running') {
      this.phase = 'stopping';
      this.stopPromise = this.donePromise;
    }
    this.drainWake?.();
    this.finish();
  }

  // ---- stopping ----

  /** The last request sent has been answered (udp: older missing ones are taken as lost). */
  private drained(): boolean {
    if (this.opts.kind === 'udp') return this.inflight.size === 0 || this.maxSeqReplied >= this.nextSeq - 1;
    return this.qHead >= this.queue.length;
  }

  private async gracefulStop(): Promise<ProbeResult> {
    this.phase = 'stopping';
    clearTimeout(this.sendTimer);
    this.sendTimer = undefined;
    if (!this.closing && !this.drained()) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => resolve(), this.drainMs);
        this.drainWake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.drainWake = undefined;
    }
    if (!this.closing) this.checkTimeouts(performance.now());
    this.finish();
    return this.donePromise;
  }

  private finish(): void {
    if (this.result) return;
    clearTimeout(this.sendTimer);
    clearTimeout(this.startTimer);
    clearTimeout(this.durationTimer);
    this.sendTimer = undefined;
    // Whatever is still in flight was never answered.
    let unanswered = 0;
    if (this.opts.kind === 'udp') {
      for (const seq of this.inflight.keys()) this.markLost(seq);
      unanswered = this.inflight.size;
      this.inflight.clear();
    } else {
      for (let i = this.qHead; i < this.queue.length; i++)
        if (!(this.queue[i] as Pending).timedOut) unanswered++;
      this.lost += unanswered;
      this.queue = [];
      this.qHead = 0;
    }
    if (unanswered > 0) {
      if (this.opts.kind !== 'udp' && this.resets === 0) {
        this.errors += unanswered - 1;
        this.error(
          `${unanswered} requests unanswered when the probe stopped (waited up to ${this.drainMs} ms)`,
        );
      } else {
        this.note(`${unanswered} requests unanswered when the probe stopped`);
      }
    }
    this.closeSocket();
    this.phase = 'stopped';
    const { maxGapMs, p99GapMs } = gapStats(this.times);
    const r: ProbeResult = {
      kind: this.opts.kind,
      target: this.target,
      intervalMs: this.opts.intervalMs,
      sent: this.sent,
      replies: this.replies,
      errors: this.errors,
      resets: this.resets,
      lost: this.lost,
      late: this.late,
      throttled: this.throttled,
      maxGapMs: round3(maxGapMs),
      p99GapMs: round3(p99GapMs),
      startedAt: this.startedAtEpoch,
      stoppedAt: Date.now(),
      gaps: this.topGaps(16),
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
    this.result = r;
    this.times = [];
    this.doneResolve(r);
  }

  private topGaps(n: number): ProbeGap[] {
    const top: { ms: number; i: number }[] = [];
    const t = this.times;
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

  private error(message: string): void {
    this.errors++;
    this.detail(message);
  }

  private detail(message: string): void {
    if (this.errorsDetail.length < MAX_DETAIL) this.errorsDetail.push(message);
  }

  private note(message: string): void {
    if (this.notes.length < MAX_DETAIL) this.notes.push(message);
  }
}
