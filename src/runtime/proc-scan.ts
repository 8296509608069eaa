// What CRIU cannot dump or restore, read from /proc before anything is frozen. Each rule is one of CRIU's own
// refusals (named beside it), checked on the same facts CRIU looks at, so that a migration that would fail
// inside the freeze (or dump and then fail to restore) is refused while the container runs untouched.
// /proc is read through a narrow interface, so that the rules run against captured fixtures in unit tests.
// The rules on tasks and sessions are here; those on what the tasks hold open are in proc-scan-fds.ts, and the
// reading of /proc in proc-fs.ts.
import { hostProcFs, type ProcFs, type ProcTask, readTasks, type Unmovable, who } from './proc-fs.ts';
import { corkedUdpLimits, inFlightTcpLimits, leaseLimits, loopbackTcpLimits } from './proc-scan-fds.ts';
import { inFlightUnixLimits } from './proc-scan-unix.ts';

export {
  type FileFacts,
  hostProcFs,
  type ProcFs,
  type ProcTask,
  parseStat,
  parseStatus,
  readTasks,
  type Unmovable,
} from './proc-fs.ts';

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
    // a task stopped by a signal moves: CRIU seizes it with ptrace alone (runtime/stopped-tasks.ts)
    else if (o.dumper && !o.dumper.capSysResource && t.state !== 'Z' && foreignId(t, o.dumper))
      out.push(
        who(
          t,
          `it runs as ${foreignId(t, o.dumper)} and this host's agent lacks CAP_SYS_RESOURCE: CRIU cannot read its rlimits`,
        ),
      );
    // compel (infect.c): its parasite stops itself with SIGTRAP, so it refuses a thread with one pending
    else if (t.state !== 'Z' && t.pending !== undefined && (t.pending >> BigInt(SIGTRAP - 1)) & 1n)
      out.push(
        who(
          t,
          "a SIGTRAP is pending for it (blocked, not yet taken): CRIU's parasite code uses SIGTRAP itself and cannot dump such a thread",
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

const SIGTRAP = 5;

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
      ...(await loopbackTcpLimits(fs, tasks, o.init, root)),
      ...(await inFlightTcpLimits(fs, tasks, o.init, root)),
      ...(await inFlightUnixLimits(fs, tasks, o.init, root)),
      ...(await leaseLimits(fs, tasks, root)),
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
