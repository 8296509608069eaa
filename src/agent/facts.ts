// Gathers this host's facts (CRIU, runc, kernel features) once; strategies follow from them.
import { readFile } from 'node:fs/promises';
import { release } from 'node:os';
import { assessStrategies, type HostFacts } from '../migration/capabilities.ts';
import type { CapabilitiesReport } from '../migration/types.ts';
import { CRIU_FEATURES, type Criu } from '../runtime/criu.ts';
import { kdatState } from '../runtime/kdat.ts';
import type { Runc } from '../runtime/runc.ts';

async function readNumber(path: string): Promise<number> {
  try {
    return Number.parseInt((await readFile(path, 'utf8')).trim(), 10) || 0;
  } catch {
    return 0;
  }
}

export async function gatherFacts(host: string, criu: Criu, runc: Runc): Promise<HostFacts> {
  const [criuVersion, runcVersion, basic, pipeMaxSize] = await Promise.all([
    criu.version(),
    runc.version().catch(() => undefined),
    criu.checkBasic().catch((e: Error) => ({ ok: false, message: e.message })),
    readNumber('/proc/sys/fs/pipe-max-size'),
  ]);
  const features: HostFacts['features'] = {};
  if (criuVersion) {
    const results = await Promise.all(
      CRIU_FEATURES.map((f) => criu.checkFeature(f).catch((e: Error) => ({ ok: false, message: e.message }))),
    );
    CRIU_FEATURES.forEach((f, i) => {
      features[f] = results[i]!;
    });
  }
  const facts: HostFacts = {
    capabilities: await effectiveCapabilities(),
    host,
    kernel: release(),
    criuCheck: basic,
    features,
    pipeMaxSize,
    kdat: await kdatState(),
    root: process.getuid?.() === 0,
  };
  if (criuVersion) facts.criuVersion = criuVersion;
  if (runcVersion) facts.runcVersion = runcVersion;
  return facts;
}

const CAPS: Record<string, number> = {
  CAP_NET_ADMIN: 12,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_ADMIN: 21,
  CAP_SYS_RESOURCE: 24,
  CAP_CHECKPOINT_RESTORE: 40,
};

/** The effective capabilities that matter to CRIU and ferry, from /proc/self/status. */
export async function effectiveCapabilities(status?: string): Promise<Record<string, boolean>> {
  let text = status;
  try {
    text ??= await readFile('/proc/self/status', 'utf8');
  } catch {
    return {};
  }
  const hex = /CapEff:\s*([0-9a-f]+)/.exec(text)?.[1];
  if (!hex) return {};
  const bits = BigInt(`0x${hex}`);
  return Object.fromEntries(
    Object.entries(CAPS).map(([name, bit]) => [name, (bits & (1n << BigInt(bit))) !== 0n]),
  );
}

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
