// The wire contract's types: what agents, the controller and the CLI send each other (reports, events,
// capabilities, container records). Both ends of the wire import them, so this module depends on nothing above it.
import type { FerryErrorJSON } from '../core/errors.ts';
import type { DumpStats, RestoreStats } from '../images/stats.ts';
import type { NetMode } from '../network/identity.ts';
import type { Neighbour } from '../network/ip.ts';
import type { CriuProblem, HostFlags } from '../runtime/host-facts.ts';

export type StrategyName = 'cold' | 'precopy' | 'postcopy' | 'hybrid';

export interface HostFacts {
  host: string;
  kernel: string;
  criuVersion?: string;
  runcVersion?: string;
  criuCheck: { ok: boolean; message: string };
  features: Record<string, { ok: boolean; message: string }>;
  pipeMaxSize: number;
  /** CRIU's kernel-feature cache (runtime/kdat.ts): absent costs every CRIU run its kernel probe. */
  kdat?: 'kept by CRIU' | 'staged by ferry' | 'absent';
  root: boolean;
  /** Linux capabilities ferry relies on (effective set of the agent). */
  capabilities?: Record<string, boolean>;
  /** What the facts amount to, a flag with its reason each (runtime/host-facts.ts). */
  flags?: HostFlags;
}

export interface StrategySupport {
  ok: boolean;
  why?: string;
  mode?: string;
  /** Pre-copy and hybrid: how the rounds find what changed (soft-dirty pre-dumps, or content delta). */
  precopyMode?: 'softdirty' | 'delta';
  /** Why not, for the planner to act on (the text is `why`). */
  code?: CriuProblem | 'no-uffd' | 'pipe-too-small' | 'no-soft-dirty';
}

export interface ContainerRecord {
  name: string;
  createdAt: string;
  net: NetMode;
  ip?: string;
  mac?: string;
  command?: string[];
  /** How it got here: started on this host, or arrived by migration (with the source host). */
  origin: { kind: 'run' } | { kind: 'migration'; from: string; id: string };
}

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

export interface MigrationRequest {
  name: string;
  to: string;
  /** Parallel connections for large image files (default 4; 1 turns ranges off). */
  streams?: number;
  /** zstd on the image stream: 'auto' when the measured link is slower than 100 MB/s. */
  compress?: 'auto' | 'on' | 'off';
  /** The destination's address (post-copy: the only address allowed to reach the page server). */
  toAddress?: string;
  strategy: StrategyName | 'auto';
  maxDowntimeMs?: number;
  thresholdBytes?: number;
  maxRounds?: number;
}

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
  rounds: { bytes: number; ms: number }[];
  bytesSent: number;
  /** Bytes of zero pages the transfer skipped (not in bytesSent). */
  zeroBytesSkipped?: number;
  /** The bundle as sent at prepare, before the freeze (the transfer then sends what changed since). */
  bundlePrestagedBytes?: number;
  /** Cold: bytes of page images already sent while CRIU was still writing them. */
  streamedDuringDump?: number;
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
  /** Post-copy: when the last page arrived, counted from the end of the restore. */
  postcopy?: { lastPageMs: number; pageServer: string };
  rollback?: { sourceRunning: boolean; destinationCleaned: boolean; note?: string };
  error?: FerryErrorJSON;
}

export type MigrationEvent =
  | { type: 'phase'; phase: MigrationPhase; state: 'start' | 'end' | 'fail'; ms?: number }
  | { type: 'progress'; phase: MigrationPhase; bytes: number; total?: number }
  | { type: 'info'; message: string }
  | { type: 'result'; report: MigrationReport };

export interface CapabilitiesReport {
  facts: HostFacts;
  strategies: Record<StrategyName, StrategySupport>;
}

export interface IncomingRequest {
  id: string;
  name: string;
  from: string;
  record: ContainerRecord;
  /** The container's ARP cache, set in its new namespace before the freeze. */
  neighbours?: Neighbour[];
  /** Post-copy: where the source's page server will listen; the lazy-pages daemon starts before the freeze. */
  lazy?: { address: string; port: number };
}

export interface RestoreOptions {
  neighbours: Neighbour[];
  /** Post-copy: where the source's page server listens. */
  lazy?: { address: string; port: number };
}

export interface RestoreResult {
  pid: number;
  ms: number;
  stats?: RestoreStats;
}
