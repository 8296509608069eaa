// A lock shared by every ferry process on this machine, for short critical sections over machine-wide state
// (the testbeds' subnets: two testbeds coming up at once must not pick the same one). A file created exclusively
// holds the owner's pid; a lock whose owner died is taken over, so a crash never leaves it stuck.

import { open, readFile, unlink } from 'node:fs/promises';
import { FerryError } from '../core/errors.ts';
import { alive } from '../runtime/daemon.ts';

const POLL_MS = 20;

/**
 * Takes the lock at `path`, waiting for it up to `timeoutMs`. The returned function lets it go; calling it again
 * does nothing, so a caller may let go early and still release in a `finally`.
 */
export async function acquireMachineLock(path: string, timeoutMs = 15_000): Promise<() => Promise<void>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const fh = await open(path, 'wx', 0o600);
      try {
        await fh.writeFile(String(process.pid));
      } finally {
        await fh.close();
      }
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
    // an empty file is a lock being written right now; a dead owner's lock is stale
    if (Number.isInteger(owner) && owner > 0 && !alive(owner)) {
      await unlink(path).catch(() => {});
      continue;
    }
    if (Date.now() > deadline)
      throw new FerryError('FERRY_E_TESTBED', `${path} is held by process ${owner || '?'}`, {
        phase: 'testbed',
        hint: 'another ferry command holds this machine-wide lock; retry, or remove the file if that process is gone',
      });
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  let held = true;
  return async () => {
    if (!held) return;
    held = false;
    await unlink(path).catch(() => {});
  };
}
