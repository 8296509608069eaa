// The agent's Prometheus metrics (prom-client), served at GET /metrics (api/metrics-route.ts). Migrations are
// counted on the source agent, where every migration runs (the CLI's and the controller's alike), once its report
// is final; containers are counted when scraped. Names and units follow Prometheus' conventions: seconds and
// bytes, `_total` for counters, labels of small fixed sets only (never a container's name).
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { MIGRATION_OUTCOMES, migrationOutcome } from '../api/outcome.ts';
import type { MigrationReport, StrategyName } from '../api/types.ts';

/** Every strategy a report can name (what `auto` chose, never `auto` itself). */
const STRATEGIES: readonly StrategyName[] = ['cold', 'precopy', 'postcopy', 'hybrid'];

/** Freeze times: CRIU's lazy dump of a small service is tens of ms, a cold move of GiBs several seconds. */
const FREEZE_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Whole migrations: from under a second to many minutes. */
const DURATION_BUCKETS = [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];
/** Post-copy windows: about a second per GiB on a fast link, minutes for many GiB on a slow one. */
const WINDOW_BUCKETS = [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

export interface AgentMetricsSources {
  host: string;
  version: string;
  /** This host's containers by status, read at each scrape. */
  containers: () => Promise<{ status: string }[]>;
  /** When this agent's own certificate expires. */
  certificateExpires?: Date;
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly migrations: Counter<'strategy' | 'result'>;
  private readonly freeze: Histogram<'strategy'>;
  private readonly duration: Histogram<'strategy' | 'result'>;
  private readonly sent: Counter<'strategy'>;
  private readonly rounds: Counter<'strategy'>;
  private readonly rollbacks: Counter<'phase' | 'result'>;
  private readonly window: Histogram<'strategy'>;

  constructor(src: AgentMetricsSources) {
    const registers = [this.registry];
    this.registry.setDefaultLabels({ host: src.host });
    collectDefaultMetrics({ register: this.registry });
    new Gauge({
      name: 'ferry_build_info',
      help: 'Always 1; the labels say which ferry this agent runs.',
      labelNames: ['version', 'role'],
      registers,
    }).set({ version: src.version, role: 'agent' }, 1);
    this.migrations = new Counter({
      name: 'ferry_migrations_total',
      help: 'Migrations this host ran as their source, by strategy and result (succeeded, refused: nothing touched, rolled_back: runs on the source, lost: lost or in doubt).',
      labelNames: ['strategy', 'result'],
      registers,
    });
    this.freeze = new Histogram({
      name: 'ferry_migration_freeze_seconds',
      help: 'Freeze time of each successful migration: from the final freeze on the source until the container ran on the destination.',
      labelNames: ['strategy'],
      buckets: FREEZE_BUCKETS,
      registers,
    });
    this.duration = new Histogram({
      name: 'ferry_migration_duration_seconds',
      help: 'Total time of each migration, from its plan to the cleanup of the source (or the end of its rollback).',
      labelNames: ['strategy', 'result'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.sent = new Counter({
      name: 'ferry_migration_sent_bytes_total',
      help: 'Bytes of images, pages and bundles this host sent to destinations (zero pages skipped are not counted).',
      labelNames: ['strategy'],
      registers,
    });
    this.rounds = new Counter({
      name: 'ferry_migration_rounds_total',
      help: 'Pre-copy rounds (memory sent while the container ran) of the migrations this host ran as their source.',
      labelNames: ['strategy'],
      registers,
    });
    this.rollbacks = new Counter({
      name: 'ferry_migration_rollbacks_total',
      help: 'Rollbacks: migrations that failed after they had started and before the commit, by the phase that failed and whether the container runs on the source again (rolled_back) or not (lost).',
      labelNames: ['phase', 'result'],
      registers,
    });
    this.window = new Histogram({
      name: 'ferry_postcopy_window_seconds',
      help: "Post-copy's window of each successful post-copy or hybrid migration: from the end of the restore to the last page, while the container's memory is split between the hosts.",
      labelNames: ['strategy'],
      buckets: WINDOW_BUCKETS,
      registers,
    });
    // every strategy and result from the start, at 0: an increase() over a series that appears with its first
    // migration would miss that migration
    for (const strategy of STRATEGIES)
      for (const result of MIGRATION_OUTCOMES) this.migrations.inc({ strategy, result }, 0);
    new Gauge({
      name: 'ferry_containers',
      help: 'Containers on this host, by status.',
      labelNames: ['status'],
      registers,
      async collect() {
        this.reset();
        const counts = new Map<string, number>([['running', 0]]);
        for (const c of await src.containers()) counts.set(c.status, (counts.get(c.status) ?? 0) + 1);
        for (const [status, n] of counts) this.set({ status }, n);
      },
    });
    if (src.certificateExpires) {
      new Gauge({
        name: 'ferry_certificate_expiry_timestamp_seconds',
        help: "When this agent's own certificate expires (Unix time).",
        registers,
      }).set(src.certificateExpires.getTime() / 1000);
    }
  }

  /** Counts one migration whose report is final. */
  observe(r: MigrationReport): void {
    const result = migrationOutcome(r);
    const strategy = r.strategy;
    this.migrations.inc({ strategy, result });
    this.duration.observe({ strategy, result }, r.totalMs / 1000);
    if (result === 'succeeded') this.freeze.observe({ strategy }, r.freezeMs / 1000);
    if (result === 'succeeded' && r.postcopy) this.window.observe({ strategy }, r.postcopy.lastPageMs / 1000);
    if (r.bytesSent > 0) this.sent.inc({ strategy }, r.bytesSent);
    if (r.rounds.length > 0) this.rounds.inc({ strategy }, r.rounds.length);
    if (r.rollback)
      this.rollbacks.inc({
        phase: r.error?.phase ?? 'unknown',
        result: r.rollback.sourceRunning ? 'rolled_back' : 'lost',
      });
  }
}
