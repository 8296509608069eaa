// StrategyName -> a new strategy object for one migration. Pre-copy takes the source's way of finding what changed.
import type { StrategyName, StrategySupport } from '../types.ts';
import { type ColdDeps, ColdStrategy } from './cold.ts';
import { HybridStrategy } from './hybrid.ts';
import { type PostcopyDeps, PostcopyStrategy } from './postcopy.ts';
import { PrecopyDeltaStrategy } from './precopy-delta.ts';
import { PrecopySoftDirtyStrategy } from './precopy-softdirty.ts';
import type { Strategy } from './strategy.ts';

export interface StrategyDeps {
  postcopy?: PostcopyDeps | undefined;
  /** Cold's pages to the destination's CRIU page server; undefined: they stream as ranges. */
  cold?: ColdDeps | undefined;
}

/** `support`: what the source's own assessment says about this strategy. */
export type StrategyFactory = (deps: StrategyDeps, support: StrategySupport | undefined) => Strategy;

export const STRATEGY_FACTORIES: Record<StrategyName, StrategyFactory> = {
  cold: (deps) => new ColdStrategy(deps.cold),
  precopy: (_deps, support) =>
    support?.precopyMode === 'softdirty' ? new PrecopySoftDirtyStrategy() : new PrecopyDeltaStrategy(),
  postcopy: (deps) => new PostcopyStrategy(deps.postcopy),
  hybrid: (deps) => new HybridStrategy(deps.postcopy),
};

export function createStrategy(
  name: StrategyName,
  deps: StrategyDeps,
  local: Record<StrategyName, StrategySupport>,
): Strategy {
  return STRATEGY_FACTORIES[name](deps, local[name]);
}
