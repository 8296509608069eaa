// Planning: which strategy a migration uses, decided before anything is touched.
import { FerryError } from '../core/errors.ts';
import { STRATEGIES, type StrategyName, type StrategySupport } from './capabilities.ts';
import {
  AUTO_MAX_ROUNDS,
  DEFAULT_MAX_DOWNTIME_MS,
  DEFAULT_TRANSFER_RATE,
  POSTCOPY_MIN_GAIN,
  POSTCOPY_MIN_SAVING_MS,
} from './defaults.ts';
import {
  DEFAULT_FREEZE_MODEL,
  estimateColdFreezeMs,
  estimatePostcopyFreezeMs,
  type FreezeModel,
  predictFreezeMs,
} from './freeze-model.ts';

export { estimateColdFreezeMs, estimatePostcopyFreezeMs, predictFreezeMs } from './freeze-model.ts';

export interface PlanInput {
  requested: StrategyName | 'auto';
  /** The container's memory in use (cgroup), for `auto`. */
  memoryBytes?: number;
  /** The downtime budget `auto` plans against (`--max-downtime`). */
  maxDowntimeMs?: number;
  /** Measured image transfer rate to this destination (bytes/s), when a previous migration measured it. */
  transferRate?: number;
  /**
   * How fast the container touches writable memory (bytes/s; runtime/touch-rate.ts): an upper bound on its
   * dirty rate, which decides whether pre-copy rounds converge.
   */
  dirtyRate?: number;
  /** The part of it that is re-touched rather than growing (bytes): a hot set the last round must carry anyway. */
  dirtyHotBytes?: number;
  source: Record<StrategyName, StrategySupport>;
  destination: Record<StrategyName, StrategySupport>;
  sourceHost: string;
  destinationHost: string;
  /** The freezes earlier migrations to this destination measured (freeze-model.ts); the defaults without. */
  freezeModel?: FreezeModel;
}

export interface Plan {
  strategy: StrategyName;
  reason: string;
  /** The freeze predicted for `strategy` (predictFreezeMs), which the report carries beside the measured one. */
  predictedFreezeMs: number;
}

/**
 * Whether `auto`'s choice can depend on the link's rate: cold could fit the budget on a fast enough link, or
 * pre-copy is cheap here (soft-dirty) and its convergence depends on the rate. Otherwise the link is not measured.
 */
export function linkRateMatters(p: {
  memoryBytes: number;
  maxDowntimeMs: number;
  source: Record<StrategyName, StrategySupport>;
  destination: Record<StrategyName, StrategySupport>;
}): boolean {
  const coldCouldFit = estimateColdFreezeMs(p.memoryBytes, Number.POSITIVE_INFINITY) <= p.maxDowntimeMs;
  const cheapPrecopy =
    p.source.precopy?.ok === true &&
    p.destination.precopy?.ok === true &&
    p.source.precopy.precopyMode === 'softdirty';
  return coldCouldFit || cheapPrecopy;
}

/**
 * Pre-copy rounds needed until the last one fits the budget (QEMU's model): round k+1 sends what was dirtied
 * while round k was sent: the hot set plus the growth over that time. Infinity when the rounds stop shrinking
 * (the dirty rate is not below the link rate, or the hot set alone does not fit).
 */
export function precopyRounds(
  memoryBytes: number,
  dirtyRate: number,
  transferRate: number,
  budgetMs: number,
  hotBytes = 0,
): number {
  const fits = Math.max(1, ((budgetMs - DEFAULT_FREEZE_MODEL.fixedMs) / 1000) * transferRate);
  if (memoryBytes <= fits) return 1;
  let bytes = memoryBytes;
  for (let round = 2; round <= 64; round++) {
    const next = Math.min(memoryBytes, hotBytes + dirtyRate * (bytes / transferRate));
    if (next <= fits) return round;
    if (next >= bytes * 0.999) break;
    bytes = next;
  }
  return Number.POSITIVE_INFINITY;
}

function rateText(bytesPerSec: number): string {
  return `${(bytesPerSec / 1e6).toFixed(bytesPerSec < 10e6 ? 1 : 0)} MB/s`;
}

function why(s: StrategyName, p: PlanInput): string | undefined {
  const a = p.source[s];
  const b = p.destination[s];
  if (!a?.ok) return `${p.sourceHost}: ${a?.why ?? 'unsupported'}`;
  if (!b?.ok) return `${p.destinationHost}: ${b?.why ?? 'unsupported'}`;
  return undefined;
}

export function planStrategy(p: PlanInput): Plan {
  const chosen = choose(p);
  return {
    ...chosen,
    predictedFreezeMs: predictFreezeMs(chosen.strategy, p.memoryBytes ?? 0, p.transferRate, p.freezeModel),
  };
}

function choose(p: PlanInput): Omit<Plan, 'predictedFreezeMs'> {
  const usable = STRATEGIES.filter((s) => !why(s, p));
  for (const [host, caps] of [
    [p.sourceHost, p.source],
    [p.destinationHost, p.destination],
  ] as const) {
    const cold = caps.cold;
    if (cold && !cold.ok && cold.code === 'criu-too-old') {
      throw new FerryError('FERRY_E_CRIU_TOO_OLD', `host ${host}: ${cold.why}`, {
        phase: 'plan',
        hint: 'install CRIU 4.2 or newer on that host (make setup does it on Debian)',
      });
    }
  }
  if (p.requested !== 'auto') {
    const reason = why(p.requested, p);
    if (reason) {
      throw new FerryError('FERRY_E_PLAN_STRATEGY', `strategy ${p.requested} is not possible: ${reason}`, {
        phase: 'plan',
        hint: usable.length
          ? `strategies that work between these hosts: ${usable.join(', ')}`
          : 'no strategy works between these hosts',
      });
    }
    return { strategy: p.requested, reason: 'requested' };
  }
  const budget = p.maxDowntimeMs ?? DEFAULT_MAX_DOWNTIME_MS;
  const mem = p.memoryBytes ?? 0;
  const cold = estimateColdFreezeMs(mem, p.transferRate, p.freezeModel);
  const postcopy = estimatePostcopyFreezeMs(mem, p.freezeModel);
  const mib = (mem / (1 << 20)).toFixed(0);
  // post-copy splits the memory between the hosts until its last page: worth it only for a clearly shorter freeze
  const postcopyPays = postcopy <= cold * POSTCOPY_MIN_GAIN && cold - postcopy >= POSTCOPY_MIN_SAVING_MS;
  const fits = cold <= budget;
  // a budget the user gave is the freeze they accept for keeping the container whole on one host: cold while it
  // fits. Without one, the default budget only bounds cold, and a much shorter post-copy freeze wins
  if (
    usable.includes('cold') &&
    fits &&
    (p.maxDowntimeMs !== undefined || !postcopyPays || !usable.includes('postcopy'))
  ) {
    let aside = '';
    if (usable.includes('postcopy'))
      aside = postcopyPays
        ? `; the budget given keeps it whole on one host (post-copy would freeze ~${postcopy} ms)`
        : `; post-copy would not freeze much less (~${postcopy} ms)`;
    return {
      strategy: 'cold',
      reason: `auto: cold fits the ${budget} ms budget (${mib} MiB, estimated freeze ${cold} ms)${aside}`,
    };
  }
  const over = fits
    ? `cold would freeze ~${cold} ms for ${mib} MiB (within the default ${budget} ms budget), post-copy ~${postcopy} ms`
    : `cold would freeze ~${cold} ms for ${mib} MiB, over the ${budget} ms budget`;
  // over the budget either way (a slow host's fixed part alone can be): post-copy only pays where it freezes for
  // clearly less, and otherwise it would split the memory between the hosts until its last page for nothing
  if (usable.includes('cold') && !postcopyPays) {
    return {
      strategy: 'cold',
      reason: `auto: ${over}, but post-copy would not freeze much less (~${postcopy} ms) and would split the memory between the hosts until its last page`,
    };
  }
  const link = p.transferRate ?? DEFAULT_TRANSFER_RATE;
  const dirty = p.dirtyRate;
  const hot = p.dirtyHotBytes ?? 0;
  const rounds = dirty === undefined ? undefined : precopyRounds(mem, dirty, link, budget, hot);
  const converges = rounds !== undefined && rounds <= AUTO_MAX_ROUNDS;
  const dirtyText =
    dirty === undefined
      ? 'dirty rate not measured'
      : `it touches at most ${rateText(dirty)} of writable memory${hot ? ` beyond a hot set of ${(hot / 2 ** 20).toFixed(1)} MiB` : ''}, the link carries ${rateText(link)}`;
  // pre-copy keeps the whole container on the source until the switchover (no split memory, nothing to lose
  // if a host fails mid-way): preferred where its rounds are cheap (soft-dirty) and converge
  const cheapRounds = p.source.precopy?.precopyMode === 'softdirty';
  if (usable.includes('precopy') && cheapRounds && converges) {
    return {
      strategy: 'precopy',
      reason: `auto: ${over}; pre-copy converges in ~${rounds} rounds (${dirtyText}) and keeps the container whole on one host until the switchover`,
    };
  }
  if (usable.includes('postcopy')) {
    const notPre = !usable.includes('precopy')
      ? ''
      : !cheapRounds
        ? '; pre-copy rounds would each freeze it for a full dump here (no soft-dirty tracking)'
        : dirty === undefined
          ? '; its dirty rate could not be measured'
          : `; pre-copy would not converge (${dirtyText})`;
    return {
      strategy: 'postcopy',
      reason: `auto: ${over}; post-copy freezes ~${postcopy} ms, its memory moving after the freeze${notPre}`,
    };
  }
  if (usable.includes('precopy') && (converges || dirty === undefined)) {
    return {
      strategy: 'precopy',
      reason: `auto: ${over}, and post-copy is not possible (${why('postcopy', p)}); pre-copy moves the memory before the freeze (${dirtyText})`,
    };
  }
  if (usable.includes('cold')) {
    return {
      strategy: 'cold',
      reason: `auto: cold (estimated freeze ${cold} ms, over the ${budget} ms budget) because post-copy is not possible (${why('postcopy', p)})${usable.includes('precopy') ? ` and pre-copy would not converge (${dirtyText})` : ''}`,
    };
  }
  const reasons = STRATEGIES.map((s) => `${s}: ${why(s, p)}`).join('; ');
  throw new FerryError(
    'FERRY_E_PLAN_STRATEGY',
    `no migration strategy works between these hosts (${reasons})`,
    {
      phase: 'plan',
    },
  );
}
