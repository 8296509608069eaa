// The engine's port to the destination: implemented over HTTP by the agent, by fakes in unit tests.
import type { Readable } from 'node:stream';
import type { CapabilitiesReport, IncomingRequest, RestoreOptions, RestoreResult } from '../api/types.ts';
import type { FileRange } from '../transport/ranges.ts';

export type {
  CapabilitiesReport,
  IncomingRequest,
  IncomingState,
  MigrationEvent,
  MigrationPhase,
  MigrationReport,
  MigrationRequest,
  ProgressUpdate,
  RestoreOptions,
  RestoreResult,
  StrategyName,
  StrategySupport,
} from '../api/types.ts';

/** The destination as the source sees it; implemented over HTTP by the agent, by fakes in unit tests. */
export interface DestinationPeer {
  readonly name: string;
  /** Where it listens: journaled, so that a restarted source can ask it how a migration ended. */
  readonly endpoint?: { name: string; address: string; port: number };
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
    /** bytes: the files' bytes written there; wireBytes, when compressed: what crossed the link. */
  ): Promise<{ bytes: number; wireBytes?: number }>;
  /**
   * Optional (the HTTP peer; fakes need not), a held switchover (decision 11): right before the freeze the
   * destination primes a hold that queues the container's packets; `announce`, once the source is locked, moves
   * the address there. The commit delivers what was held; an abort drops it.
   */
  hold?(id: string): Promise<void>;
  announce?(id: string): Promise<void>;
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
  /**
   * Where the destination stands on a migration: committed (it runs the container as its own), uncommitted (it
   * holds a reservation or an uncommitted copy), unknown (nothing of it there: never prepared, aborted, or
   * dropped at its commit deadline). Throws when the destination cannot be asked.
   */
  status(id: string): Promise<'committed' | 'uncommitted' | 'unknown'>;
}
