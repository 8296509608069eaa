// The agent's heartbeat to the controller: its capacity and per-container load, a full report every few beats
// and only what changed in between.

import type { ControllerClient } from '../api/controller-client.ts';
import { statDiff } from '../api/heartbeat.ts';
import type { ContainerStat, Endpoint, HeartbeatBody } from '../api/types.ts';
import type { Logger } from '../core/log.ts';
import type { ContainerHost } from '../host/containers.ts';
import { cpuPercent, cpuUsageNs, memoryLimit, memoryUsage } from '../runtime/cgroups.ts';

export interface HeartbeatConfig {
  intervalMs: number;
  /** Every Nth beat carries every container; the others only what changed beyond the deltas. */
  fullEvery: number;
  cpuDeltaPercent: number;
  memoryDeltaBytes: number;
  capacity: { cores: number; memoryBytes: number };
}

export class Heartbeat {
  private readonly host: ContainerHost;
  private readonly client: ControllerClient;
  private readonly cfg: HeartbeatConfig;
  private readonly self: Endpoint;
  private readonly log: Logger;
  private timer: NodeJS.Timeout | undefined;
  private seq = 0;
  private forceFull = true;
  private readonly samples = new Map<string, { cpuNs: number; at: number }>();
  private readonly sent = new Map<string, ContainerStat>();
  /** The beat in flight: beats run one after the other (each diffs against what the one before sent). */
  private running: Promise<void> = Promise.resolve();

  constructor(deps: {
    host: ContainerHost;
    client: ControllerClient;
    cfg: HeartbeatConfig;
    self: Endpoint;
    log: Logger;
  }) {
    this.host = deps.host;
    this.client = deps.client;
    this.cfg = deps.cfg;
    this.self = deps.self;
    this.log = deps.log;
  }

  start(): void {
    const tick = async () => {
      await this.beat().catch((err: Error & { code?: string }) => {
        this.forceFull = true;
        // a controller that refuses this agent (its name taken, its certificate) is a misconfiguration to fix,
        // not a passing network failure
        const refused =
          err.code === 'FERRY_E_HOST_DUPLICATE' || err.code?.startsWith('FERRY_E_AUTH') === true;
        if (refused)
          this.log.error({ err: err.message, code: err.code }, 'the controller refuses this agent');
        else this.log.debug({ err: err.message }, 'heartbeat not delivered');
      });
      this.timer = setTimeout(tick, this.cfg.intervalMs);
      this.timer.unref();
    };
    void tick();
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  /** Current load of every container on this host. */
  async sample(now = Date.now()): Promise<ContainerStat[]> {
    const out: ContainerStat[] = [];
    for (const c of await this.host.list()) {
      const path = this.host.cgroupsPath(c.name);
      const running = c.status === 'running';
      const ns = running ? await cpuUsageNs(path) : undefined;
      const prev = this.samples.get(c.name);
      const cpu = ns !== undefined && prev ? cpuPercent(prev.cpuNs, ns, now - prev.at) : 0;
      if (ns !== undefined) this.samples.set(c.name, { cpuNs: ns, at: now });
      const stat: ContainerStat = {
        name: c.name,
        cpuPercent: cpu,
        memoryBytes: running ? ((await memoryUsage(path)) ?? 0) : 0,
        status: c.status,
      };
      const limit = running ? await memoryLimit(path) : undefined;
      if (limit !== undefined) stat.memoryLimit = limit;
      if (c.ip) stat.ip = c.ip;
      out.push(stat);
    }
    for (const name of [...this.samples.keys()])
      if (!out.some((s) => s.name === name)) this.samples.delete(name);
    return out;
  }

  /**
   * A beat out of turn, after a container left this host: until the controller hears of it, it still counts the
   * name and address as taken and refuses a create that reuses them. Waits at most `waitMs`; never fails (a beat
   * that did not arrive makes the next one a full report).
   */
  async beatNow(waitMs = 1000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((r) => {
      timer = setTimeout(r, waitMs);
    });
    const sent = this.beat().catch(() => {
      this.forceFull = true;
    });
    await Promise.race([sent, late]);
    clearTimeout(timer);
  }

  beat(): Promise<void> {
    const p = this.running.then(() => this.beatOnce());
    this.running = p.catch(() => {});
    return p;
  }

  private async beatOnce(): Promise<void> {
    const stats = await this.sample();
    this.seq++;
    const full = this.forceFull || this.seq % this.cfg.fullEvery === 0;
    const { changed, removed } = full
      ? { changed: stats, removed: [] }
      : statDiff(this.sent, stats, this.cfg);
    const body: HeartbeatBody = {
      host: this.self.name,
      address: this.self.address,
      port: this.self.port,
      capacity: this.cfg.capacity,
      seq: this.seq,
      full,
      containers: changed,
      removed,
    };
    const r = await this.client.heartbeat(body, { timeoutMs: 5000 });
    if (full) this.sent.clear();
    for (const s of changed) this.sent.set(s.name, s);
    for (const n of removed) this.sent.delete(n);
    // a controller that restarted or missed beats asks for everything again
    this.forceFull = r?.resync === true;
  }
}
