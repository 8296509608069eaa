// The small libraries ferry preloads (LD_PRELOAD) into CRIU, each for one thing CRIU 4.2 does slowly inside the
// freeze. Each is its own C file under native/, built by `scripts/setup.sh native` into /opt/ferry/lib; ferry works
// the same without them, that much slower, and `ferry check` names the ones missing.
// - criu-uncork (native/criu-uncork.c): CRIU corks a page-server connection at both ends and sends its closing
//   request, and the answer to it, without uncorking, so the kernel holds each for its 200 ms cork ceiling. A cold
//   move's dump to the destination's page server waits for that answer inside the freeze (200 ms of freeze);
//   post-copy's lazy-pages daemon closes its connection to the lazy dump after the last page, and the window
//   (restore to last page) ends 400 ms late. And CRIU turns Nagle's algorithm off only after its TLS handshake with
//   the page server, whose small writes then wait for the peer's delayed ACK: 44-50 ms of a cold freeze. Preloaded
//   into those CRIUs (the dump of either, the daemon, cold's page server), it makes TCP_CORK a no-op there and
//   their TCP sockets TCP_NODELAY from the start (not into a restore, which sets the container's own sockets').
// - criu-conntrack (native/criu-conntrack.c): every dump asks the kernel twice for the namespace's tracked
//   connections, and the kernel walks the host's whole conntrack table for each (9 ms a walk at 262144 buckets);
//   when the namespace tracks none the library answers for the kernel. Preloaded into every dump.
// - criu-tmpfs (native/criu-tmpfs.c): CRIU saves and restores each tmpfs of the container with `tar` and `gzip`
//   (two program starts each way); for an empty one (usually four of a container's five) the library writes and
//   reads the same archive itself. Preloaded into every dump and restore.
// - criu-cgroup (native/criu-cgroup.c): a restore's CRIU moves the restored task into the container's cgroups,
//   where it already is (runc placed CRIU there), and the kernel's first cgroup move waits for an RCU grace period
//   (8-20 ms here); the library turns a move into the task's own cgroup into a write to /dev/null. Preloaded into
//   every restore.
// - criu-gate (native/criu-gate.c): a staged dump's or restore's CRIU waits for the freeze at the gate's script,
//   before it starts, so its start (about 6 ms: a dozen libraries), runc's request and a cold dump's connection to
//   the page server were all inside the freeze. With the library the script starts CRIU at once and CRIU waits
//   inside, right before it touches the container (a dump) or reads the images (a restore). Preloaded by the
//   gate into that one CRIU.
import { accessSync, constants } from 'node:fs';

/** Where `scripts/setup.sh native` builds the libraries. */
export const UNCORK_LIBRARY = '/opt/ferry/lib/criu-uncork.so';
export const CONNTRACK_LIBRARY = '/opt/ferry/lib/criu-conntrack.so';
export const TMPFS_LIBRARY = '/opt/ferry/lib/criu-tmpfs.so';
export const CGROUP_LIBRARY = '/opt/ferry/lib/criu-cgroup.so';
export const GATE_LIBRARY = '/opt/ferry/lib/criu-gate.so';

/** Every library, by the name `CriuPreloads` gives it: where it is built, and what a host without it pays. */
export const PRELOAD_LIBRARIES = {
  uncork: {
    path: UNCORK_LIBRARY,
    without:
      "a cold move's freeze waits 200 ms longer, and post-copy's last page 400 ms, for CRIU's corked page-server sockets",
  },
  conntrack: {
    path: CONNTRACK_LIBRARY,
    without:
      "every dump walks the host's whole conntrack table twice inside the freeze, also for a container that tracks no connections",
  },
  tmpfs: {
    path: TMPFS_LIBRARY,
    without:
      'every dump and restore starts tar and gzip for each empty tmpfs of the container, inside the freeze',
  },
  cgroup: {
    path: CGROUP_LIBRARY,
    without:
      'every restore moves the restored task into the cgroups it is in already, and the first move waits for an RCU grace period inside the freeze',
  },
  gate: {
    path: GATE_LIBRARY,
    without:
      "a staged dump's and restore's CRIU start inside the freeze, and a cold dump's TLS handshake with the page server with them",
  },
} as const;

export type PreloadName = keyof typeof PRELOAD_LIBRARIES;

/** The libraries a host's CRIU runs get, where installed. */
export interface CriuPreloads {
  /** Into a dump to or as a page server, cold's page server, and post-copy's lazy-pages daemon. */
  uncork?: string;
  /** Into every dump. */
  conntrack?: string;
  /** Into every dump and restore. */
  tmpfs?: string;
  /** Into every restore. */
  cgroup?: string;
  /** Into a staged dump's or restore's CRIU, by its gate (criu-gate.ts). */
  gate?: string;
}

/** A library's path when it is installed and its path can go in LD_PRELOAD as it is; otherwise undefined. */
export function installedLibrary(path: string): string | undefined {
  // LD_PRELOAD splits on spaces and colons
  if (!path.startsWith('/') || /[\s:]/.test(path)) return undefined;
  try {
    accessSync(path, constants.R_OK);
    return path;
  } catch {
    return undefined;
  }
}

/** This host's installed libraries. */
export function installedPreloads(): CriuPreloads {
  const out: CriuPreloads = {};
  for (const [name, lib] of Object.entries(PRELOAD_LIBRARIES) as [PreloadName, { path: string }][]) {
    const path = installedLibrary(lib.path);
    if (path) out[name] = path;
  }
  return out;
}

/** `env` (default: the agent's) with `library` preloaded before anything the environment preloaded already. */
export function withPreload(library: string, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const before = env['LD_PRELOAD']?.trim();
  return { ...env, LD_PRELOAD: before ? `${library} ${before}` : library };
}

/** `env` with each installed one of `libraries` preloaded; `env` as it is (undefined: the agent's own) when none is. */
export function withPreloads(
  libraries: (string | undefined)[],
  env?: NodeJS.ProcessEnv,
): NodeJS.ProcessEnv | undefined {
  let out = env;
  for (const library of libraries) if (library) out = withPreload(library, out);
  return out;
}
