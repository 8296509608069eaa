// The library that takes the cork off CRIU's page-server socket (native/criu-uncork.c). CRIU corks that socket for a
// whole dump and sends its closing request without uncorking it, so the kernel holds the request (and the tail of
// the last pages) for its 200 ms cork ceiling while the dump, inside the freeze, waits for the page server's answer.
// Preloaded into the CRIU of a dump to a page server (a cold move's), the library makes TCP_CORK a no-op there. When
// it is not installed ferry works the same, 200 ms slower per cold freeze, and `ferry check` says so.
import { accessSync, constants } from 'node:fs';

/** Where `scripts/setup.sh uncork` builds the library. */
export const UNCORK_LIBRARY = '/opt/ferry/lib/criu-uncork.so';

/** The library's path when it is installed and its path can go in LD_PRELOAD as it is; otherwise undefined. */
export function uncorkLibrary(path = UNCORK_LIBRARY): string | undefined {
  // LD_PRELOAD splits on spaces and colons
  if (!path.startsWith('/') || /[\s:]/.test(path)) return undefined;
  try {
    accessSync(path, constants.R_OK);
    return path;
  } catch {
    return undefined;
  }
}

/** `env` (default: the agent's) with `library` preloaded before anything the environment preloaded already. */
export function withPreload(library: string, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const before = env['LD_PRELOAD']?.trim();
  return { ...env, LD_PRELOAD: before ? `${library} ${before}` : library };
}
