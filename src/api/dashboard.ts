// The dashboard's wire contract: what the controller's dashboard port answers and streams to the browser, and
// the process lists agents gather for it. The browser code imports these types only (never a value), so this
// module may use typebox for the request schemas the controller validates.
import { type Static, Type } from '@sinclair/typebox';
import type { ProcessInfo } from '../runtime/proc-tree.ts';
import { Name, StrategyChoice } from './schemas.ts';
import type {
  ClusterSummary,
  MigrationEvent,
  MigrationRecord,
  Move,
  PlanResult,
  StrategyName,
} from './types.ts';

export type { ProcessInfo };

/** GET /v1/containers/:name/processes of an agent: the processes of the container's cgroup. */
export interface ProcessList {
  container: string;
  host: string;
  processes: ProcessInfo[];
  /** More processes than the list carries (runtime/proc-tree.ts MAX_PROCESSES). */
  truncated: boolean;
}

/** A migration asked for from the dashboard (drag and drop, or "Move to…"). */
export const MoveBody = Type.Object(
  {
    container: Name,
    to: Name,
    strategy: StrategyChoice,
    maxDowntimeMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 600_000 })),
  },
  { additionalProperties: false },
);
export type MoveRequest = Static<typeof MoveBody>;

/** The dry run of one move: what `auto` (or the strategy asked for) would do, and the freeze it predicts. */
export interface MovePlan {
  container: string;
  from: string;
  to: string;
  strategy: StrategyName;
  reason: string;
  memoryBytes: number;
  predictedFreezeMs: number;
}

/** A move the controller accepted: the migration's record id, and its batch. */
export interface MoveStarted {
  id: string;
  batch: string;
}

export const DashboardRebalanceBody = Type.Object(
  {
    dryRun: Type.Optional(Type.Boolean()),
    targetPercent: Type.Optional(Type.Number({ minimum: 1, maximum: 100 })),
  },
  { additionalProperties: false },
);
export const DashboardDrainBody = Type.Object(
  { host: Name, dryRun: Type.Optional(Type.Boolean()) },
  { additionalProperties: false },
);
export const ProcessParams = Type.Object({ host: Name, name: Name }, { additionalProperties: false });

/** A rebalance or drain from the dashboard: the plan, and the batch carrying it out (none on a dry run). */
export interface BatchReply {
  plan: PlanResult;
  batch?: string;
}

export type BatchKind = 'rebalance' | 'drain' | 'move';

export type ProgressEvent = Exclude<MigrationEvent, { type: 'result' }>;

/** The dashboard's event stream (server-sent events, GET /api/events); each event's name is its `type`. */
export type DashboardEvent =
  /** The whole cluster, at most once per heartbeat interval (loads, hosts up or down, containers). */
  | { type: 'cluster'; cluster: ClusterSummary; at: number }
  /** Every migration record, once at the start of each stream (a page that reconnects catches up with it). */
  | { type: 'history'; migrations: MigrationRecord[]; at: number }
  /** A migration record changed (planned, running, done, failed). */
  | { type: 'migration'; migration: MigrationRecord }
  /** A running migration's phase or byte count, as its source agent reports it. */
  | { type: 'progress'; id: string; container: string; event: ProgressEvent; at: number }
  /** A batch was planned (rebalance, drain, move). */
  | { type: 'plan'; kind: BatchKind; batch: string; moves: Move[] };
