// One migration strategy, as the engine's loop sees it. After phaul's split: what the source does (prepare, rounds,
// dump, its share of the transfer, what follows confirm, what rollback undoes) and what it asks of the destination
// (what its prepare stages, what it restores with). One object per migration: it keeps its own state.
import type { ContainerHost } from '../../host/containers.ts';
import type { StagedCheckpoint } from '../../runtime/criu-gate.ts';
import type { CheckpointOptions, LazyCheckpointOptions, StagedLazyDump } from '../../runtime/runc.ts';
import type { MigrationOptions } from '../defaults.ts';
import type { ImageSender } from '../image-sender.ts';
import type { Progress } from '../phases.ts';
import type {
  DestinationPeer,
  IncomingRequest,
  MigrationEvent,
  MigrationReport,
  MigrationRequest,
  RestoreOptions,
  StrategyName,
} from '../types.ts';

/** What a strategy works with: this migration, this host, the destination. */
export interface MigrationContext {
  readonly req: MigrationRequest;
  readonly id: string;
  /** The container. */
  readonly name: string;
  /** This migration's image directory. */
  readonly images: string;
  readonly options: MigrationOptions;
  /** Established TCP connections go along (the container has a network identity). */
  readonly tcpEstablished: boolean;
  readonly host: ContainerHost;
  readonly peer: DestinationPeer;
  readonly report: MigrationReport;
  readonly progress: Progress;
  /** Sends ranges of image files in parallel, checksummed. */
  readonly sender: ImageSender;
  readonly emit: (e: MigrationEvent) => void;
  readonly now: () => number;
  /**
   * The freeze's hard ceiling left for the final dump (ms): past it the dump is killed (a stuck CRIU never leaves
   * the container paused) and rollback thaws it.
   */
  readonly dumpTimeoutMs: number;
  /** The final dump's runc, started before the freeze (source.ts); `finalCheckpoint` releases it. */
  stagedDump?: StagedCheckpoint;
  /** A lazy dump's runc, started before the freeze (source.ts); post-copy's `dump` releases it. */
  stagedLazyDump?: StagedLazyDump;
  /** Cold between agents: the destination's page server the final dump sends its pages to (set at prepare). */
  finalDumpPages?: Pick<CheckpointOptions, 'pageServer' | 'pageServerTls'>;
}

/** A strategy's share of the transfer phase; the common streams carry the rest of the image directory. */
export interface TransferShare {
  /** Image files already sent whole in ranges (cold: while CRIU wrote them). */
  streamed: ReadonlySet<string>;
  /** Image files that travel another way (content-delta pre-copy: as recipes, their pages as blocks). */
  replaced: ReadonlySet<string>;
  /** Paths the image stream leaves out (soft-dirty rounds: the round-N directories are there already). */
  exclude?: (rel: string) => boolean;
  /** Bytes it sent itself besides the streams (pre-copy's new blocks), counted in bytesSent. */
  bytes: number;
  /** When the link started carrying the final images (cold: at the dump), for the link rate sample. */
  since?: number;
}

export interface Strategy {
  readonly name: StrategyName;
  /** Its dump is `finalCheckpoint(ctx)` without a parent: the engine may start that dump's runc before the freeze. */
  readonly plainFinalDump?: boolean;
  /** Its dump is a lazy one with these options (post-copy): the engine may start that dump's runc before the freeze. */
  lazyDumpOptions?(ctx: MigrationContext): LazyCheckpointOptions | undefined;
  /** Source, before the freeze: stage what it needs; returns what the destination's prepare carries for it. */
  prepare(ctx: MigrationContext): Promise<Pick<IncomingRequest, 'lazy' | 'pages'>>;
  /** Source, while the container runs: pre-copy rounds (the `rounds` phase); absent: none. */
  rounds?(ctx: MigrationContext): Promise<void>;
  /**
   * Source, the freeze-time checkpoint (the container is paused and its network held). `seized`: CRIU still holds
   * the tasks (post-copy's page server), so the container is gone from here whatever runc says. Otherwise the dump
   * left the tasks alive and frozen (decision 9): rollback thaws them, and after the commit they are killed.
   */
  dump(ctx: MigrationContext): Promise<{ seized: boolean }>;
  /** Source, at the start of the transfer phase: what it sends itself, and what the common streams must skip. */
  transfer(ctx: MigrationContext): Promise<TransferShare>;
  /** Destination: what it restores with, beyond the neighbours. */
  restoreOptions(): Omit<RestoreOptions, 'neighbours'>;
  /** Source, after confirm (past the point of no return): post-copy's `pages` phase. */
  afterConfirm?(ctx: MigrationContext, restoredAt: number): Promise<void>;
  /** Rollback, first: stop anything still sending to the destination (cold: the tail). */
  stopSending?(): Promise<void>;
  /** Rollback, before the source's state is read: let go of the container (post-copy: fail the page server). */
  releaseSource?(notes: string[]): Promise<void>;
  /** Rollback, last: close what prepare opened (post-copy: the fence). */
  closeStaged?(): Promise<void>;
  /** What a restarted agent needs to settle this migration, journaled with the freeze (post-copy: the port). */
  journalExtra?(): { pageServerPort?: number };
}

/**
 * The final dump every non-lazy strategy makes, on the frozen container with --leave-running: CRIU puts the cgroup
 * back as it found it, so the tasks stay alive and frozen (runc says `paused`) until the destination commits. A
 * rollback is then a thaw, never a CRIU restore of the images just written (decision 9).
 */
export async function finalCheckpoint(ctx: MigrationContext, parentPath?: string): Promise<void> {
  const staged = ctx.stagedDump;
  ctx.stagedDump = undefined;
  // the staged dump has no parent: with one it is not used, and its runc is ended before the dump's starts
  if (staged && parentPath) await staged.cancel();
  // its deadline counts from now: what is left of the freeze ceiling, not what was left at the staging
  if (staged && !parentPath) await staged.go(ctx.dumpTimeoutMs);
  else await ctx.host.runc.checkpoint(ctx.name, finalDumpOptions(ctx, parentPath));
}

/** The final dump's options, staged or not. */
export function finalDumpOptions(ctx: MigrationContext, parentPath?: string): CheckpointOptions {
  return {
    imagePath: ctx.images,
    workPath: ctx.images,
    leaveRunning: true,
    tcpEstablished: ctx.tcpEstablished,
    timeoutMs: ctx.dumpTimeoutMs,
    ...(ctx.req.skipInFlight ? { skipInFlight: true } : {}),
    ...(parentPath ? { parentPath } : (ctx.finalDumpPages ?? {})),
  };
}

/** A share of nothing: the common streams send every image file. */
export function noShare(): TransferShare {
  return { streamed: new Set(), replaced: new Set(), bytes: 0 };
}
