// What CRIU cannot dump or restore, read from /proc before anything is frozen. Each rule is one of CRIU's own
// refusals (named beside it), checked on the same facts CRIU looks at, so that a migration that would fail
// inside the freeze (or dump and then fail to restore) is refused while the container runs untouched.
// /proc is read through a narrow interface, so that the rules run against captured fixtures in unit tests.
import { readdir, readFile, readlink } from 'node:fs/promises';

export interface ProcFs {
  /** A file's text, undefined when it cannot be read (the task exited, the file does not exist). */
  readFile(path: string): Promise<string | undefined>;
  readlink(path: string): Promise<string | undefined>;
  readdir(path: string): Promise<string[]>;
}

export const hostProcFs: ProcFs = {
  readFile: (p) => readFile(p, 'utf8').catch(() => undefined),
  readlink: (p) => readlink(p).catch(() => undefined),
  readdir: (p) => readdir(p).catch(() => []),
};

/** One process CRIU cannot move, and why. */
export interface Unmovable {
  /** Host pid. */
  pid: number;
  /** Its pid inside the container's pid namespace, when /proc tells. */
  nsPid?: number;
  comm: string;
  limit: string;
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
): Pick<ProcTask, 'threads' | 'tracerPid' | 'nsPid' | 'nsSid' | 'nsLevels' | 'uids' | 'gids'> {
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
  return {
    ...(levels ? { nsLevels: levels } : {}),
    ...(uids?.length ? { uids } : {}),
    ...(gids?.length ? { gids } : {}),
    threads: Number(field('Threads') ?? 1),
    tracerPid: Number(field('TracerPid') ?? 0),
    ...(nsPid !== undefined ? { nsPid } : {}),
    ...(nsSid !== undefined ? { nsSid } : {}),
  };
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
    out.push({ pid, ...parseStat(stat), ...parseStatus(status), wchan: (wchan ?? '').trim() });
  }
  return out;
}

const who = (t: ProcTask, limit: string): Unmovable => ({
  pid: t.pid,
  ...(t.nsPid !== undefined ? { nsPid: t.nsPid } : {}),
  comm: t.comm,
  limit,
});

/**
 * Sessions, as CRIU rebuilds them at restore (criu/pstree.c prepare_pstree_ids): a session whose leader is
 * outside the pid namespace cannot be recreated ("A session leader of N is outside of its pid namespace"),
 * and a task whose session differs from its parent's needs its session's leader among its ancestors ("Can't
 * find a session leader"). CRIU stands in a helper task for the leader only between the container's init and
 * the init's own children (a child in a session of its own, its leader exited or elsewhere in the tree).
 * `outside`: session ids known to be outside the container (see scanUnmovable).
 */
export function sessionLimits(tasks: ProcTask[], init: number, outside: Set<number>): Unmovable[] {
  const byPid = new Map(tasks.map((t) => [t.pid, t]));
  const root = byPid.get(init);
  const out: Unmovable[] = [];
  const ok: ProcTask[] = [];
  for (const t of tasks) {
    const away = (t.nsLevels ?? 1) > 1 ? t.nsSid === 0 : outside.has(t.sid);
    if (away)
      out.push(
        who(
          t,
          `its session's leader (pid ${t.sid}) is outside the container: CRIU cannot recreate the session`,
        ),
      );
    else ok.push(t);
  }
  if (!root) return out;
  /** A node of the tree CRIU restores: a task, or the helper it adds as the leader of session `sid`. */
  type Node = { task?: ProcTask; pid: number; sid: number; helperOf?: ProcTask };
  const node = (t: ProcTask): Node => ({ task: t, pid: t.pid, sid: t.sid });
  const parentOf = (n: Node): Node | undefined => {
    if (n.helperOf) {
      // the helper of a live leader is that leader's child; of a leader that exited, the init's
      const leader = byPid.get(n.sid);
      return leader && leader.pid !== init ? node(leader) : node(root);
    }
    const t = n.task!;
    if (t.pid === init) return undefined;
    if (t.ppid === init && t.sid !== root.sid && t.sid !== t.pid)
      return { pid: t.sid, sid: t.sid, helperOf: t };
    const p = byPid.get(t.ppid);
    return p ? node(p) : undefined;
  };
  /** The session a task between a leader and its members was born in, as CRIU infers it. */
  const bornSid = new Map<string, number>();
  for (const t of ok) {
    if (t.pid === init || t.sid === t.pid) continue;
    const parent = parentOf(node(t));
    if (!parent || parent.sid === t.sid) continue;
    let p: Node | undefined = parent;
    let conflict: { pid: number; sid: number } | undefined;
    while (p && p.pid !== t.sid) {
      const key = p.helperOf ? `h${p.sid}` : String(p.pid);
      const born = bornSid.get(key);
      if (born !== undefined && born !== t.sid) {
        conflict = { pid: p.pid, sid: born };
        break;
      }
      bornSid.set(key, t.sid);
      p = parentOf(p);
    }
    if (conflict)
      out.push(
        who(
          t,
          `CRIU cannot tell which session (${conflict.sid} or ${t.sid}) its ancestor ${conflict.pid} was born in`,
        ),
      );
    else if (!p)
      out.push(
        who(
          t,
          `its session's leader (pid ${t.sid}) has exited and was none of its ancestors: CRIU cannot recreate the session`,
        ),
      );
  }
  return out;
}

/**
 * Processes joined to the container from outside (`runc exec`): in its cgroup and pid namespace, but no
 * descendant of its init. runc hands CRIU the init's pid and CRIU dumps that process tree only: a joined
 * process would stay behind, frozen, and die with the source's copy (a migration that says nothing of it).
 * `cmdlines`: host pid -> its command line, to name it.
 */
export function joinedLimits(tasks: ProcTask[], init: number, cmdlines: Map<number, string>): Unmovable[] {
  const byPid = new Map(tasks.map((t) => [t.pid, t]));
  const inTree = (t: ProcTask): boolean => {
    const seen = new Set<number>();
    for (let p: ProcTask | undefined = t; p; p = byPid.get(p.ppid)) {
      if (p.pid === init) return true;
      if (seen.has(p.pid)) return false;
      seen.add(p.pid);
    }
    return false;
  };
  const out: Unmovable[] = [];
  for (const t of tasks) {
    if (inTree(t)) continue;
    const cmd = cmdlines.get(t.pid);
    out.push(
      who(
        t,
        `it was started in the container by runc exec${cmd ? ` (${JSON.stringify(cmd)})` : ''}, not by its init: ` +
          'CRIU moves the init and its descendants only, so it would be left behind; stop it or start it from the init',
      ),
    );
  }
  return out;
}

export interface TaskRuleOptions {
  /**
   * The container is frozen with the cgroup-v1 freezer, which never completes while a task is stopped
   * (SIGSTOP): the freeze would wait until its deadline.
   */
  freezerV1: boolean;
  /**
   * The uid CRIU runs as and whether it has CAP_SYS_RESOURCE. Without it, CRIU cannot read the rlimits of a
   * process whose uids are not all its own (prlimit), so every dump of such a process fails ("Can't get
   * rlimit"). Unset: not checked.
   */
  dumper?: { uid: number; gid: number; capSysResource: boolean };
}

/** The first id of a task that is not the dumper's (prlimit's permission check compares uids and gids). */
function foreignId(t: ProcTask, d: { uid: number; gid: number }): string | undefined {
  const uid = t.uids?.find((u) => u !== d.uid);
  if (uid !== undefined) return `uid ${uid}`;
  const gid = t.gids?.find((g) => g !== d.gid);
  return gid !== undefined ? `gid ${gid}` : undefined;
}

/** Rules on each task alone. */
export function taskLimits(tasks: ProcTask[], o: TaskRuleOptions): Unmovable[] {
  const out: Unmovable[] = [];
  for (const t of tasks) {
    // criu/seize.c: "Zombies with threads are not supported" (the main thread exited with pthread_exit)
    if (t.state === 'Z' && t.threads > 1)
      out.push(
        who(
          t,
          `its main thread has exited while ${t.threads - 1} other thread(s) run: CRIU cannot dump a zombie with threads`,
        ),
      );
    // compel seizes every task with ptrace; one that a tracer (a debugger, strace) holds cannot be seized
    else if (t.tracerPid !== 0)
      out.push(who(t, `it is traced by pid ${t.tracerPid} (a debugger?): CRIU cannot seize a traced task`));
    else if ((t.state === 'T' || t.state === 't') && o.freezerV1)
      out.push(
        who(
          t,
          'it is stopped (SIGSTOP): the cgroup-v1 freezer never completes the freeze around a stopped task; SIGCONT it first',
        ),
      );
    else if (o.dumper && !o.dumper.capSysResource && t.state !== 'Z' && foreignId(t, o.dumper))
      out.push(
        who(
          t,
          `it runs as ${foreignId(t, o.dumper)} and this host's agent lacks CAP_SYS_RESOURCE: CRIU cannot read its rlimits`,
        ),
      );
    // a vfork() parent sleeps uninterruptibly in the kernel until its child execs or exits; CRIU (zdtm's vfork00,
    // an expected dump failure) cannot dump a pending vfork
    else if (
      t.state === 'D' &&
      /^(kernel_clone|wait_for_vfork_done|_do_fork|do_fork)$/.test(t.wchan) &&
      tasks.some((c) => c.ppid === t.pid)
    )
      out.push(who(t, 'it waits in vfork() for its child to exec or exit: CRIU cannot dump a pending vfork'));
  }
  return out;
}

/** Socket inode -> the container's tasks holding it, from /proc/PID/fd. */
export async function socketOwners(
  fs: ProcFs,
  tasks: ProcTask[],
  root = '/proc',
): Promise<Map<number, ProcTask>> {
  const out = new Map<number, ProcTask>();
  for (const t of tasks) {
    for (const fd of await fs.readdir(`${root}/${t.pid}/fd`)) {
      const m = /^socket:\[(\d+)\]$/.exec((await fs.readlink(`${root}/${t.pid}/fd/${fd}`)) ?? '');
      if (m && !out.has(Number(m[1]))) out.set(Number(m[1]), t);
    }
  }
  return out;
}

/** inode -> bytes in the send queue, for the UDP sockets of a network namespace (/proc/PID/net/udp*). */
export async function udpSendQueues(fs: ProcFs, pid: number, root = '/proc'): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const f of ['udp', 'udp6', 'udplite', 'udplite6']) {
    const text = await fs.readFile(`${root}/${pid}/net/${f}`);
    for (const line of (text ?? '').split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10) continue;
      const tx = Number.parseInt(c[4]!.split(':')[0]!, 16);
      out.set(Number(c[9]), tx);
    }
  }
  return out;
}

/**
 * Corked UDP (criu/sk-inet.c: "Can't dump corked dgram socket"). /proc does not show UDP_CORK; it shows the
 * send queue, which only a cork (or MSG_MORE) keeps non-empty: an uncorked datagram leaves at once. The queue
 * is read twice, `resampleMs` apart, so that a datagram on its way out is not taken for a cork.
 */
export async function corkedUdpLimits(
  fs: ProcFs,
  tasks: ProcTask[],
  init: number,
  resampleMs: number,
  root = '/proc',
): Promise<Unmovable[]> {
  const first = await udpSendQueues(fs, init, root);
  const queued = [...first].filter(([, tx]) => tx > 0);
  if (!queued.length) return [];
  const owners = await socketOwners(fs, tasks, root);
  if (!queued.some(([ino]) => owners.has(ino))) return [];
  await new Promise((r) => setTimeout(r, resampleMs));
  const second = await udpSendQueues(fs, init, root);
  const out: Unmovable[] = [];
  for (const [ino, tx] of queued) {
    const t = owners.get(ino);
    if (t && second.get(ino) === tx)
      out.push(
        who(
          t,
          `its UDP socket (inode ${ino}) holds ${tx} bytes held back by UDP_CORK: CRIU cannot dump a corked socket`,
        ),
      );
  }
  return out;
}

export interface ScanOptions extends TaskRuleOptions {
  /** The container's init (host pid). */
  init: number;
  /** Every process of the container (host pids, e.g. its cgroup's cgroup.procs). */
  pids: number[];
  /** Delay between the two reads of the UDP send queues (ms). */
  resampleMs?: number;
  root?: string;
}

/** Every process of the container CRIU cannot move, with its limit; empty when nothing stands in the way. */
export async function scanUnmovable(fs: ProcFs, o: ScanOptions): Promise<Unmovable[]> {
  const root = o.root ?? '/proc';
  const pids = o.pids.includes(o.init) ? o.pids : [o.init, ...o.pids];
  const tasks = await readTasks(fs, pids, root);
  const cmdlines = new Map<number, string>();
  for (const t of tasks) {
    const raw = await fs.readFile(`${root}/${t.pid}/cmdline`);
    if (raw) cmdlines.set(t.pid, raw.replace(/\0+$/, '').split('\0').join(' '));
  }
  // a joined process is named for that alone: its session (runc exec's own) would only be a second symptom
  const joined = joinedLimits(tasks, o.init, cmdlines);
  const alsoJoined = (u: Unmovable) => joined.some((j) => j.pid === u.pid);
  const inside = new Set(tasks.map((t) => t.pid));
  // a session id naming a live process that is not the container's: the leader is outside (without a pid
  // namespace of its own, NSsid cannot tell)
  const outside = new Set<number>();
  for (const sid of new Set(tasks.map((t) => t.sid)))
    if (!inside.has(sid) && (await fs.readFile(`${root}/${sid}/stat`)) !== undefined) outside.add(sid);
  return [
    ...joined,
    ...[
      ...sessionLimits(tasks, o.init, outside),
      ...taskLimits(tasks, o),
      ...(await corkedUdpLimits(fs, tasks, o.init, o.resampleMs ?? 50, root)),
    ].filter((u) => !alsoJoined(u)),
  ];
}

/** Who CRIU runs as here: the agent's uid, gid and CAP_SYS_RESOURCE (bit 24 of CapEff); runc starts CRIU as itself. */
export async function dumperCredentials(
  fs: ProcFs = hostProcFs,
): Promise<{ uid: number; gid: number; capSysResource: boolean }> {
  const status = (await fs.readFile('/proc/self/status')) ?? '';
  const cap = /^CapEff:\s+([0-9a-f]+)$/m.exec(status)?.[1] ?? '0';
  return {
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
    capSysResource: ((BigInt(`0x${cap}`) >> 24n) & 1n) === 1n,
  };
}

/** One line per process: `pid 7 (host pid 1234, pthread02): why`. */
export function describeUnmovable(u: Unmovable): string {
  const id =
    u.nsPid !== undefined && u.nsPid !== u.pid
      ? `pid ${u.nsPid} (host pid ${u.pid}, ${u.comm})`
      : `pid ${u.pid} (${u.comm})`;
  return `${id}: ${u.limit}`;
}
