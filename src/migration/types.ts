// Shared shapes of the migration engine: the report, events, and the peer the source talks to.
import type { Readable } from 'node:stream';
import type { FerryErrorJSON } from '../core/errors.ts';
import type { ContainerRecord } from '../host/containers.ts';
import type { DumpStats, RestoreStats } from '../images/stats.ts';
import type { Neighbour } from '../network/ip.ts';
import type { FileRange } from '../transport/ranges.ts';
import type { HostFacts, StrategyName, StrategySupport } from './capabilities.ts';

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

/** The destination as the source sees it; implemented over HTTP by the agent, by fakes in unit tests. */
export interface DestinationPeer {
  readonly name: string;
  capabilities(): Promise<CapabilitiesReport>;
  hasContainer(name: string): Promise<boolean>;
  /** Optional: opens connections ahead of the freeze (the HTTP peer; fakes need not). */
  warm?(connections: number): Promise<void>;
  prepare(req: IncomingRequest): Promise<void>;
  send(
    id: string,
    part: 'bundle' | 'images',
    body: Readable,
    /** update: the tree is already there; the stream carries removals and what changed (the bundle after a dump). */
    opts?: { compress?: boolean; update?: boolean },
  ): Promise<{ bytes: number }>;
  restore(id: string, opts: RestoreOptions): Promise<RestoreResult>;
  commit(id: string): Promise<void>;
  /** One range of a large image file (parallel streams); the destination answers with the CRC-32 it computed. */
  sendRange(
    id: string,
    r: FileRange,
    body: Readable,
    opts?: { sparse?: boolean },
  ): Promise<{ crc: number; bytes: number }>;
  /** Pre-copy: pages the destination does not have yet (raw 4 KiB blocks). */
  sendBlocks(id: string, body: Readable): Promise<{ pages: number; added: number }>;
  /** Sends `bytes` of filler to the destination and returns the measured rate in bytes/s (for `auto`). */
  measureRate(bytes: number): Promise<number>;
  /** Post-copy: waits until the destination's lazy-pages daemon is done; did every page arrive? */
  pagesResult(id: string): Promise<{ ok: boolean; message: string }>;
  abort(id: string): Promise<void>;
}
