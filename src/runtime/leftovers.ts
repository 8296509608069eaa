// Processes a crashed agent left behind: a runc checkpoint or restore (and the CRIU under it) goes on after its
// parent died. They are found by a path their command line names (a migration's image directory is unique).
import { readdir, readFile } from 'node:fs/promises';

/** Pids of the processes whose command line contains `text` (this process excluded). */
export async function pidsNaming(text: string): Promise<number[]> {
  const out: number[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      const cmd = (await readFile(`/proc/${e}/cmdline`, 'utf8')).split('\0').join(' ');
      if (cmd.includes(text)) out.push(Number(e));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/**
 * Waits until no process names `text`; once `deadline` (ms since the epoch) has passed, SIGKILLs what still does
 * (a stuck CRIU must not hold a container frozen for ever). Returns how many were killed.
 */
export async function settleLeftovers(
  text: string,
  deadline: number,
  pollMs = 200,
): Promise<{ killed: number }> {
  let killed = 0;
  for (;;) {
    const pids = await pidsNaming(text);
    if (pids.length === 0) return { killed };
    if (Date.now() >= deadline) {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
          killed++;
        } catch {
          // gone
        }
      }
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
