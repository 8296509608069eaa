// CRIU's kernel-feature cache ("kdat"). Every CRIU run probes the kernel first (about 35 ms here) unless it can load
// /run/criu.kdat. CRIU writes that file itself only when /run is a tmpfs (so a reboot clears it), which it is on
// any systemd host. Where /run is an ordinary directory (this testbed's VM), the agent stages the file at start:
// CRIU runs once in a private mount namespace with a tmpfs on /run, and its cache is copied out. CRIU reads the
// file without checking the filesystem, so every dump, restore and lazy-pages daemon then skips the probe.
import { copyFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Runner } from './exec.ts';
import { isTmpfs } from './mounts.ts';

export const KDAT_DIR = '/run';
export const KDAT_FILE = 'criu.kdat';

export type KdatState = 'kept by CRIU' | 'staged by ferry' | 'absent';

/** Where the cache stands now (for `ferry check`). */
export async function kdatState(dir = KDAT_DIR): Promise<KdatState> {
  try {
    await stat(join(dir, KDAT_FILE));
  } catch {
    return 'absent';
  }
  return (await isTmpfs(dir)) ? 'kept by CRIU' : 'staged by ferry';
}

/**
 * Makes sure the cache exists and is fresh. On a tmpfs /run one `criu check` writes it; elsewhere it is rebuilt
 * at every call (an agent start), so a cache never outlives the kernel it describes by more than an agent run.
 */
export async function stageKdat(
  runner: Runner,
  criuPath: string,
  scratchDir: string,
  dir = KDAT_DIR,
): Promise<{ state: KdatState; message: string }> {
  if (await isTmpfs(dir)) {
    await runner.run([criuPath, 'check'], { allowFail: true }).catch(() => undefined);
    const state = await kdatState(dir);
    return { state, message: state === 'absent' ? 'criu check did not write its cache' : 'CRIU keeps it' };
  }
  // an old cache goes first: a failed rebuild must not leave one from another kernel in place
  await rm(join(dir, KDAT_FILE), { force: true });
  const scratch = join(scratchDir, `criu.kdat.${process.pid}`);
  const r = await runner
    .run(
      [
        'unshare',
        '--mount',
        '--propagation',
        'private',
        'sh',
        '-c',
        // criu check fails on kernels that miss optional features; the cache is written before any check runs
        'mount -t tmpfs ferry-kdat "$3" && { "$1" check >/dev/null 2>&1; cp "$3/criu.kdat" "$2"; }',
        'sh',
        criuPath,
        scratch,
        dir,
      ],
      { allowFail: true, timeoutMs: 30_000 },
    )
    .catch((err: Error) => ({ code: -1, stderr: err.message }));
  if (r.code !== 0) {
    await rm(scratch, { force: true });
    return { state: 'absent', message: `could not build it: ${r.stderr.trim().split('\n').pop() ?? r.code}` };
  }
  // copied next to its final name, then renamed: a CRIU starting meanwhile sees the old file or the new one
  const next = join(dir, `${KDAT_FILE}.ferry-${process.pid}`);
  try {
    await copyFile(scratch, next);
    await rename(next, join(dir, KDAT_FILE));
  } finally {
    await rm(scratch, { force: true });
    await rm(next, { force: true });
  }
  return { state: 'staged by ferry', message: `${dir} is not a tmpfs: ferry staged the cache` };
}
