// The controller's Prometheus metrics (prom-client), served at GET /metrics (api/metrics-route.ts): the cluster as
// the controller sees it (hosts up, heartbeat age, containers per host), read from its store at each scrape, and
// the moves it carried out (rebalance, drain). The migrations themselves are counted by their source agents.
import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { ClusterSummary, MigrationRecord } from '../api/types.ts';

export interface ControllerMetricsSources {
  name: string;
  version: string;
  summary: () => Promise<ClusterSummary>;
  isLeader: () => boolean;
  now?: () => number;
}

export class ControllerMetrics {
  readonly registry = new Registry();
  private readonly moves: Counter<'result'>;

  constructor(src: ControllerMetricsSources) {
    const registers = [this.registry];
    const now = src.now ?? Date.now;
    this.registry.setDefaultLabels({ controller: src.name });
    collectDefaultMetrics({ register: this.registry });
    new Gauge({
      name: 'ferry_build_info',
      help: 'Always 1; the labels say which ferry this controller runs.',
      labelNames: ['version', 'role'],
      registers,
    }).set({ version: src.version, role: 'controller' }, 1);
    new Gauge({
      name: 'ferry_controller_leader',
      help: '1 while this controller is the leader (the one that decides and moves), else 0.',
      registers,
      collect() {
        this.set(src.isLeader() ? 1 : 0);
      },
    });
    this.moves = new Counter({
      name: 'ferry_controller_migrations_total',
      help: 'Migrations this controller carried out (rebalance, drain), by result (done, failed).',
      labelNames: ['result'],
      registers,
    });
    for (const result of ['done', 'failed']) this.moves.inc({ result }, 0);
    // one read of the store per scrape, shared by the gauges below (prom-client collects them one after another)
    let pending: Promise<ClusterSummary> | undefined;
    const summary = () => {
      pending ??= src.summary().finally(() => {
        setImmediate(() => {
          pending = undefined;
        });
      });
      return pending;
    };
    new Gauge({
      name: 'ferry_host_up',
      help: 'Whether a host is up (its heartbeats arrive) as the controller sees it: 1 up, 0 down.',
      labelNames: ['host'],
      registers,
      async collect() {
        this.reset();
        for (const h of (await summary()).hosts) this.set({ host: h.name }, h.up ? 1 : 0);
      },
    });
    new Gauge({
      name: 'ferry_host_heartbeat_age_seconds',
      help: "Seconds since each host's last heartbeat reached the controller.",
      labelNames: ['host'],
      registers,
      async collect() {
        this.reset();
        for (const h of (await summary()).hosts)
          this.set({ host: h.name }, Math.max(0, (now() - h.lastSeen) / 1000));
      },
    });
    new Gauge({
      name: 'ferry_host_containers',
      help: 'Containers on each host, from its last heartbeat.',
      labelNames: ['host'],
      registers,
      async collect() {
        this.reset();
        for (const h of (await summary()).hosts) this.set({ host: h.name }, h.containers.length);
      },
    });
    new Gauge({
      name: 'ferry_host_load_ratio',
      help: "Each host's CPU load as a fraction of its capacity (the rebalancing policy's figure).",
      labelNames: ['host'],
      registers,
      async collect() {
        this.reset();
        for (const h of (await summary()).hosts) this.set({ host: h.name }, h.loadPercent / 100);
      },
    });
  }

  /** Counts a move of the controller's once it has finished. */
  observe(m: MigrationRecord): void {
    if (m.status === 'done' || m.status === 'failed') this.moves.inc({ result: m.status });
  }
}
