// The probe's session: ONE connection to a server inside a container, a small request every intervalMs
// (pipelined, never waiting for replies), and the arrival time of every reply. Downtime is the longest gap between
// two consecutive replies. A reset, a missing or duplicated reply, or a reply that does not come within
// replyTimeoutMs is a failure (counted in errors/resets), never folded into a gap. The probe never reconnects:
// a reconnect would hide exactly the downtime it is there to see.
// Protocols: codecs.ts (udp: a missing reply is `lost`, not an error; ICMP errors such as ECONNREFUSED, port
// unreachable, are errors). Counting and the summary: stats.ts.
// Longer than most modules: it is one state machine (starting, running, stopping, stopped) whose transitions
// (connect, send, match a reply, time out, reset, drain) all read and move the same phase and in-flight set.
// Over 400 lines: one state machine (send loop, replies, reconnect rules) whose transitions share one in-flight state.
// Over 400 lines: one connection's whole life (open, send, match replies, stop) shares its state; split, every
// part would need all of it.
import dgram from 'node:dgram';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { FerryError } from '../core/errors.ts';
import { PROBE_KINDS, type ProbeKind, type ReplySink, STREAM_CODECS, udpCodec } from './codecs.ts';
import { type ProbeResult, ProbeStats } from './stats.ts';

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

const START_TIMEOUT_MS = 5000;
const MAX_LINE = 1 << 20;

interface Pending {
  seq: number;
  at: number;
  timedOut: boolean;
}

type Phase = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped';

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
  private readonly stats: ProbeStats;

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
    this.stats = new ProbeStats(opts.kind);
    this.donePromise = new Promise((resolve) => {
      this.doneResolve = resolve;
    });
  }

  /** Connects and sends; resolves once the first reply arrived. Rejects (FERRY_E_HOST_UNREACHABLE) if that
   *  does not happen within 5 s, or the connection is refused or lost before it. */
  /** Replies so far (a caller can watch a connection come back before it stops the probe). */
  get replies(): number {
    return this.stats.replies;
  }

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
    this.stats.error(`udp error: ${what}`);
  }

  private connectionLost(reason: string): void {
    if (this.closing) return;
    if (this.phase === 'starting') {
      this.failStart(`cannot connect to ${this.opts.kind} ${this.target}: ${reason}`);
      return;
    }
    if (this.phase === 'stopping') {
      // stop() was called and is waiting for the last replies: not a reset, but what is unanswered is lost.
      this.stats.note(`connection lost while stopping: ${reason}`);
      this.closeSocket();
      this.drainWake?.();
      return;
    }
    if (this.phase !== 'running') return;
    this.stats.resets++;
    this.stats.detail(`reset after ${this.stats.replies} replies: ${reason}`);
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
    this.stats.detail(message);
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
      if (this.stats.throttled === 0)
        this.stats.note(`${this.maxOutstanding} requests in flight: skipping sends until replies come`);
      this.stats.throttled++;
      return;
    }
    const seq = this.nextSeq++;
    if (this.opts.kind === 'udp') {
      const sock = this.udp;
      if (!sock) return;
      this.inflight.set(seq, now);
      this.stats.sent++;
      sock.send(udpCodec.request(seq), (err) => {
        if (err) this.onUdpError(err as NodeJS.ErrnoException);
      });
      return;
    }
    const sock = this.tcp;
    if (!sock || sock.destroyed) return;
    this.queue.push({ seq, at: now, timedOut: false });
    this.stats.sent++;
    sock.write(STREAM_CODECS[this.opts.kind === 'redis' ? 'redis' : 'tcp'].request(seq));
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
      this.stats.lost++;
      this.stats.error(`request ${p.seq} unanswered for ${this.replyTimeoutMs} ms`);
    }
    this.qTimeoutScan = i;
  }

  private markLost(seq: number): void {
    this.stats.lost++;
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
    this.rx = STREAM_CODECS[this.opts.kind === 'redis' ? 'redis' : 'tcp'].parse(this.rx, this.sink(now));
    if (this.rx.length > MAX_LINE) this.protocolFailure('reply stream does not parse (no line end in 1 MiB)');
  }

  /** Where the codec's replies for data that arrived at `now` go. */
  private sink(now: number): ReplySink {
    return {
      seqReply: (seq, counter) => this.onSeqReply(seq, counter, now),
      inOrderReply: (value, problem, unsolicited) => {
        const p = this.popFront();
        if (!p) {
          this.stats.error(unsolicited);
          return;
        }
        if (problem !== undefined) this.stats.error(problem);
        this.onReply(now, p.timedOut, value, p.seq);
      },
      error: (message) => this.stats.error(message),
      fail: (message) => this.protocolFailure(message),
    };
  }

  private onSeqReply(seq: number, counter: number, now: number): void {
    const front = this.queue[this.qHead];
    if (!front || seq < front.seq || seq >= this.nextSeq) {
      this.stats.error(`unexpected reply for seq ${seq} (duplicate or never sent)`);
      return;
    }
    if (seq > front.seq) {
      let missing = 0;
      while (this.qHead < this.queue.length && (this.queue[this.qHead] as Pending).seq < seq) {
        const p = this.popFront() as Pending;
        if (!p.timedOut) this.stats.lost++;
        missing++;
      }
      this.stats.error(`replies missing for seq ${front.seq}..${seq - 1} (${missing})`);
    }
    const p = this.popFront() as Pending;
    this.onReply(now, p.timedOut, counter, seq);
  }

  private onUdpMessage(text: string): void {
    if (this.phase !== 'starting' && this.phase !== 'running' && this.phase !== 'stopping') return;
    const now = performance.now();
    const reply = udpCodec.parse(text);
    if (!reply) {
      this.stats.note(`malformed datagram ${JSON.stringify(text.slice(0, 40))}`);
      return;
    }
    const { counter, seq } = reply;
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
    this.stats.note(`duplicate or unsolicited datagram for seq ${seq}`);
  }

  private onReply(now: number, late: boolean, value: number | undefined, seq: number): void {
    this.stats.reply(now);
    if (seq > this.maxSeqReplied) this.maxSeqReplied = seq;
    if (late) {
      this.stats.late++;
      this.stats.note(`late reply for seq ${seq} (after ${this.replyTimeoutMs} ms)`);
    }
    if (value !== undefined) this.stats.trackValue(value, seq);
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

  private protocolFailure(message: string): void {
    this.stats.error(message);
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
      this.stats.lost += unanswered;
      this.queue = [];
      this.qHead = 0;
    }
    if (unanswered > 0) {
      if (this.opts.kind !== 'udp' && this.stats.resets === 0) {
        this.stats.errors += unanswered - 1;
        this.stats.error(
          `${unanswered} requests unanswered when the probe stopped (waited up to ${this.drainMs} ms)`,
        );
      } else {
        this.stats.note(`${unanswered} requests unanswered when the probe stopped`);
      }
    }
    this.closeSocket();
    this.phase = 'stopped';
    const r = this.stats.summary({
      target: this.target,
      intervalMs: this.opts.intervalMs,
      startedAt: this.startedAtEpoch,
      stoppedAt: Date.now(),
    });
    this.result = r;
    this.doneResolve(r);
  }
}
