// The library that takes the cork off CRIU's page-server sockets (native/criu-uncork.c). CRIU corks a page-server
// connection at both ends and sends its closing request, and the answer to it, without uncorking, so the kernel
// holds each for its 200 ms cork ceiling:
// - a cold move's dump to the destination's page server waits for that answer inside the freeze (200 ms of freeze);
// - post-copy's lazy-pages daemon, after the last page, closes its connection to the lazy dump, which answers: the
//   request and the answer wait 200 ms each, and the post-copy window (restore to last page) ends 400 ms late.
// Preloaded into those CRIUs (the dump of either and the daemon), the library makes TCP_CORK a no-op there. When it
// is not installed ferry works the same, that much slower, and `ferry check` says so.
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
