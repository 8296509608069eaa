// A container's processes as the dashboard shows them: one row per process of its cgroup, read from /proc
// (the tree is drawn from each row's parent pid). Small on purpose: it travels agent -> controller -> browser on
// demand, so the command line is cut short and a container with thousands of processes sends the first ones.
import { type ProcFs, parseStat, parseStatus } from './proc-scan.ts';

export const MAX_PROCESSES = 500;
export const MAX_CMDLINE = 256;

export interface ProcessInfo {
  /** Host pid. */
  pid: number;
  /** Its pid inside the container's pid namespace, when /proc tells. */
  nsPid?: number;
  ppid: number;
  comm: string;
  /** The arguments joined by spaces (at most MAX_CMDLINE characters); empty for kernel-like tasks. */
  cmdline: string;
  /** /proc/PID/stat's state letter: R S D Z T t X ... */
  state: string;
  rssBytes: number;
  threads: number;
}

/** The processes of the given pids that still exist, in pid order, at most MAX_PROCESSES of them. */
export async function readProcesses(
  fs: ProcFs,
  pids: number[],
  root = '/proc',
): Promise<{ processes: ProcessInfo[]; truncated: boolean }> {
  const sorted = [...new Set(pids)].sort((a, b) => a - b);
  const out: ProcessInfo[] = [];
  for (const pid of sorted.slice(0, MAX_PROCESSES)) {
    const [stat, status, cmdline] = await Promise.all([
      fs.readFile(`${root}/${pid}/stat`),
      fs.readFile(`${root}/${pid}/status`),
      fs.readFile(`${root}/${pid}/cmdline`),
    ]);
    // it exited between the cgroup's list and now
    if (stat === undefined || status === undefined) continue;
    const s = parseStat(stat);
    const st = parseStatus(status);
    const rssKib = Number(/^VmRSS:\s*(\d+)/m.exec(status)?.[1] ?? 0);
    const args = (cmdline ?? '').split('\0').filter(Boolean).join(' ');
    out.push({
      pid,
      ...(st.nsPid !== undefined ? { nsPid: st.nsPid } : {}),
      ppid: s.ppid,
      comm: s.comm,
      cmdline: args.length > MAX_CMDLINE ? `${args.slice(0, MAX_CMDLINE - 1)}…` : args,
      state: s.state,
      rssBytes: rssKib * 1024,
      threads: st.threads,
    });
  }
  return { processes: out, truncated: sorted.length > MAX_PROCESSES };
}
