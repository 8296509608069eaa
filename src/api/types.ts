// The wire contract's types: what agents, the controller and the CLI send each other (reports, events,
// capabilities, container records). Where a request schema exists (schemas.ts) the type is derived from it, so
// the validated shape and the typed shape cannot drift. Both ends of the wire import them, so this module
// depends on nothing above it.

import type { Static } from '@sinclair/typebox';
import type { FerryErrorJSON } from '../core/errors.ts';
import type { InspectImages } from '../images/inspect.ts';
import type { DumpStats, RestoreStats } from '../images/stats.ts';
import type { NetMode } from '../network/identity.ts';
import type { CriuProblem, HostFacts } from '../runtime/host-facts.ts';
import type * as S from './schemas.ts';

/** Where an agent (or the controller) listens, and the name its certificate must carry. */
export type Endpoint = Static<typeof S.Endpoint>;

export type ClaimRequest = Static<typeof S.ClaimBody>;

export type StrategyName = 'cold' | 'precopy' | 'postcopy' | 'hybrid';

/** What an agent reports of its host (produced in runtime/host-facts.ts, below every layer that sends it). */
export type { HostFacts };

export interface StrategySupport {
  ok: boolean;
  why?: string;
  mode?: string;
  /** Pre-copy and hybrid: how the rounds find what changed (soft-dirty pre-dumps, or content delta). */
  precopyMode?: 'softdirty' | 'delta';
  /** Why not, for the planner to act on (the text is `why`). */
  code?: CriuProblem | 'no-uffd' | 'pipe-too-small' | 'no-soft-dirty';
}

/** A container as its host records it; travels with a migration (IncomingRequest.record). */
export type ContainerRecord = Static<typeof S.ContainerRecord>;

export type CheckpointRequest = Static<typeof S.CheckpointBody>;
export type LocalArchive = Static<typeof S.LocalArchiveBody>;
export type ImportOptions = Static<typeof S.ImportBody>;

/** An archive staged on an agent, checked whole: what it holds, so the caller can pick a name and address. */
export interface StagedArchive {
  id: string;
  name: string;
  net: ContainerRecord['net'];
  ip?: string;
  from: string;
  checkpointedAt: string;
  tcpEstablished: boolean;
  bytes: number;
}

/** What a finished checkpoint did with the container. */
export interface CheckpointResult {
  name: string;
  host: string;
  /** running (left running or resumed) or stopped (checkpointed without --leave-running) */
  status: 'running' | 'stopped';
}

/** What a restore from an archive made. */
export interface ImportResult {
  container: ContainerInfo;
  /** The container had established TCP connections in the archive: restored, or closed (another identity). */
  tcp: 'restored' | 'closed' | 'none';
  /** Why, in a sentence, when connections were closed. */
  note?: string;
  restoreMs: number;
}

/** `ferry inspect`: a checkpoint archive, or a running container (dumped while it keeps running). */
export interface InspectReport {
  source: 'archive' | 'container';
  name: string;
  host: string;
  checkpointedAt?: string;
  createdAt?: string;
  versions?: { ferry: string; criu: string; runc: string; kernel: string };
  leaveRunning?: boolean;
  net?: { mode: string; ip?: string; mac?: string };
  /** Bytes: the whole content, CRIU's images, the page data among them, the writable rootfs. */
  sizes: { total: number; images: number; pages: number; rootfsDiff: number };
  images: InspectImages;
}

/** POST /v1/containers */
export type CreateRequest = Static<typeof S.CreateBody>;

export interface ContainerInfo {
  name: string;
  host: string;
  status: string;
  pid?: number;
  ip?: string;
  net: NetMode;
  createdAt: string;
  command?: string[];
}

export type MigrationPhase =
  | 'plan'
  | 'prepare'
  | 'rounds'
  | 'checkpoint'
  | 'transfer'
  | 'restore'
  | 'confirm'
  | 'pages'
  | 'cleanup';

/**
 * The options of a migration, with one name per concept from the CLI to the engine:
 *
 *   ferry migrate flag   API body (POST /v1/containers/:name/migrate)   engine (MigrationRequest)
 *   --to HOST            to: Endpoint (the CLI resolves the host)       to: name, toAddress: address
 *   --strategy           strategy                                       strategy
 *   --max-downtime MS    maxDowntimeMs                                  maxDowntimeMs
 *   --threshold BYTES    thresholdBytes                                 thresholdBytes
 *   --max-rounds N       maxRounds                                      maxRounds
 *   --compress MODE      compress                                       compress
 *   --streams N          streams                                        streams
 *   --skip-in-flight     skipInFlight                                   skipInFlight
 *
 * The CLI maps its flags to these names once (cli/commands.ts); the agent passes them on unchanged.
 * streams: parallel connections for large image files (default 4; 1 turns ranges off). compress: zstd on the
 * image stream ('auto' when the measured link is slower than 100 MB/s). skipInFlight: TCP connections a listening
 * socket has not accepted yet are dropped (CRIU --skip-in-flight; their clients see a reset) instead of refused.
 */
export type MigrationOptions = Omit<Static<typeof S.MigrateBody>, 'to'>;

/** The body of POST /v1/containers/:name/migrate: the options and the destination's endpoint. */
export type MigrateRequest = Static<typeof S.MigrateBody>;

/** What the engine is asked: the options, the container and the destination's name and address. */
export type MigrationRequest = MigrationOptions & {
  name: string;
  to: string;
  /** The destination's address (post-copy: the only address allowed to reach the page server). */
  toAddress?: string;
};

export interface MigrationReport {
  ok: boolean;
  id: string;
  container: string;
  from: string;
  to: string;
  strategy: StrategyName;
  strategyReason?: string;
  phases: { name: MigrationPhase; ms: number }[];
  freezeMs: number;
  /** The freeze the plan predicted for the strategy it chose (`auto` weighs it against the budget); beside `freezeMs`. */
  predictedFreezeMs?: number;
  rounds: { bytes: number; ms: number }[];
  /** Bytes that went to the destination over the link: with zstd, the compressed streams (see bytesUncompressed). */
  bytesSent: number;
  /** With zstd: what bytesSent would have been uncompressed (the files' bytes, zero pages skipped). */
  bytesUncompressed?: number;
  /** Bytes of zero pages the transfer skipped (not in bytesSent). */
  zeroBytesSkipped?: number;
  /** The bundle as sent at prepare, before the freeze (the transfer then sends what changed since). */
  bundlePrestagedBytes?: number;
  /** Cold and post-copy: bytes of page images already sent while CRIU was still writing them. */
  streamedDuringDump?: number;
  /** The destination's runc restore was started before the freeze and only its CRIU ran inside it. */
  restoreStaged?: boolean;
  totalMs: number;
  criu: { dump?: DumpStats; restore?: RestoreStats };
  /** Pre-copy: why the rounds stopped. */
  precopy?: {
    stop: string;
    roundBytes: number[];
    /** Bytes the switchover sent: new page contents plus the recipes (diffs against the last round where smaller). */
    switchoverBytes: number;
    distinctPages: number;
    /** Pages of the final dump whose content differs from the last round's page at the same place. */
    changedPages?: number;
  };
  /** The container's memory in use when the migration was planned (its cgroup's figure). */
  memoryBytes?: number;
  /** How many connections carried the images and the bundle. */
  streams?: number;
  /** Whether the image stream was zstd-compressed. */
  compressed?: boolean;
  /** `auto`: the link rate measured before the migration (bytes/s). */
  linkRate?: number;
  /** `auto`: how fast the container touched writable memory before the plan (bytes/s, upper bound of its dirty rate). */
  dirtyRate?: number;
  /** `auto`: the memory it kept re-touching meanwhile (bytes). */
  dirtyHotBytes?: number;
  /**
   * Post-copy's window, while the container's memory is split between the hosts: `lastPageMs` from the end of the
   * restore to the last page; `bytes`, the memory the dump left with the page server (its lazy pages); `rate`,
   * those bytes over the window (bytes/s). `bytes` and `rate` are missing when the dump's pagemaps could not be read.
   */
  postcopy?: { lastPageMs: number; pageServer: string; bytes?: number; rate?: number };
  /**
   * Memory the source's frozen copy held from the final dump until the destination committed (its cgroup's
   * figure at the dump): the price of a rollback that thaws instead of restoring (decision 9).
   */
  sourceHeldBytes?: number;
  /**
   * `action`: thawed (the source runs again), in-doubt (the commit may have landed and the destination could not
   * be asked: the source copy stays frozen until it answers), lost (nothing left to thaw), committed (the commit
   * landed after all: the migration succeeded and the source copy was removed).
   */
  rollback?: {
    sourceRunning: boolean;
    destinationCleaned: boolean;
    action?: 'thawed' | 'in-doubt' | 'lost' | 'committed';
    note?: string;
  };
  error?: FerryErrorJSON;
}

/**
 * How far one phase has got, while it runs (docs/events.md): checkpoint, bytes CRIU has written; rounds, one pre-copy
 * round's new bytes; transfer, bytes sent of the images' total; pages, post-copy memory delivered to the
 * destination, and the pages still on the source (0 once the last page has arrived).
 */
export interface ProgressUpdate {
  type: 'progress';
  phase: MigrationPhase;
  bytes: number;
  /** What `bytes` is counting towards, when it is known. */
  total?: number;
  /** Bytes per second since the phase's previous update, as the source measured it. */
  rate?: number;
  /** rounds: which pre-copy round (from 1). */
  round?: number;
  /** pages: memory pages still on the source; pagesTotal: the pages the destination had to fetch. */
  pagesRemaining?: number;
  pagesTotal?: number;
}

export type MigrationEvent =
  /** The first event: the migration's id, which GET /v1/migrations/:id on the source agent answers for. */
  | { type: 'started'; id: string }
  | { type: 'phase'; phase: MigrationPhase; state: 'start' | 'end' | 'fail'; ms?: number }
  | ProgressUpdate
  | { type: 'info'; message: string }
  | { type: 'result'; report: MigrationReport };

/** GET /v1/migrations/:id on the source agent: where a migration stands, then how it ended. */
export interface MigrationTracking {
  id: string;
  name: string;
  to: string;
  state: 'running' | 'done';
  /** The phase it is in (the last one started). */
  phase: MigrationPhase;
  /** Once done: the same report the migrate stream ends with. */
  report?: MigrationReport;
}

export interface CapabilitiesReport {
  facts: HostFacts;
  strategies: Record<StrategyName, StrategySupport>;
}

/** POST /v1/incoming: the destination reserves the name and stages what it can before the freeze. */
export type IncomingRequest = Static<typeof S.IncomingBody>;

/** POST /v1/incoming/:id/restore: the container's ARP cache; post-copy: where the source's page server listens. */
export type RestoreOptions = Static<typeof S.RestoreBody>;
/** Where a destination stands on one migration. */
export type IncomingState = Static<typeof S.IncomingStatus>['state'];

export interface RestoreResult {
  pid: number;
  ms: number;
  stats?: RestoreStats;
  /** The restore's runc was started before the freeze (its CRIU waited at a gate). */
  staged?: boolean;
}

// ---- the controller's API ----

/** One container's load as its agent reports it (CPU % of one core, memory in use and limit). */
export type ContainerStat = Static<typeof S.ContainerStat>;

/** POST /v1/heartbeat */
export type HeartbeatBody = Static<typeof S.HeartbeatBody>;

/** The controller's answer to a heartbeat: `resync` asks for a full report next time. */
export interface HeartbeatReply {
  resync: boolean;
}

export type RebalanceRequest = Static<typeof S.RebalanceBody>;
export type PlaceRequest = Static<typeof S.PlaceBody>;

/** A host as the controller knows it. */
export interface HostRecord {
  name: string;
  address: string;
  port: number;
  capacity: { cores: number; memoryBytes: number };
  /** ms epoch */
  lastSeen: number;
  up: boolean;
}

export type MigrationStatus = 'planned' | 'running' | 'done' | 'failed';

/** A migration the controller planned or carried out. */
export interface MigrationRecord {
  id: string;
  container: string;
  from: string;
  to: string;
  status: MigrationStatus;
  reason: string;
  createdAt: number;
  startedAt?: number;
  finishedAt?: number;
  freezeMs?: number;
  report?: unknown;
  error?: string;
  /** e.g. a drain or rebalance cycle id */
  batch?: string;
}

export interface Move {
  container: string;
  from: string;
  to: string;
  cpuPercent: number;
  memoryBytes: number;
  reason: string;
}

/** A migration map: the moves, the loads before and after. */
export interface PlanResult {
  moves: Move[];
  /** host -> load in % of its CPU capacity (rounded to 0.01), every host given, down ones included. */
  before: Record<string, number>;
  after: Record<string, number>;
  /** Why containers were skipped (cooldown, not migratable, nothing fits) and which hosts stay above target. */
  notes: string[];
  /**
   * A drain's plan only: the containers that stay on the drained host (not migratable, nowhere to go, or the host
   * is down), sorted. Non-empty means the host will not be empty when the batch is done: `ferry drain` exits 1.
   */
  remaining?: string[];
}

/** POST /v1/rebalance and /v1/drain: the plan, and the batch carrying it out (none on a dry run or an empty plan). */
export interface PlanReply {
  plan: PlanResult;
  batch?: string;
}

/** GET /v1/cluster */
export interface ClusterSummary {
  hosts: (HostRecord & { loadPercent: number; containers: ContainerStat[] })[];
}

/** GET /v1/health of an agent */
export interface AgentHealth {
  host: string;
  version: string;
  ok: boolean;
  /** When the agent's certificate expires (ISO 8601), so that `ferry hosts` can warn before it does. */
  certificateExpires?: string;
}

/** POST /v1/dashboard/login of a controller: a URL with a one-time login token, and when the token expires. */
export interface DashboardLogin {
  url: string;
  expiresAt: string;
}

/** GET /v1/health of a controller */
export interface ControllerHealth {
  ok: boolean;
  role: 'controller';
  leader: boolean;
}
