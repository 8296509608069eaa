// The lock of a container's own network namespace around a switchover: every IP packet in and out is dropped (ARP
// still passes, so announcements work) except CRIU's own, from the source's pause until the destination's commit.
//
// Where the host has x_tables (`iptables-legacy`, Debian's iptables package ships it), the lock is a chain of
// its own, `ferry-lock`, that INPUT and OUTPUT jump to: locking fills the chain, unlocking flushes it, and the
// jumps stay, harmless in front of an empty chain. x_tables changes a table by writing it whole, about 1 ms for a
// namespace's small table; nftables commits a transaction, and deleting its lock table took 8-12 ms on the test
// machine. The unlock is on the destination's commit, inside the freeze, so that is 10 ms of every switchover.
// Where x_tables is missing the lock is the nftables table `ferry_lock`, as in earlier versions, and an unlock
// removes both kinds (a lock made by an earlier version is nftables').
import { type CommandSession, type ExecResult, type Runner, startSession } from '../runtime/exec.ts';

/** The nftables table of the fallback lock (and of every lock made by versions before the x_tables one). */
export const LOCK_TABLE = 'ferry_lock';
/** The x_tables chain of the lock. */
export const LOCK_CHAIN = 'ferry-lock';
/** CRIU marks the packets of the sockets it repairs with SO_MARK 0xc114: a restored half-closed socket sends its FIN. */
const CRIU_MARK = '0xc114';
/** One restore program per family: IPv4 and IPv6 are locked alike. */
const XT_RESTORE = ['iptables-legacy-restore', 'ip6tables-legacy-restore'] as const;
const XT_CHECK = ['iptables-legacy', 'ip6tables-legacy'] as const;

function inNetns(ns: string, argv: string[]): string[] {
  return ['nsenter', `--net=/run/netns/${ns}`, '--', ...argv];
}

/** The lock in x_tables: the chain (declared, so emptied first: locking twice is locking once), and the jumps when missing. */
export function xtLockRules(withJumps: boolean): string {
  return [
    '*filter',
    `:${LOCK_CHAIN} - [0:0]`,
    `-A ${LOCK_CHAIN} -m mark --mark ${CRIU_MARK} -j RETURN`,
    `-A ${LOCK_CHAIN} -j DROP`,
    ...(withJumps ? [`-I INPUT 1 -j ${LOCK_CHAIN}`, `-I OUTPUT 1 -j ${LOCK_CHAIN}`] : []),
    'COMMIT',
    '',
  ].join('\n');
}

/** The unlock in x_tables: the chain emptied; it fails where there is no such chain. */
export const XT_UNLOCK = `*filter\n-F ${LOCK_CHAIN}\nCOMMIT\n`;

/** The fallback lock in nftables. */
export function nftLockRules(): string {
  return [
    `table inet ${LOCK_TABLE} {`,
    `  chain in { type filter hook input priority -300; policy drop; meta mark ${CRIU_MARK} accept; }`,
    `  chain out { type filter hook output priority -300; policy drop; meta mark ${CRIU_MARK} accept; }`,
    '}',
  ].join('\n');
}

const ok = (r: ExecResult) => r.code === 0 && r.stderr.trim() === '';

/** A lock or unlock made ready ahead of time: one restore program per family, waiting on its input. */
interface Staged {
  sessions: CommandSession[];
  /** Lock only: whether the jumps are there already (looked at when staged, outside the freeze). */
  jumps?: Promise<boolean>;
}

export class NetnsLock {
  private readonly runner: Runner;
  private readonly stagedLocks = new Map<string, Staged>();
  private readonly stagedUnlocks = new Map<string, Staged>();
  /** How each namespace this agent locked is locked: an unlock of an unknown one removes both kinds. */
  private readonly kind = new Map<string, 'xt' | 'nft'>();

  constructor(runner: Runner) {
    this.runner = runner;
  }

  /** Locks `ns`: in x_tables when the host has it, else in nftables. Through the staged lock when there is one. */
  async lock(ns: string): Promise<void> {
    const staged = this.stagedLocks.get(ns);
    this.stagedLocks.delete(ns);
    const jumps = await (staged?.jumps ?? this.hasJumps(ns));
    if (await this.xt(ns, xtLockRules(!jumps), staged?.sessions)) {
      this.kind.set(ns, 'xt');
      return;
    }
    // (a family that took the lock is unlocked again: the nftables table is the whole lock now)
    await this.xt(ns, XT_UNLOCK);
    await this.runner.run(inNetns(ns, ['nft', '-f', '-']), {
      input: nftLockRules(),
      label: 'nft lock',
      errorCode: 'FERRY_E_EXEC',
    });
    this.kind.set(ns, 'nft');
  }

  /**
   * The source's lock lands at the pause, inside the freeze: restore programs started in the namespace right before
   * (beside the destination's hold) read the rules then, instead of process starts of 15-50 ms.
   */
  stageLock(ns: string): void {
    this.dropStagedLock(ns);
    this.stagedLocks.set(ns, { sessions: this.startSessions(ns), jumps: this.hasJumps(ns) });
  }

  /** Drops a staged lock that was not used (the migration stopped before its freeze). */
  dropStagedLock(ns: string): void {
    for (const s of this.stagedLocks.get(ns)?.sessions ?? []) s.kill();
    this.stagedLocks.delete(ns);
  }

  /** Lifts the lock, whichever kind it is; through the staged unlock when there is one. */
  async unlock(ns: string): Promise<void> {
    const staged = this.stagedUnlocks.get(ns);
    this.stagedUnlocks.delete(ns);
    const kind = this.kind.get(ns);
    this.kind.delete(ns);
    if (kind !== 'nft' && (await this.xt(ns, XT_UNLOCK, staged?.sessions)) && kind === 'xt') return;
    for (const s of staged?.sessions ?? []) s.kill();
    await this.runner.run(inNetns(ns, ['nft', 'delete', 'table', 'inet', LOCK_TABLE]), { allowFail: true });
  }

  /**
   * The destination's unlock is on the client's critical path: restore programs started in the namespace at prepare
   * apply it within a millisecond of being told to.
   */
  stageUnlock(ns: string): void {
    this.dropStagedUnlock(ns);
    this.stagedUnlocks.set(ns, { sessions: this.startSessions(ns) });
  }

  /** Drops a staged unlock (the namespace is going away). */
  dropStagedUnlock(ns: string): void {
    for (const s of this.stagedUnlocks.get(ns)?.sessions ?? []) s.kill();
    this.stagedUnlocks.delete(ns);
  }

  /** What of a lock is in `ns` now: the x_tables chain's rules and the nftables table (for tests and `ferry check`). */
  async leftovers(ns: string): Promise<string[]> {
    const out: string[] = [];
    for (const save of ['iptables-legacy-save', 'ip6tables-legacy-save']) {
      const r = await this.runner.run(inNetns(ns, [save, '-t', 'filter']), { allowFail: true });
      for (const line of r.stdout.split('\n'))
        if (line.startsWith(`-A ${LOCK_CHAIN} `)) out.push(`${save}: ${line}`);
    }
    const n = await this.runner.run(inNetns(ns, ['nft', 'list', 'tables']), { allowFail: true });
    if (n.stdout.includes(LOCK_TABLE)) out.push(`nft table ${LOCK_TABLE}`);
    return out;
  }

  private startSessions(ns: string): CommandSession[] {
    return XT_RESTORE.map((p) => startSession(inNetns(ns, [p, '--noflush'])));
  }

  /** Applies `rules` in both families (through `sessions` when given, else new processes); true when both took it. */
  private async xt(ns: string, rules: string, sessions?: CommandSession[]): Promise<boolean> {
    const results = await Promise.all(
      XT_RESTORE.map(async (p, i) => {
        const s = sessions?.[i];
        const r = s ? await s.finish(rules) : undefined;
        if (r && ok(r)) return true;
        const again = await this.runner.run(inNetns(ns, [p, '--noflush']), { input: rules, allowFail: true });
        return ok(again);
      }),
    );
    return results.every(Boolean);
  }

  /** Whether INPUT and OUTPUT of both families jump to the lock's chain already. */
  private async hasJumps(ns: string): Promise<boolean> {
    const checks = XT_CHECK.flatMap((p) =>
      ['INPUT', 'OUTPUT'].map((chain) =>
        this.runner.run(inNetns(ns, [p, '-w', '-C', chain, '-j', LOCK_CHAIN]), { allowFail: true }),
      ),
    );
    return (await Promise.all(checks)).every((r) => r.code === 0);
  }
}
