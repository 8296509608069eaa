// Which strategies a host's flags allow (runtime/host-facts.ts gathers and flags the facts). Pure.
import type { HostFacts, StrategyName, StrategySupport } from '../api/types.ts';
import { hostFlags } from '../runtime/host-facts.ts';

export type { HostFacts, StrategyName, StrategySupport };
export { PIPE_MAX_NEEDED } from '../runtime/host-facts.ts';

export const STRATEGIES: StrategyName[] = ['cold', 'precopy', 'postcopy', 'hybrid'];

/** Whether CRIU can be used at all on this host, and why not. */
export function criuUsable(f: HostFacts): { ok: boolean; why?: string } {
  const { criu } = hostFlags(f);
  return criu.ok ? { ok: true } : { ok: false, why: criu.why ?? 'CRIU unusable' };
}

export function assessStrategies(f: HostFacts): Record<StrategyName, StrategySupport> {
  // computed from the raw facts every time: one rule for this host's and for a peer's report
  const flags = hostFlags(f);
  const postcopyNot: StrategySupport | undefined = !flags.uffd.ok
    ? { ok: false, code: 'no-uffd', why: flags.uffd.why ?? '' }
    : !flags.pipeMaxSize.ok
      ? { ok: false, code: 'pipe-too-small', why: flags.pipeMaxSize.why ?? '' }
      : undefined;
  const softDirty = flags.softDirty.ok;
  const support: Record<StrategyName, StrategySupport> = {
    cold: { ok: true, mode: 'dump, stream, restore' },
    precopy: softDirty
      ? { ok: true, precopyMode: 'softdirty', mode: 'soft-dirty pre-dump rounds chained with --parent-path' }
      : { ok: true, precopyMode: 'delta', mode: 'content delta (no soft-dirty tracking)' },
    postcopy: postcopyNot ?? { ok: true, mode: 'lazy pages over userfaultfd' },
    // the lazy final dump can only leave out what earlier rounds hold if CRIU knows them: soft-dirty pre-dump
    // images as its parent; content-delta rounds are invisible to CRIU's page server
    hybrid: postcopyNot
      ? { ...postcopyNot, why: `post-copy part unavailable: ${postcopyNot.why}` }
      : !softDirty
        ? {
            ok: false,
            code: 'no-soft-dirty',
            why: 'needs soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY) to chain pre-dump rounds to a lazy final dump; use precopy (content delta) or postcopy',
          }
        : {
            ok: true,
            precopyMode: 'softdirty',
            mode: 'soft-dirty pre-dump rounds, then lazy pages for the rest',
          },
  };
  const out = {} as Record<StrategyName, StrategySupport>;
  for (const s of STRATEGIES) {
    out[s] = flags.criu.ok
      ? support[s]
      : {
          ok: false,
          why: flags.criu.why ?? 'CRIU unusable',
          ...(flags.criu.code ? { code: flags.criu.code } : {}),
        };
  }
  return out;
}
