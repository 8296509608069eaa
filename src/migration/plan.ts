// Planning: which strategy a migration uses, decided before anything is touched.
import { FerryError } from '../core/errors.ts';
import { STRATEGIES, type StrategyName, type StrategySupport } from './capabilities.ts';

export interface PlanInput {
  requested: StrategyName | 'auto';
  /** The container's memory in use (cgroup), for `auto`. */
  memoryBytes?: number;
  /** The downtime budget `auto` plans against (`--max-downtime`). */
  maxDowntimeMs?: number;
  /** Measured image transfer rate to this destination (bytes/s), when a previous migration measured it. */
  transferRate?: number;
  source: Record<StrategyName, StrategySupport>;
  destination: Record<StrategyName, StrategySupport>;
  sourceHost: string;
  destinationHost: string;
}

export interface Plan {
  strategy: StrategyName;
  reason: string;
}

export const DEFAULT_MAX_DOWNTIME_MS = 500;
/** Freeze cost that does not depend on memory (pause, dump and restore of a tiny container, agent round trips), measured here. */
const FIXED_FREEZE_MS = 300;
/** CRIU writes and reads memory at roughly 1 GB/s here (ANCHORS.md); the image crosses the link once. */
const DUMP_RESTORE_RATE = 1e9;
const DEFAULT_TRANSFER_RATE = 250e6;

export function estimateColdFreezeMs(memoryBytes: number, transferRate = DEFAULT_TRANSFER_RATE): number {
  return Math.round(
    FIXED_FREEZE_MS + (memoryBytes / transferRate) * 1000 + ((2 * memoryBytes) / DUMP_RESTORE_RATE) * 1000,
  );
}

export function estimatePostcopyFreezeMs(): number {
  return FIXED_FREEZE_MS + 50;
}

function why(s: StrategyName, p: PlanInput): string | undefined {
  const a = p.source[s];
  const b = p.destination[s];
  if (!a?.ok) return `${p.sourceHost}: ${a?.why ?? 'unsupported'}`;
  if (!b?.ok) return `${p.destinationHost}: ${b?.why ?? 'unsupported'}`;
  return undefined;
}

export function planStrategy(p: PlanInput): Plan {
  const usable = STRATEGIES.filter((s) => !why(s, p));
  for (const [host, caps] of [
    [p.sourceHost, p.source],
    [p.destinationHost, p.destination],
  ] as const) {
    const cold = caps.cold;
    if (cold && !cold.ok && /CRIU .* is older than/.test(cold.why ?? '')) {
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
  const cold = estimateColdFreezeMs(mem, p.transferRate);
  const mib = (mem / (1 << 20)).toFixed(0);
  if (usable.includes('cold') && cold <= budget) {
    return {
      strategy: 'cold',
      reason: `auto: cold fits the ${budget} ms budget (${mib} MiB, estimated freeze ${cold} ms)`,
    };
  }
  if (usable.includes('postcopy')) {
    return {
      strategy: 'postcopy',
      reason: `auto: cold would freeze ~${cold} ms for ${mib} MiB, over the ${budget} ms budget; post-copy freezes ~${estimatePostcopyFreezeMs()} ms whatever the memory`,
    };
  }
  if (usable.includes('precopy')) {
    return {
      strategy: 'precopy',
      reason: `auto: cold would freeze ~${cold} ms for ${mib} MiB, over the ${budget} ms budget, and post-copy is not possible (${why('postcopy', p)}); pre-copy moves the memory before the freeze`,
    };
  }
  if (usable.includes('cold')) {
    return {
      strategy: 'cold',
      reason: `auto: cold (estimated freeze ${cold} ms, over the ${budget} ms budget) because post-copy is not possible: ${why('postcopy', p)}`,
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
