// Every default the engine plans and migrates with, in one place: the request's options fall back to these, the
// planner estimates with them, and the api re-exports what the CLI's help shows.
import { cpus } from 'node:os';
import { PAGE_SERVER_PORTS } from '../api/schemas.ts';

/**
 * The downtime budget `auto` plans against and pre-copy's rounds aim at (`--max-downtime`): QEMU's default
 * downtime limit for a live migration. A cold move that fits it keeps the container whole on one host; where
 * post-copy would freeze for much less (POSTCOPY_MIN_GAIN, POSTCOPY_MIN_SAVING_MS) `auto` takes post-copy anyway.
 */
export const DEFAULT_MAX_DOWNTIME_MS = 300;
/** Pre-copy rounds before the switchover at the latest (`--max-rounds`). */
export const DEFAULT_MAX_ROUNDS = 5;
/** Pre-copy rounds `auto` accepts in its estimate; a plan needing more is treated as not converging. */
export const AUTO_MAX_ROUNDS = 8;
/**
 * `auto` takes post-copy over cold only when its predicted freeze is below this share of cold's and at least
 * POSTCOPY_MIN_SAVING_MS shorter: post-copy splits the memory between the hosts until its last page, which a few
 * milliseconds do not pay for (an empty container's cold freeze and post-copy's are about the same), while halving
 * the freeze does even where cold fits the budget (64 MiB on the test machine: cold about 290 ms, post-copy about
 * 140, its window a fraction of a second).
 */
export const POSTCOPY_MIN_GAIN = 0.9;
/** See POSTCOPY_MIN_GAIN: the least freeze (ms) post-copy must save against cold before `auto` takes it. */
export const POSTCOPY_MIN_SAVING_MS = 50;
/**
 * Parallel connections for large image files: each is a TLS stream hashed and written by one core, so they pay off
 * with cores to spare; on a 2-core host (this testbed: both agents share them) they only add overhead (measured:
 * 256 MiB in ~900 ms with 4 ranges vs ~820 ms with one stream).
 */
export const DEFAULT_STREAMS = Math.min(4, Math.max(1, cpus().length - 1));
/** `--compress auto` turns zstd on below this measured link rate (zstd level 1 runs at several hundred MB/s). */
export const COMPRESS_BELOW_BYTES_PER_S = 100e6;
/**
 * CRIU's page servers (post-copy's on the source, cold's on the destination) listen on a port picked at random in
 * [base, base + span); the agents' request schema holds the range.
 */
export const PAGE_SERVER_PORT_BASE = PAGE_SERVER_PORTS.base;
export const PAGE_SERVER_PORT_SPAN = PAGE_SERVER_PORTS.span;
/** The link rate the planner assumes when no migration to that destination has measured it (bytes/s). */
export const DEFAULT_TRANSFER_RATE = 250e6;
/** A pre-copy round's measured rate is taken as at least this (bytes per ms): tiny rounds time badly. */
export const MIN_ROUND_RATE_BYTES_PER_MS = 50_000;
/** `auto` measures the link and the dirty rate only for containers at least this large (smaller ones go cold). */
export const AUTO_MEASURE_MIN_BYTES = 8 << 20;
/** A transfer at least this large measures the link well enough for the next plan to this destination. */
export const RATE_SAMPLE_MIN_BYTES = 16 << 20;
/** The filler `auto` sends to measure the link. */
export const LINK_PROBE_BYTES = 4 << 20;

/**
 * How long a destination keeps a restored copy that was not committed before it kills it on its own, counted
 * from the restore request (a restore still running then is killed). A source that cannot reach its destination
 * after asking for the restore waits this long before thawing, so the container never runs twice (decision 9).
 * As long as the freeze's ceiling: a restore that could still be confirmed is never cut short. Agent config:
 * `deadlines.commitMs`.
 */
export const DEFAULT_COMMIT_DEADLINE_MS = 120_000;

/**
 * The freeze's hard ceiling: a final dump still running this long after the container was frozen is killed and
 * the container thawed (a stuck CRIU must never leave it paused). Agent config: `deadlines.freezeMs`.
 */
export const DEFAULT_FREEZE_CEILING_MS = 120_000;

/**
 * The deadlines of the phases before the freeze (ms): past one, the phase fails and the migration rolls back (the
 * container never stopped). Agent config: `deadlines.prepareMs`, `deadlines.roundsMs`.
 */
export const DEFAULT_PREPARE_DEADLINE_MS = 120_000;
export const DEFAULT_ROUNDS_DEADLINE_MS = 600_000;

/**
 * Liveness between agents: a request or a stream to a peer that makes no progress this long (no byte either way,
 * or, while a long answer is awaited, no answer to a health check) fails with FERRY_E_PEER_TIMEOUT, which rolls the
 * migration back. A dead link is then found within seconds, not at a phase's deadline. Agent config:
 * `deadlines.stallMs`.
 */
export const DEFAULT_STALL_MS = 10_000;

/** Every phase deadline the engine keeps (the agent config's `deadlines`, defaults above). */
export interface Deadlines {
  commitMs: number;
  freezeMs: number;
  prepareMs: number;
  roundsMs: number;
  stallMs: number;
}

export const DEFAULT_DEADLINES: Deadlines = {
  commitMs: DEFAULT_COMMIT_DEADLINE_MS,
  freezeMs: DEFAULT_FREEZE_CEILING_MS,
  prepareMs: DEFAULT_PREPARE_DEADLINE_MS,
  roundsMs: DEFAULT_ROUNDS_DEADLINE_MS,
  stallMs: DEFAULT_STALL_MS,
};

/** A request's options with every default applied: resolved once, read by the phases and the strategies. */
export interface MigrationOptions {
  maxDowntimeMs: number;
  maxRounds: number;
  thresholdBytes: number | undefined;
  /** zstd on the image stream (decided at plan time from `--compress` and the measured link). */
  compress: boolean;
  /** Parallel connections for large image files (one when compressing). */
  streams: number;
}

export function resolveOptions(
  req: {
    maxDowntimeMs?: number;
    maxRounds?: number;
    thresholdBytes?: number;
    streams?: number;
    compress?: string;
  },
  linkRate: number | undefined,
): MigrationOptions {
  const compress =
    req.compress === 'on' ||
    (req.compress !== 'off' && linkRate !== undefined && linkRate < COMPRESS_BELOW_BYTES_PER_S);
  return {
    maxDowntimeMs: req.maxDowntimeMs ?? DEFAULT_MAX_DOWNTIME_MS,
    maxRounds: req.maxRounds ?? DEFAULT_MAX_ROUNDS,
    thresholdBytes: req.thresholdBytes,
    compress,
    streams: compress ? 1 : (req.streams ?? DEFAULT_STREAMS),
  };
}

/**
 * How often a running phase reports its progress (ms). The dump's figure is read from the image directory during
 * the freeze, so not more often than this (a readdir and a stat per image file); post-copy's from its socket.
 */
export const PROGRESS_EVERY_MS = { checkpoint: 500, transfer: 250, pages: 500 } as const;
