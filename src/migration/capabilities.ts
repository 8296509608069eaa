// What a host can do, and which strategies follow from it. Pure: the agent gathers the facts.
import type { HostFacts, StrategyName, StrategySupport } from '../api/types.ts';
import { CRIU_MIN_VERSION, compareVersions } from '../runtime/criu.ts';

export type { HostFacts, StrategyName, StrategySupport };

export const STRATEGIES: StrategyName[] = ['cold', 'precopy', 'postcopy', 'hybrid'];

export const PIPE_MAX_NEEDED = 4 * 1024 * 1024;
/** Strategies this version of ferry implements; the others are reported as not yet available. */
export const IMPLEMENTED: ReadonlySet<StrategyName> = new Set(['cold', 'postcopy', 'precopy', 'hybrid']);

export function criuUsable(f: HostFacts): { ok: boolean; why?: string } {
  if (!f.criuVersion) return { ok: false, why: 'criu is not installed' };
  if (compareVersions(f.criuVersion, CRIU_MIN_VERSION) < 0) {
    return {
      ok: false,
      why: `CRIU ${f.criuVersion} is older than ${CRIU_MIN_VERSION} (older versions cannot dump inet sockets on new kernels)`,
    };
  }
  if (!f.runcVersion) return { ok: false, why: 'runc is not installed' };
  if (!f.root) return { ok: false, why: 'not running as root' };
  if (!f.criuCheck.ok) return { ok: false, why: `criu check failed: ${f.criuCheck.message}` };
  return { ok: true };
}

export function assessStrategies(f: HostFacts): Record<StrategyName, StrategySupport> {
  const base = criuUsable(f);
  const out = {} as Record<StrategyName, StrategySupport>;
  const uffd = f.features['uffd']?.ok === true;
  const dirty = f.features['mem_dirty_track']?.ok === true;
  const pipeOk = f.pipeMaxSize >= PIPE_MAX_NEEDED;
  const postcopyWhy = !uffd
    ? 'the kernel lacks userfaultfd (CONFIG_USERFAULTFD)'
    : !pipeOk
      ? `fs.pipe-max-size is ${f.pipeMaxSize}, post-copy needs at least ${PIPE_MAX_NEEDED} (sysctl -w fs.pipe-max-size=${PIPE_MAX_NEEDED})`
      : undefined;
  for (const s of STRATEGIES) {
    if (!base.ok) {
      out[s] = { ok: false, why: base.why ?? 'CRIU unusable' };
      continue;
    }
    let support: StrategySupport;
    switch (s) {
      case 'cold':
        support = { ok: true, mode: 'dump, stream, restore' };
        break;
      case 'precopy':
        support = {
          ok: true,
          mode: dirty
            ? 'soft-dirty pre-dump rounds chained with --parent-path'
            : 'content delta (no soft-dirty tracking)',
        };
        break;
      case 'postcopy':
        support = postcopyWhy
          ? { ok: false, why: postcopyWhy }
          : { ok: true, mode: 'lazy pages over userfaultfd' };
        break;
      case 'hybrid':
        // the lazy final dump can only leave out what earlier rounds hold if CRIU knows them: soft-dirty
        // pre-dump images as its parent; content-delta rounds are invisible to CRIU's page server
        support = postcopyWhy
          ? { ok: false, why: `post-copy part unavailable: ${postcopyWhy}` }
          : !dirty
            ? {
                ok: false,
                why: 'needs soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY) to chain pre-dump rounds to a lazy final dump; use precopy (content delta) or postcopy',
              }
            : { ok: true, mode: 'soft-dirty pre-dump rounds, then lazy pages for the rest' };
        break;
    }
    if (support.ok && !IMPLEMENTED.has(s)) {
      support = {
        ok: false,
        why: `not implemented in ferry ${'0.1'} yet (the host would support: ${support.mode})`,
      };
    }
    out[s] = support;
  }
  return out;
}
