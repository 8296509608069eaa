// The agent's view of this host's capabilities: gathered once (runtime/host-facts.ts), assessed by the engine.
import { assessStrategies } from '../migration/capabilities.ts';
import type { CapabilitiesReport } from '../migration/types.ts';
import type { HostFacts } from '../runtime/host-facts.ts';

export { effectiveCapabilities, gatherFacts } from '../runtime/host-facts.ts';

/** Memoises the facts: CRIU's checks take a few hundred milliseconds. */
export function capabilitiesOnce(gather: () => Promise<HostFacts>): () => Promise<CapabilitiesReport> {
  let p: Promise<CapabilitiesReport> | undefined;
  return () => {
    p ??= gather().then((facts) => ({ facts, strategies: assessStrategies(facts) }));
    p.catch(() => {
      p = undefined;
    });
    return p;
  };
}
