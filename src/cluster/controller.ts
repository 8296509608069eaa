// The controller: keeps the cluster's picture from heartbeats, decides moves with the greedy policy, and carries
// them out as ferry migrations with a concurrency limit, recording every one. State lives in a ClusterStore.
// Over 400 lines: the reconcile loop and the move executor share the in-flight set and the cooldowns, and the
// claims of creates are settled by the same heartbeats that keep the picture; a single move asked for by a user
// (the dashboard) goes through the same queue, checks and records as a drain's.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type {
  ClusterSummary,
  ContainerInfo,
  HeartbeatBody,
  HeartbeatReply,
  MigrationEvent,
  MigrationOptions,
  MigrationReport,
  PlaceRequest,
  PlanReply,
  RebalanceRequest,
} from '../api/types.ts';
import { type Claim, ClaimTable } from '../core/claims.ts';
import { FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { checkName } from '../core/names.ts';
import {
  drain,
  type HostLoad,
  hostLoadPercent,
  type Move,
  type PlanResult,
  place,
  rebalance,
} from './policy.ts';
import type { ClusterStore, ContainerStat, HostRecord, MigrationRecord } from './store.ts';

export interface ControllerConfig {
  heartbeatTimeoutMs: number;
  /** 0: no periodic rebalance (on demand only). */
  rebalanceIntervalMs: number;
  targetPercent: number;
  cooldownMs: number;
  batchLimit: number;
  concurrency: number;
  strategy: MigrationOptions['strategy'];
}

export const CONTROLLER_DEFAULTS: ControllerConfig = {
  heartbeatTimeoutMs: 120_000,
  rebalanceIntervalMs: 60_000,
  targetPercent: 80,
  cooldownMs: 300_000,
  batchLimit: 4,
  concurrency: 2,
  strategy: 'auto',
};

/** A move's own options (the dashboard's), and where its progress events go. */
export interface MoveExtras {
  maxDowntimeMs?: number;
  onEvent?: (e: Exclude<MigrationEvent, { type: 'result' }>) => void;
}

/** What the controller needs of the agents; over HTTPS in production, faked in unit tests. */
export interface AgentPool {
  containers(host: HostRecord): Promise<ContainerInfo[]>;
  migrate(
    from: HostRecord,
    container: string,
    to: HostRecord,
    strategy: MigrationOptions['strategy'],
    extras?: MoveExtras,
  ): Promise<MigrationReport>;
  /** Whether a host can migrate at all (`ferry check`: cold works). */
  canMigrate(host: HostRecord): Promise<boolean>;
}

export type BatchKind = 'rebalance' | 'drain' | 'move';

export type ControllerEvent =
  | { type: 'host'; host: string; up: boolean }
  /** A host's report arrived (the dashboard redraws its loads from it). */
  | { type: 'heartbeat'; host: string }
  | { type: 'migration'; migration: MigrationRecord }
  /** A running migration's phase or byte count, as its source agent streams it. */
  | { type: 'progress'; id: string; container: string; event: Exclude<MigrationEvent, { type: 'result' }> }
  | { type: 'plan'; kind: BatchKind; batch: string; moves: Move[] };

export class Controller extends EventEmitter {
  readonly cfg: ControllerConfig;
  private readonly store: ClusterStore;
  private readonly agents: AgentPool;
  private readonly log: Logger;
  private readonly now: () => number;
  /** Hosts that sent a full report since this controller started (others are asked to resync). */
  private readonly synced = new Set<string>();
  private readonly migratable = new Map<string, boolean>();
  private readonly queue: MigrationRecord[] = [];
  private readonly active = new Set<string>();
  private timers: NodeJS.Timeout[] = [];
  /** Names and addresses of creates in flight (until a heartbeat shows the container). */
  private readonly claims: ClaimTable;
  /** The options of single moves (by migration id) while they are queued or running. */
  private readonly moveOptions = new Map<
    string,
    { strategy: MigrationOptions['strategy']; maxDowntimeMs?: number }
  >();
  private leader = true;

  constructor(deps: {
    store: ClusterStore;
    agents: AgentPool;
    cfg: ControllerConfig;
    log: Logger;
    now?: () => number;
  }) {
    super();
    this.store = deps.store;
    this.agents = deps.agents;
    this.cfg = deps.cfg;
    this.log = deps.log;
    this.now = deps.now ?? Date.now;
    this.claims = new ClaimTable({ now: this.now });
  }

  emitEvent(e: ControllerEvent): void {
    this.emit('event', e);
  }

  /** Only the leader decides and executes; followers keep the picture (etcd store, several controllers). */
  isLeader(): boolean {
    return this.leader;
  }

  setLeader(leader: boolean): void {
    this.leader = leader;
    if (leader) void this.pump();
  }

  async heartbeat(b: HeartbeatBody): Promise<HeartbeatReply> {
    checkName(b.host, 'host');
    const prev = await this.store.getHost(b.host);
    // a second agent under a name that reports from elsewhere (a copied config or certificate) would take over the
    // first one's containers in the controller's picture: the first keeps the name while its heartbeats arrive
    if (
      prev?.up &&
      (prev.address !== b.address || prev.port !== b.port) &&
      this.now() - prev.lastSeen < this.cfg.heartbeatTimeoutMs
    )
      throw new FerryError(
        'FERRY_E_HOST_DUPLICATE',
        `host ${b.host} already reports from ${prev.address}:${prev.port}; the agent at ${b.address}:${b.port} is refused`,
        {
          hint: "each host needs its own name (the agent config's host) and certificate (ferry ca issue --host NAME)",
        },
      );
    const rec: HostRecord = {
      name: b.host,
      address: b.address,
      port: b.port,
      capacity: b.capacity,
      lastSeen: this.now(),
      up: true,
    };
    await this.store.upsertHost(rec);
    if (!prev?.up) {
      this.log.info({ host: b.host }, 'host up');
      this.emitEvent({ type: 'host', host: b.host, up: true });
    }
    if (!this.migratable.has(b.host)) {
      this.migratable.set(b.host, true);
      void this.agents.canMigrate(rec).then(
        (ok) => this.migratable.set(b.host, ok),
        () => this.migratable.delete(b.host),
      );
    }
    let current: ContainerStat[];
    if (b.full) {
      current = b.containers;
      this.synced.add(b.host);
    } else {
      const known = new Map<string, ContainerStat>();
      for (const c of await this.store.listContainers())
        if (c.host === b.host) known.set(c.name, stripHost(c));
      for (const c of b.containers) known.set(c.name, c);
      for (const n of b.removed) known.delete(n);
      current = [...known.values()];
    }
    await this.store.setContainers(b.host, current);
    // a claim ends once its container shows in its host's report: from now on the picture answers for it
    this.claims.settle(
      b.host,
      current.map((c) => c.name),
    );
    this.emitEvent({ type: 'heartbeat', host: b.host });
    return { resync: !this.synced.has(b.host) };
  }

  /** A create's claim on a name (and address) cluster-wide: refused if any host has them or another create. */
  async claim(c: Claim): Promise<void> {
    checkName(c.name);
    checkName(c.host, 'host');
    const where = 'the controller';
    for (const k of await this.store.listContainers()) {
      if (k.name === c.name)
        throw new FerryError(
          'FERRY_E_CONTAINER_EXISTS',
          `a container named ${c.name} already exists (on ${k.host})`,
          {
            phase: 'input',
          },
        );
      if (c.ip !== undefined && k.ip === c.ip)
        throw new FerryError('FERRY_E_ADDRESS_TAKEN', `address ${c.ip} is taken by ${k.name} on ${k.host}`, {
          phase: 'input',
        });
    }
    if (c.ip !== undefined) {
      const h = (await this.store.listHosts()).find((x) => x.address === c.ip);
      if (h)
        throw new FerryError('FERRY_E_ADDRESS_TAKEN', `address ${c.ip} is host ${h.name}'s own`, {
          phase: 'input',
        });
    }
    this.claims.add(c, where);
  }

  releaseClaim(token: string): void {
    this.claims.release(token);
  }

  /** Marks hosts down whose heartbeats stopped; they are excluded from decisions until they beat again. */
  async checkLiveness(): Promise<void> {
    const now = this.now();
    for (const h of await this.store.listHosts()) {
      if (h.up && now - h.lastSeen > this.cfg.heartbeatTimeoutMs) {
        await this.store.setHostUp(h.name, false);
        this.synced.delete(h.name);
        this.log.warn({ host: h.name, silentMs: now - h.lastSeen }, 'host down: heartbeats stopped');
        this.emitEvent({ type: 'host', host: h.name, up: false });
      }
    }
  }

  /** The cluster as the policy sees it. */
  async view(): Promise<HostLoad[]> {
    const hosts = await this.store.listHosts();
    const containers = await this.store.listContainers();
    const lastMoved = new Map<string, number>();
    for (const m of await this.store.listMigrations({ status: ['done'] })) {
      if (m.finishedAt) lastMoved.set(m.container, Math.max(lastMoved.get(m.container) ?? 0, m.finishedAt));
    }
    const busy = new Set([...this.active, ...this.queue.map((m) => m.container)]);
    return hosts.map((h) => ({
      name: h.name,
      up: h.up,
      capacity: h.capacity,
      containers: containers
        .filter((c) => c.host === h.name)
        .map((c) => {
          const moved = lastMoved.get(c.name);
          return {
            name: c.name,
            cpuPercent: c.cpuPercent,
            memoryBytes: c.memoryBytes,
            migratable: this.migratable.get(h.name) !== false && c.status === 'running' && !busy.has(c.name),
            ...(moved !== undefined ? { lastMovedAt: moved } : {}),
          };
        }),
    }));
  }

  async summary(): Promise<ClusterSummary> {
    const hosts = await this.store.listHosts();
    const containers = await this.store.listContainers();
    return {
      hosts: hosts.map((h) => {
        const mine = containers.filter((c) => c.host === h.name).map(stripHost);
        return {
          ...h,
          loadPercent: hostLoadPercent({
            name: h.name,
            up: h.up,
            capacity: h.capacity,
            containers: mine.map(asLoad),
          }),
          containers: mine,
        };
      }),
    };
  }

  async planRebalance(targetPercent = this.cfg.targetPercent): Promise<PlanResult> {
    return rebalance(await this.view(), {
      targetPercent,
      now: this.now(),
      cooldownMs: this.cfg.cooldownMs,
      batchLimit: this.cfg.batchLimit,
    });
  }

  async rebalance(o: RebalanceRequest = {}): Promise<PlanReply> {
    const plan = await this.planRebalance(o.targetPercent);
    if (o.dryRun || plan.moves.length === 0) return { plan };
    const batch = await this.enqueue('rebalance', plan.moves);
    return { plan, batch };
  }

  async drain(host: string, o: { dryRun?: boolean } = {}): Promise<PlanReply> {
    checkName(host, 'host');
    const view = await this.view();
    if (!view.some((h) => h.name === host)) {
      throw new FerryError('FERRY_E_HOST_UNKNOWN', `unknown host ${host}`, {
        phase: 'input',
        hint: `known: ${view.map((h) => h.name).join(', ')}`,
      });
    }
    const plan = drain(host, view, { now: this.now() });
    if (o.dryRun || plan.moves.length === 0) return { plan };
    return { plan, batch: await this.enqueue('drain', plan.moves) };
  }

  /** Initial placement of a new container (seed rule: the host with the most remaining capacity). */
  async place(c: PlaceRequest): Promise<string> {
    checkName(c.name);
    const r = place(
      [{ name: c.name, cpuPercent: c.cpuPercent ?? 0, memoryBytes: c.memoryBytes ?? 0 }],
      await this.view(),
    );
    const host = r.placements[c.name];
    if (!host)
      throw new FerryError('FERRY_E_CAPABILITY', `no host has room for ${c.name}`, { phase: 'plan' });
    return host;
  }

  /**
   * One container to one host, asked for by a user (the dashboard): checked like a drain's move (known,
   * running, not busy, another host that is up), then queued like one, with its own strategy and budget.
   */
  async move(o: {
    container: string;
    to: string;
    strategy: MigrationOptions['strategy'];
    maxDowntimeMs?: number;
  }): Promise<{ id: string; batch: string }> {
    const m = await this.checkMove(o.container, o.to);
    const batch = await this.enqueue('move', [m], {
      strategy: o.strategy,
      ...(o.maxDowntimeMs !== undefined ? { maxDowntimeMs: o.maxDowntimeMs } : {}),
    });
    const rec = (await this.store.listMigrations({ batch }))[0];
    return { id: rec?.id ?? '', batch };
  }

  /** A move's checks, without queueing it (the dashboard's dry run runs them too). */
  async checkMove(container: string, to: string): Promise<Move> {
    checkName(container);
    checkName(to, 'host');
    const view = await this.view();
    const from = view.find((h) => h.containers.some((c) => c.name === container));
    const c = from?.containers.find((x) => x.name === container);
    if (!from || !c)
      throw new FerryError('FERRY_E_CONTAINER_UNKNOWN', `no host reports a container named ${container}`, {
        phase: 'input',
      });
    const dest = view.find((h) => h.name === to);
    if (!dest)
      throw new FerryError('FERRY_E_HOST_UNKNOWN', `unknown host ${to}`, {
        phase: 'input',
        hint: `known: ${view.map((h) => h.name).join(', ')}`,
      });
    if (dest.name === from.name)
      throw new FerryError('FERRY_E_HOST_SAME', `${container} already runs on ${to}`, { phase: 'input' });
    if (!dest.up)
      throw new FerryError('FERRY_E_HOST_UNREACHABLE', `host ${to} is down (its heartbeats stopped)`, {
        phase: 'input',
      });
    if (!c.migratable)
      throw new FerryError(
        'FERRY_E_CONTAINER_BUSY',
        `${container} cannot be moved now (it is not running, already queued or moving, or its host cannot migrate)`,
        { phase: 'input' },
      );
    return {
      container,
      from: from.name,
      to,
      cpuPercent: c.cpuPercent,
      memoryBytes: c.memoryBytes,
      reason: 'asked for',
    };
  }

  private async enqueue(
    kind: BatchKind,
    moves: Move[],
    options?: { strategy: MigrationOptions['strategy']; maxDowntimeMs?: number },
  ): Promise<string> {
    const batch = `${kind}-${randomBytes(4).toString('hex')}`;
    for (const m of moves) {
      const rec: MigrationRecord = {
        id: `c${randomBytes(6).toString('hex')}`,
        container: m.container,
        from: m.from,
        to: m.to,
        status: 'planned',
        reason: m.reason,
        createdAt: this.now(),
        batch,
      };
      await this.store.addMigration(rec);
      if (options) this.moveOptions.set(rec.id, options);
      this.queue.push(rec);
    }
    this.emitEvent({ type: 'plan', kind, batch, moves });
    void this.pump();
    return batch;
  }

  /** Runs queued migrations, at most `concurrency` at once and one per container. */
  private async pump(): Promise<void> {
    if (!this.leader) return;
    while (this.active.size < this.cfg.concurrency) {
      const i = this.queue.findIndex((m) => !this.active.has(m.container));
      if (i < 0) return;
      const [m] = this.queue.splice(i, 1);
      if (!m) return;
      this.active.add(m.container);
      void this.execute(m).finally(() => {
        this.moveOptions.delete(m.id);
        this.active.delete(m.container);
        void this.pump();
      });
    }
  }

  private async execute(m: MigrationRecord): Promise<void> {
    const hosts = new Map((await this.store.listHosts()).map((h) => [h.name, h]));
    const from = hosts.get(m.from);
    const to = hosts.get(m.to);
    const fail = async (error: string) => {
      const r = await this.store.updateMigration(m.id, { status: 'failed', finishedAt: this.now(), error });
      this.emitEvent({ type: 'migration', migration: r });
    };
    if (!from?.up || !to?.up) return fail(`host ${!from?.up ? m.from : m.to} is down`);
    const started = await this.store.updateMigration(m.id, { status: 'running', startedAt: this.now() });
    this.emitEvent({ type: 'migration', migration: started });
    try {
      const own = this.moveOptions.get(m.id);
      const report = await this.agents.migrate(from, m.container, to, own?.strategy ?? this.cfg.strategy, {
        ...(own?.maxDowntimeMs !== undefined ? { maxDowntimeMs: own.maxDowntimeMs } : {}),
        onEvent: (event) => this.emitEvent({ type: 'progress', id: m.id, container: m.container, event }),
      });
      const r = await this.store.updateMigration(m.id, {
        status: report.ok ? 'done' : 'failed',
        finishedAt: this.now(),
        freezeMs: report.freezeMs,
        report,
        ...(report.error ? { error: `${report.error.code}: ${report.error.message}` } : {}),
      });
      this.emitEvent({ type: 'migration', migration: r });
      this.log.info(
        { migration: m.id, container: m.container, from: m.from, to: m.to, ok: report.ok },
        'migration finished',
      );
    } catch (err) {
      // the agent refused before streaming (or could not be reached): its code stays readable in the record
      await fail(err instanceof FerryError ? `${err.code}: ${err.message}` : (err as Error).message);
    }
  }

  /**
   * After a restart: a migration recorded as running finished or failed while we were away (the source agent
   * carries it to the end on its own): find where the container is and record that; planned ones go ahead,
   * unless the container is already where they would take it. Nothing that completed is repeated.
   */
  async recover(): Promise<void> {
    const pending = await this.store.listMigrations({ status: ['planned', 'running'] });
    if (!pending.length) return;
    const hosts = (await this.store.listHosts()).filter((h) => h.up);
    const where = new Map<string, string>();
    const deadline = this.now() + 120_000;
    for (;;) {
      where.clear();
      let migrating = false;
      for (const h of hosts) {
        const list = await this.agents.containers(h).catch(() => []);
        for (const c of list) {
          where.set(c.name, h.name);
          if (c.status === 'migrating') migrating = true;
        }
      }
      if (!migrating || this.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    for (const m of pending) {
      const at = where.get(m.container);
      if (at === m.to) {
        await this.store.updateMigration(m.id, {
          status: 'done',
          finishedAt: this.now(),
          error: 'completed while the controller was down',
        });
      } else if (at === m.from) {
        // still on its source and no migration in flight (we waited for those): it never completed, so running
        // it now cannot repeat a move; it goes ahead (again, if the agent had started and rolled it back)
        const again = await this.store.updateMigration(m.id, { status: 'planned' });
        this.queue.push(again);
      } else if (m.status === 'running') {
        await this.store.updateMigration(m.id, {
          status: 'failed',
          finishedAt: this.now(),
          error: `interrupted by a controller restart; ${m.container} is on ${at ?? 'no reachable host'}`,
        });
      } else {
        await this.store.updateMigration(m.id, {
          status: 'failed',
          finishedAt: this.now(),
          error: `${m.container} is no longer on ${m.from}`,
        });
      }
    }
    void this.pump();
  }

  start(): void {
    const every = (ms: number, fn: () => Promise<unknown>) => {
      const t = setInterval(
        () => void fn().catch((err: Error) => this.log.error({ err: err.message }, 'controller task failed')),
        ms,
      );
      t.unref();
      this.timers.push(t);
    };
    every(Math.min(1000, this.cfg.heartbeatTimeoutMs / 4), () => this.checkLiveness());
    if (this.cfg.rebalanceIntervalMs > 0) {
      every(this.cfg.rebalanceIntervalMs, async () => {
        if (this.leader && this.queue.length === 0 && this.active.size === 0) await this.rebalance();
      });
    }
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  /** Waits until a batch has no planned or running migration left. */
  async settle(batch: string, timeoutMs = 600_000): Promise<MigrationRecord[]> {
    const deadline = this.now() + timeoutMs;
    for (;;) {
      const ms = await this.store.listMigrations({ batch });
      if (ms.every((m) => m.status === 'done' || m.status === 'failed') || this.now() > deadline) return ms;
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  history(filter?: Parameters<ClusterStore['listMigrations']>[0]): Promise<MigrationRecord[]> {
    return this.store.listMigrations(filter);
  }
}

function stripHost(c: ContainerStat & { host?: string }): ContainerStat {
  const { host: _host, ...rest } = c;
  return rest;
}

function asLoad(c: ContainerStat) {
  return { name: c.name, cpuPercent: c.cpuPercent, memoryBytes: c.memoryBytes, migratable: true };
}
