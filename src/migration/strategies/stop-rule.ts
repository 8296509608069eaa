// When pre-copy stops its rounds and switches over (QEMU's rule, as phaul's isLastIter): pure, so it is tested alone.
import { MIN_ROUND_RATE_BYTES_PER_MS } from '../defaults.ts';

export interface RoundFacts {
  /** The round just finished, from 1. */
  round: number;
  /** Bytes each round so far had to send, this one last. */
  roundBytes: readonly number[];
  /** The rate this round's send measured (bytes per ms). */
  rateBytesPerMs: number;
  /** The downtime budget the last round must fit (ms). */
  budgetMs: number;
  /** `--threshold`: replaces the budget when set (bytes). */
  thresholdBytes?: number | undefined;
  maxRounds: number;
}

export type StopDecision = { stop: false } | { stop: true; reason: string };

/**
 * Stops when what this round sent fits the budget at the measured rate (or `--threshold`), when the dirty set
 * stopped shrinking (not 10 % below the round before), or at `--max-rounds`; checked in that order.
 */
export function stopRule(f: RoundFacts): StopDecision {
  const bytes = f.roundBytes[f.roundBytes.length - 1] ?? 0;
  const rate = Math.max(f.rateBytesPerMs, MIN_ROUND_RATE_BYTES_PER_MS);
  const budget = f.thresholdBytes ?? rate * f.budgetMs;
  if (bytes <= budget) {
    return {
      stop: true,
      reason:
        f.thresholdBytes !== undefined
          ? `round ${f.round}: ${bytes} bytes <= --threshold`
          : `round ${f.round}: ${bytes} bytes fit the ${f.budgetMs} ms budget`,
    };
  }
  const prev = f.roundBytes[f.roundBytes.length - 2];
  if (prev !== undefined && bytes > prev * 0.9) {
    return {
      stop: true,
      reason: `round ${f.round}: the dirty set stopped shrinking (${prev} -> ${bytes} bytes)`,
    };
  }
  if (f.round >= f.maxRounds) return { stop: true, reason: `--max-rounds ${f.maxRounds} reached` };
  return { stop: false };
}
