// What this host can do for checkpoint/restore: the facts probed from CRIU, runc and the kernel, and the flags (each
// with its reason) they amount to. The agent reports them; `ferry check` can gather them locally the same way.
import { readFile } from 'node:fs/promises';
import { release } from 'node:os';
import { CRIU_FEATURES, CRIU_MIN_VERSION, type Criu, compareVersions } from './criu.ts';
import { installedLibrary, PRELOAD_LIBRARIES, type PreloadName } from './criu-preload.ts';
import { type KdatState, kdatState } from './kdat.ts';
import type { Runc } from './runc.ts';

/** Post-copy moves pages through pipes of this size (CRIU's lazy-pages daemon). */
export const PIPE_MAX_NEEDED = 4 * 1024 * 1024;

/**
 * The conntrack table size past which `ferry check` names its cost. Every CRIU dump asks the kernel for the
 * container's connection-tracking entries twice (CRIU's conntrack and "expectation" requests are the same one), and
 * the kernel walks the whole global table for each, however few entries there are: on the test machine 9 ms per
 * walk at 262144 buckets (its default for 24 GiB), 0.6 ms at 16384, all of it inside the freeze.
 */
export const CONNTRACK_BUCKETS_NOTED = 65536;

/** One thing the host can or cannot do, and why not. */
export interface Flag {
  ok: boolean;
  why?: string;
}

/** Why CRIU cannot be used at all (the planner turns 'criu-too-old' into its own error). */
export type CriuProblem = 'criu-missing' | 'criu-too-old' | 'runc-missing' | 'not-root' | 'criu-check-failed';

export interface HostFlags {
  /** CRIU is installed, recent enough, and `criu check` passes (with runc and root: checkpoints work at all). */
  criu: Flag & { version?: string; code?: CriuProblem };
  runc: Flag & { version?: string };
  root: Flag;
  /** The kernel tracks dirty memory (soft-dirty): pre-dump rounds are cheap and chain to a parent. */
  softDirty: Flag;
  /** userfaultfd: the destination can fault pages in lazily. */
  uffd: Flag;
  /** fs.pipe-max-size is large enough for the lazy-pages daemon. */
  pipeMaxSize: Flag & { value: number };
  /** CRIU can lock the network with nftables. */
  nftables: Flag;
  /** The conntrack table is small enough that CRIU's two walks of it cost the freeze little (not ok: they do). */
  conntrack: Flag;
}

/** One library ferry preloads into CRIU, as the host has it; `without`: what a host without it pays. */
export interface CriuLibraryFact {
  name: PreloadName;
  path: string;
  installed: boolean;
  without: string;
}

/** What an agent reports of its host; the api re-exports it as part of the wire contract (api/types.ts). */
export interface HostFacts {
  host: string;
  kernel: string;
  criuVersion?: string;
  runcVersion?: string;
  criuCheck: { ok: boolean; message: string };
  features: Record<string, { ok: boolean; message: string }>;
  pipeMaxSize: number;
  /** net.netfilter.nf_conntrack_buckets, when the kernel tracks connections (CONNTRACK_BUCKETS_NOTED). */
  conntrackBuckets?: number;
  kdat?: KdatState;
  /** The libraries ferry preloads into CRIU (criu-preload.ts): each one's path, whether it is there, its cost. */
  criuLibraries?: CriuLibraryFact[];
  root: boolean;
  capabilities?: Record<string, boolean>;
  flags?: HostFlags;
}

const feature = (f: HostFacts, name: string, why: string): Flag =>
  f.features[name]?.ok === true ? { ok: true } : { ok: false, why };

/** The flags the facts amount to: pure, the one place that reads CRIU's and the kernel's answers. */
export function hostFlags(f: HostFacts): HostFlags {
  const runc: HostFlags['runc'] = f.runcVersion
    ? { ok: true, version: f.runcVersion }
    : { ok: false, why: 'runc is not installed' };
  const root: Flag = f.root ? { ok: true } : { ok: false, why: 'not running as root' };
  let criu: HostFlags['criu'];
  if (!f.criuVersion) criu = { ok: false, code: 'criu-missing', why: 'criu is not installed' };
  else if (compareVersions(f.criuVersion, CRIU_MIN_VERSION) < 0) {
    criu = {
      ok: false,
      version: f.criuVersion,
      code: 'criu-too-old',
      why: `CRIU ${f.criuVersion} is older than ${CRIU_MIN_VERSION} (older versions cannot dump inet sockets on new kernels)`,
    };
  } else if (!runc.ok)
    criu = { ok: false, version: f.criuVersion, code: 'runc-missing', why: runc.why ?? '' };
  else if (!root.ok) criu = { ok: false, version: f.criuVersion, code: 'not-root', why: root.why ?? '' };
  else if (!f.criuCheck.ok) {
    criu = {
      ok: false,
      version: f.criuVersion,
      code: 'criu-check-failed',
      why: `criu check failed: ${f.criuCheck.message}`,
    };
  } else criu = { ok: true, version: f.criuVersion };
  const pipeOk = f.pipeMaxSize >= PIPE_MAX_NEEDED;
  return {
    criu,
    runc,
    root,
    softDirty: feature(f, 'mem_dirty_track', 'the kernel lacks soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY)'),
    uffd: feature(f, 'uffd', 'the kernel lacks userfaultfd (CONFIG_USERFAULTFD)'),
    pipeMaxSize: pipeOk
      ? { ok: true, value: f.pipeMaxSize }
      : {
          ok: false,
          value: f.pipeMaxSize,
          why: `fs.pipe-max-size is ${f.pipeMaxSize}, post-copy needs at least ${PIPE_MAX_NEEDED} (sysctl -w fs.pipe-max-size=${PIPE_MAX_NEEDED})`,
        },
    nftables: feature(f, 'network_lock_nftables', 'CRIU cannot lock the network with nftables'),
    conntrack: conntrackFlag(f),
  };
}

function conntrackFlag(f: HostFacts): Flag {
  if ((f.conntrackBuckets ?? 0) <= CONNTRACK_BUCKETS_NOTED) return { ok: true };
  const setting =
    'a host that tracks few connections can take sysctl -w net.netfilter.nf_conntrack_buckets=16384 (docs/install.md)';
  // with the library, only a container whose own namespace tracks connections (its rules use conntrack) pays
  if (f.criuLibraries?.find((l) => l.name === 'conntrack')?.installed)
    return {
      ok: true,
      why:
        'CRIU walks the whole table twice in a dump of a container whose namespace tracks connections, inside the ' +
        `freeze (9 ms a walk at 262144 buckets on the test machine; the others skip it); ${setting}`,
    };
  return {
    ok: false,
    why:
      'CRIU walks the whole table twice in every dump, inside the freeze (9 ms a walk at 262144 buckets on the test ' +
      `machine; the CRIU conntrack library skips it for a namespace that tracks nothing); ${setting}`,
  };
}

async function readNumber(path: string): Promise<number> {
  try {
    return Number.parseInt((await readFile(path, 'utf8')).trim(), 10) || 0;
  } catch {
    return 0;
  }
}

/** Probes this host (CRIU's checks take a few hundred milliseconds: callers memoise). */
export async function gatherFacts(
  host: string,
  criu: Pick<Criu, 'version' | 'checkBasic' | 'checkFeature'>,
  runc: Pick<Runc, 'version'>,
): Promise<HostFacts> {
  const [criuVersion, runcVersion, basic, pipeMaxSize, conntrackBuckets] = await Promise.all([
    criu.version(),
    runc.version().catch(() => undefined),
    criu.checkBasic().catch((e: Error) => ({ ok: false, message: e.message })),
    readNumber('/proc/sys/fs/pipe-max-size'),
    readNumber('/proc/sys/net/netfilter/nf_conntrack_buckets'),
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
    criuLibraries: (
      Object.entries(PRELOAD_LIBRARIES) as [PreloadName, { path: string; without: string }][]
    ).map(([name, lib]) => ({ name, ...lib, installed: installedLibrary(lib.path) !== undefined })),
    root: process.getuid?.() === 0,
  };
  if (criuVersion) facts.criuVersion = criuVersion;
  if (runcVersion) facts.runcVersion = runcVersion;
  if (conntrackBuckets > 0) facts.conntrackBuckets = conntrackBuckets;
  facts.flags = hostFlags(facts);
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
