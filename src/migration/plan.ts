// Planning: which strategy a migration uses, decided before anything is touched.
import { FerryError } from '../core/errors.ts';
import { STRATEGIES, type StrategyName, type StrategySupport } from './capabilities.ts';

export interface PlanInput {
  requested: StrategyName | 'auto';
  source: Record<StrategyName, StrategySupport>;
  destination: Record<StrategyName, StrategySupport>;
  sourceHost: string;
  destinationHost: string;
}

export interface Plan {
  strategy: StrategyName;
  reason: string;
}

/** Preference of `auto` when several strategies work; refined by issue-level measurements later. */
const AUTO_ORDER: StrategyName[] = ['cold'];

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
  const pick = AUTO_ORDER.find((s) => usable.includes(s));
  if (!pick) {
    const reasons = STRATEGIES.map((s) => `${s}: ${why(s, p)}`).join('; ');
    throw new FerryError(
      'FERRY_E_PLAN_STRATEGY',
      `no migration strategy works between these hosts (${reasons})`,
      {
        phase: 'plan',
      },
    );
  }
  return {
    strategy: pick,
    reason: `auto: ${pick} is the fastest strategy both hosts support in this version`,
  };
}
