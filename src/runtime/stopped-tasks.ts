// Tasks stopped by a signal (SIGSTOP, SIGTSTP...) in a container frozen by the cgroup-v1 freezer, and the way CRIU
// dumps them there.
//
// runc hands CRIU the container's freezer cgroup, and with a v1 freezer CRIU seizes every task with ptrace while
// the cgroup is frozen. Seizing a stopped task makes the kernel move it from its stop into a ptrace stop, which a
// frozen task cannot do: PTRACE_SEIZE waits in the kernel until the cgroup is thawed, which CRIU only does once
// every task is seized, so the dump hangs until it is killed (the freeze itself completes: kernel 6.18 freezes a
// stopped task, and a thaw returns it to its stop). CRIU has a mode without that wait, the one its CUDA plugin
// uses: it thaws the cgroup, seizes each task with ptrace alone (the way it dumps a process tree with no cgroup),
// and freezes the cgroup again before it lets the tasks go, so the container is still paused after the dump, as
// any other. Its only switch from outside is the fault-injection variable CRIU_FAULT=137
// (FI_COMPEL_INTERRUPT_ONLY_MODE, criu/fault-injection.c), which changes nothing else. ferry sets it for the dumps
// of a container with a stopped task only: for the others the freezer keeps holding every task while CRIU seizes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** What runc's environment gets for a dump of a container with a stopped task under a v1 freezer. */
export const PTRACE_ONLY_SEIZE_ENV: Readonly<Record<string, string>> = { CRIU_FAULT: '137' };

/** A file's text, undefined when it cannot be read (the task exited, no such cgroup). */
function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * Whether a task is in a signal stop: state T, or, once the freezer holds it, frozen inside that stop (state D,
 * waiting in do_signal_stop). A ptrace stop (t) is a tracer's, which the /proc scan refuses before the freeze.
 */
export function isSignalStopped(stat: string, wchan: string): boolean {
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state === 'T' || (state === 'D' && wchan.trim() === 'do_signal_stop');
}

/**
 * The thread ids of a runc container's tasks in a signal stop, when its cgroup has a v1 freezer; empty otherwise
 * (a cgroup-v2 freezer, a container runc does not know). Read from runc's state file (the freezer cgroup runc
 * itself hands CRIU) and /proc. Synchronous: a few small files, read once per dump, so that a dump started
 * synchronously (post-copy's) starts as before.
 */
export function stoppedTasks(runcRoot: string, id: string, proc = '/proc'): number[] {
  let freezer: string | undefined;
  try {
    const state = JSON.parse(read(join(runcRoot, id, 'state.json')) ?? '{}') as {
      cgroup_paths?: Record<string, string>;
    };
    freezer = state.cgroup_paths?.freezer;
  } catch {
    return [];
  }
  if (!freezer) return [];
  const tids = (read(join(freezer, 'tasks')) ?? '')
    .split('\n')
    .map((l) => Number.parseInt(l, 10))
    .filter((n) => Number.isInteger(n) && n > 0);
  return tids.filter((tid) => {
    const stat = read(join(proc, String(tid), 'stat'));
    return stat !== undefined && isSignalStopped(stat, read(join(proc, String(tid), 'wchan')) ?? '');
  });
}
