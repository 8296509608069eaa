// The part of /proc the scan (proc-scan.ts) reads, behind a narrow interface so that its rules run against
// captured fixtures in unit tests: the tasks of a container as parsed from stat and status, and what a rule
// reports of a process CRIU cannot move. One fact /proc does not show (a listening unix socket's connections in
// flight) is asked of the kernel's sock_diag through `ss`, behind the same interface.
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import { ProcessRunner } from './exec.ts';

export interface ProcFs {
  /** A file's text, undefined when it cannot be read (the task exited, the file does not exist). */
  readFile(path: string): Promise<string | undefined>;
  readlink(path: string): Promise<string | undefined>;
  readdir(path: string): Promise<string[]>;
  /**
   * What stat(2) says of the file a path leads to (following /proc/PID/fd links without opening the file);
   * undefined when it cannot. Without it, the rules that need it (leases) are not checked.
   */
  stat?(path: string): Promise<FileFacts | undefined>;
  /**
   * The unix sockets of the network namespace `pid` is in, as the kernel's sock_diag reports them and
   * `ss -H -x -a -e` prints them (a listener's connections in flight, each socket's queues); undefined when it
   * cannot be asked. Without it, the rule that needs it (unix connections in flight) falls back to what /proc shows.
   */
  unixSockets?(pid: number): Promise<string | undefined>;
}

export interface FileFacts {
  dev: bigint;
  ino: bigint;
  size: bigint;
  isFile: boolean;
}

export const hostProcFs: ProcFs = {
  readFile: (p) => readFile(p, 'utf8').catch(() => undefined),
  readlink: (p) => readlink(p).catch(() => undefined),
  readdir: (p) => readdir(p).catch(() => []),
  stat: (p) =>
    stat(p, { bigint: true }).then(
      (st) => ({ dev: st.dev, ino: st.ino, size: st.size, isFile: st.isFile() }),
      () => undefined,
    ),
  unixSockets: async (pid) => {
    const r = await new ProcessRunner()
      .run(['nsenter', `--net=/proc/${pid}/ns/net`, '--', 'ss', '-H', '-x', '-a', '-e'], {
        allowFail: true,
        timeoutMs: 5000,
      })
      .catch(() => undefined);
    return r?.code === 0 ? r.stdout : undefined;
  },
};

/** One process CRIU cannot move, and why. */
export interface Unmovable {
  /** Host pid. */
  pid: number;
  /** Its pid inside the container's pid namespace, when /proc tells. */
  nsPid?: number;
  comm: string;
  limit: string;
  /** The rule that found it, where a migration option lifts it ('tcp-in-flight': --skip-in-flight). */
  rule?: 'tcp-in-flight';
}

export interface ProcTask {
  pid: number;
  nsPid?: number;
  comm: string;
  /** /proc/PID/stat's state letter: R S D Z T t X ... */
  state: string;
  ppid: number;
  pgid: number;
  sid: number;
  /** The session in the task's own pid namespace; 0 when its leader lives outside that namespace. */
  nsSid?: number;
  /** How many pid namespaces the task is in (entries of NSpid); 1 without a namespace of its own. */
  nsLevels?: number;
  threads: number;
  tracerPid: number;
  /** Real, effective, saved and filesystem uid and gid (the Uid: and Gid: lines of /proc/PID/status). */
  uids?: number[];
  gids?: number[];
  /** Signals pending for the process (ShdPnd) or for one of its threads (SigPnd), as a mask: bit n-1 is signal n. */
  pending?: bigint;
  wchan: string;
}

/** Fields 3-6 of /proc/PID/stat; the command name may hold spaces and parentheses, so it ends at the last ')'. */
export function parseStat(text: string): Pick<ProcTask, 'comm' | 'state' | 'ppid' | 'pgid' | 'sid'> {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  const rest = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  return {
    comm: text.slice(open + 1, close),
    state: rest[0] ?? '?',
    ppid: Number(rest[1]),
    pgid: Number(rest[2]),
    sid: Number(rest[3]),
  };
}

/** The lines of /proc/PID/status the rules read. NSpid/NSsid list one id per pid namespace, innermost last. */
export function parseStatus(
  text: string,
): Pick<ProcTask, 'threads' | 'tracerPid' | 'nsPid' | 'nsSid' | 'nsLevels' | 'uids' | 'gids' | 'pending'> {
  const field = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(text)?.[1]?.trim();
  const last = (k: string) => {
    const v = field(k)?.split(/\s+/).at(-1);
    return v === undefined || v === '' ? undefined : Number(v);
  };
  const nsPid = last('NSpid');
  const nsSid = last('NSsid');
  const levels = field('NSpid')?.split(/\s+/).filter(Boolean).length;
  const uids = field('Uid')?.split(/\s+/).map(Number);
  const gids = field('Gid')?.split(/\s+/).map(Number);
  const pending = signalMask(field('SigPnd')) | signalMask(field('ShdPnd'));
  return {
    ...(pending ? { pending } : {}),
    ...(levels ? { nsLevels: levels } : {}),
    ...(uids?.length ? { uids } : {}),
    ...(gids?.length ? { gids } : {}),
    threads: Number(field('Threads') ?? 1),
    tracerPid: Number(field('TracerPid') ?? 0),
    ...(nsPid !== undefined ? { nsPid } : {}),
    ...(nsSid !== undefined ? { nsSid } : {}),
  };
}

function signalMask(hex: string | undefined): bigint {
  return hex && /^[0-9a-f]+$/i.test(hex) ? BigInt(`0x${hex}`) : 0n;
}

/** The tasks of the given pids that still exist. */
export async function readTasks(fs: ProcFs, pids: number[], root = '/proc'): Promise<ProcTask[]> {
  const out: ProcTask[] = [];
  for (const pid of pids) {
    const [stat, status, wchan] = await Promise.all([
      fs.readFile(`${root}/${pid}/stat`),
      fs.readFile(`${root}/${pid}/status`),
      fs.readFile(`${root}/${pid}/wchan`),
    ]);
    if (!stat || !status) continue;
    const task: ProcTask = { pid, ...parseStat(stat), ...parseStatus(status), wchan: (wchan ?? '').trim() };
    // a signal sent to one thread is pending in that thread's status only
    if (task.threads > 1) {
      for (const tid of await fs.readdir(`${root}/${pid}/task`)) {
        if (tid === String(pid)) continue;
        const pending = signalMask(
          /^SigPnd:\s*(\S+)$/m.exec((await fs.readFile(`${root}/${pid}/task/${tid}/status`)) ?? '')?.[1],
        );
        if (pending) task.pending = (task.pending ?? 0n) | pending;
      }
    }
    out.push(task);
  }
  return out;
}

/** The finding that `t` cannot move, and why. */
export const who = (t: ProcTask, limit: string): Unmovable => ({
  pid: t.pid,
  ...(t.nsPid !== undefined ? { nsPid: t.nsPid } : {}),
  comm: t.comm,
  limit,
});
