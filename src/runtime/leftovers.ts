// Processes a crashed agent left behind: a runc checkpoint or restore (and the CRIU under it) goes on after its
// parent died. They are found by a path their command line names (a migration's image directory is unique).
import { readdir, readFile } from 'node:fs/promises';
import { groupAlive } from './exec.ts';

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

/** The process group of `pid`, undefined when it has exited. */
async function groupOf(pid: number): Promise<number | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
  } catch {
    return undefined;
  }
}

/**
 * Waits until no process names `text`; once `deadline` (ms since the epoch) has passed, SIGKILLs what still does
 * (a stuck CRIU must not hold a container frozen for ever). A process that leads a group of its own (runc
 * checkpoint, started so) is killed with its group: its CRIU names no image path (it retitles itself) and, left
 * alone, would go on seizing the tasks. Returns once those groups are gone too, with how many were killed.
 */
export async function settleLeftovers(
  text: string,
  deadline: number,
  pollMs = 200,
): Promise<{ killed: number }> {
  let killed = 0;
  const groups = new Set<number>();
  for (;;) {
    const pids = await pidsNaming(text);
    if (pids.length === 0 && [...groups].every((g) => !groupAlive(g))) return { killed };
    if (Date.now() >= deadline) {
      for (const pid of pids) {
        const group = await groupOf(pid);
        if (group === pid) groups.add(group);
        try {
          process.kill(group === pid ? -pid : pid, 'SIGKILL');
          killed++;
        } catch {
          // gone
        }
      }
      for (const g of groups) {
        try {
          process.kill(-g, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
