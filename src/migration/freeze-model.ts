// The freeze a strategy will cost, and the calibration that keeps the prediction honest: each migration's measured
// freeze is fed back (per destination), so the next plan predicts from what this pair of hosts really does under
// its present load instead of from constants measured once on another machine.
import type { StrategyName } from './capabilities.ts';
import { DEFAULT_TRANSFER_RATE } from './defaults.ts';

/** What the prediction is made of; `calibrated()` derives it from measured freezes. */
export interface FreezeModel {
  /** Cold's freeze without memory: lock and pause, CRIU's dump and restore of an empty container, round trips. */
  fixedMs: number;
  /** Post-copy's freeze without memory: the memory itself moves after the freeze. */
  postcopyMs: number;
  /**
   * How fast a lazy dump goes over the memory it leaves behind (bytes/s): CRIU still walks every page and pins it
   * for its page server inside the freeze, so post-copy's freeze grows a little with memory.
   */
  lazyRate: number;
  /** How fast CRIU dumps, and again restores, memory inside a cold freeze (bytes/s). */
  memoryRate: number;
  /**
   * `memoryRate` was measured by this destination's own cold moves: it then holds the link's share too (their pages
   * crossed it inside the dump), and the link probe, which measures the agents' stream rather than the page
   * server's, is left out.
   */
  memoryRateMeasured?: boolean;
}

/**
 * Before any migration to a destination was measured: an idle machine's figures (an empty container's cold
 * freeze, post-copy's, CRIU writing and reading memory at about 1 GB/s: docs/background.md). A loaded host's
 * are measured by its first migrations (`FreezeCalibration`). Post-copy's freeze and an empty container's cold
 * one are the same within their spread on the test machine (about 210-280 ms idle, 3 runs each of
 * `bench/freeze-profile.ts`): both are a dump without memory, a restore and the same round trips. A lazy dump took
 * about 100 ms longer at 1 GiB than at 64 MiB (93 against 195 ms, medians of 3): about 10 GB/s.
 */
export const DEFAULT_FREEZE_MODEL: FreezeModel = {
  fixedMs: 250,
  postcopyMs: 250,
  memoryRate: 1e9,
  lazyRate: 1e10,
};
const POSTCOPY_EXTRA_MS = DEFAULT_FREEZE_MODEL.postcopyMs - DEFAULT_FREEZE_MODEL.fixedMs;

/**
 * The page images stream while CRIU writes them: the slower of dump and link, then the restore. Once cold moves to
 * this destination were measured, their memory rate already holds the link's share.
 */
export function estimateColdFreezeMs(
  memoryBytes: number,
  transferRate = DEFAULT_TRANSFER_RATE,
  model: FreezeModel = DEFAULT_FREEZE_MODEL,
): number {
  const link = model.memoryRateMeasured ? Number.POSITIVE_INFINITY : transferRate;
  const dumpOrLink = Math.max(memoryBytes / link, memoryBytes / model.memoryRate);
  return Math.round(model.fixedMs + dumpOrLink * 1000 + (memoryBytes / model.memoryRate) * 1000);
}

export function estimatePostcopyFreezeMs(
  memoryBytes: number,
  model: FreezeModel = DEFAULT_FREEZE_MODEL,
): number {
  return Math.round(model.postcopyMs + (memoryBytes / model.lazyRate) * 1000);
}

/**
 * The freeze a strategy is predicted to cost. Cold and content-delta pre-copy both dump all memory inside the
 * freeze (pre-copy sends only what changed, so the link drops out); post-copy and hybrid leave memory for after it.
 */
export function predictFreezeMs(
  strategy: StrategyName,
  memoryBytes: number,
  transferRate?: number,
  model: FreezeModel = DEFAULT_FREEZE_MODEL,
): number {
  if (strategy === 'postcopy') return estimatePostcopyFreezeMs(memoryBytes, model);
  // (hybrid's lazy dump leaves only what changed since its last round: its memory is not the container's)
  if (strategy === 'hybrid') return estimatePostcopyFreezeMs(0, model);
  if (strategy === 'precopy') return estimateColdFreezeMs(memoryBytes, Number.POSITIVE_INFINITY, model);
  return estimateColdFreezeMs(memoryBytes, transferRate, model);
}

/** One finished migration's freeze, as the calibration takes it. */
export interface FreezeSample {
  strategy: StrategyName;
  memoryBytes: number;
  freezeMs: number;
}

/** Below this much memory a cold freeze measures the fixed part; above it, the memory rate too. */
const FIXED_SAMPLE_MAX_BYTES = 32 << 20;
/**
 * The last freezes kept per destination. The load of a shared host swings within minutes: on the testbed, a
 * median of the last three was within 25 % of the next freeze about twice as often as one of the last five, and
 * one outlier still does not move it.
 */
const KEPT = 3;

/**
 * The freezes measured to one destination, and the model they give. Cold and post-copy feed one series for the
 * fixed part (post-copy's freeze is cold's fixed part and a little more: its memory moves after the freeze), so a
 * destination that `auto` sends only post-copy for keeps following the load for cold too.
 */
export class FreezeCalibration {
  private readonly fixed: number[] = [];
  private readonly rates: number[] = [];

  add(s: FreezeSample): void {
    if (!(s.freezeMs > 0)) return;
    if (s.strategy === 'postcopy' || s.strategy === 'hybrid') {
      // less the lazy dump's walk over the memory, at the idle rate: a load slows the fixed part far more (process
      // starts, round trips), and learning the rate too would need freezes of several sizes to one destination
      const lazyMs = s.strategy === 'postcopy' ? (s.memoryBytes * 1000) / DEFAULT_FREEZE_MODEL.lazyRate : 0;
      keep(this.fixed, s.freezeMs - POSTCOPY_EXTRA_MS - lazyMs);
    } else if (s.strategy === 'cold') {
      if (s.memoryBytes < FIXED_SAMPLE_MAX_BYTES) {
        keep(this.fixed, s.freezeMs - (2 * s.memoryBytes * 1000) / this.model().memoryRate);
      } else {
        // the memory's share of the freeze: what it took beyond the fixed part, dumped once and restored once
        const memoryMs = s.freezeMs - this.model().fixedMs;
        if (memoryMs > 0) keep(this.rates, (2 * s.memoryBytes * 1000) / memoryMs);
      }
    }
    // (pre-copy's freeze depends on what changed since its last round: it teaches neither part)
  }

  model(): FreezeModel {
    const fixedMs = this.fixed.length ? median(this.fixed) : DEFAULT_FREEZE_MODEL.fixedMs;
    return {
      fixedMs,
      postcopyMs: fixedMs + POSTCOPY_EXTRA_MS,
      memoryRate: this.rates.length ? median(this.rates) : DEFAULT_FREEZE_MODEL.memoryRate,
      lazyRate: DEFAULT_FREEZE_MODEL.lazyRate,
      ...(this.rates.length ? { memoryRateMeasured: true } : {}),
    };
  }
}

function keep(xs: number[], x: number): void {
  xs.push(Math.max(0, x));
  if (xs.length > KEPT) xs.shift();
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
