// docs/conformance.md: the table `ferry bench zdtm` writes, read back so that a run of a few tests replaces only
// their rows. Each row carries the date of the run it comes from; the summary is counted from the rows.
import type { Outcome, TestResult } from './zdtm-run.ts';

export const COLUMN: Record<string, string> = {
  cold: 'cold',
  postcopy: 'post-copy',
  precopy: 'pre-copy',
  auto: 'auto',
};

/** One test's row: the outcome of each run (`-`: not run) and the first reason it did not pass. */
export interface DocRow {
  test: string;
  control: string;
  /** strategy -> outcome */
  cells: Record<string, string>;
  reason: string;
  /** The date of the run the row comes from (YYYY-MM-DD). */
  run: string;
}

export interface Doc {
  criu: string;
  kernel: string;
  /** Whether tests without the `suid` flag ran as zdtm's unprivileged uid. */
  dropUid: boolean;
  /** The date of the last run of every test. */
  fullRun: string;
  /** The CRIU and kernel of that run (`CRIU 4.2.1, kernel 6.18.0`) when later rows ran on others. */
  fullEnv?: string;
  rows: DocRow[];
  skipped: { test: string; why: string }[];
  /**
   * The tests in the table that zdtm marks `crfail` (it expects CRIU's dump to fail), read from their
   * descriptions when the doc is written: the summary counts the pass rate both with and without them.
   */
  crfail?: string[];
}

export interface ZdtmTestReport {
  test: string;
  skipped?: string;
  control?: TestResult;
  migrations: Record<string, TestResult>;
}

/**
 * What a test's row cannot show: why it ends as it does, where that is not ferry's to fix. Written into the
 * doc's notes for the tests whose row is there.
 */
export const NOTES: Record<string, string> = {
  file_locks01:
    'looks its locks up in /proc/self/fdinfo by the device and inode numbers it saw before the dump. Its outfile after a cold migration: it expects its read lock on inode 1679967 and finds `FLOCK ADVISORY READ 7 fe:00:1679972`, its write lock on 1679968 and finds it on 1679973: CRIU restored both locks, with their type, owner and device, on the files of the copied rootfs, whose inode numbers differ (file_locks00 and 02-05, which find their locks by pid or fd, pass). Inode numbers cannot be kept across hosts; ferry does not refuse flock users for it, since /proc cannot tell a program that remembers inode numbers from one that does not',
  unlink_fstat03:
    'compares the device and inode number of an open, unlinked file (another hard link to it remains) before and after: the device matches, the inode number does not (its line 82), since on the destination the file is a copy. The migration itself works: ferry makes again the link CRIU needs for such a file, `link_remap.N`, which CRIU removes at the end of a dump that leaves the tasks running. Inode numbers cannot be kept across hosts, and refusing every open file with a removed name would refuse programs that do not care',
  'socket-tcpbuf':
    "refused: a loopback TCP connection with full buffers. CRIU restores it stalled, with or without ferry. Every restored socket of the container has an MSS of 524 bytes (its segment size is fixed by the connect CRIU makes in repair mode, before it restores the MSS clamp), and within seconds of the restore the reader's queue is over its receive buffer (8388992 to 8392648 bytes held against 8388608, measured): it drops every segment, both ends back off (3 to 4 backoffs 6 s after the restore, 7 by 29 s) while the test waits on its peer, and the test does not end within its time limit. Through ferry with the refusal lifted, cold migrations passed 3 of 4 times and post-copy ones 0 of 3 (pre-copy and auto 1 of 1 each) in one series, and a cold and a post-copy one both hung in a later one. CRIU alone, by hand on one host (no ferry, no runc: the test in a namespace of its own, `criu dump --tcp-established`, `criu restore --tcp-established`), hung 7 times of 7 (no verdict 45 s after SIGTERM; 3 restored into a namespace CRIU made, 4 into the kept namespace given back with `--inherit-fd`, as runc gives a container's), with the same MSS, queue and backoffs (the namespace's counters after one of them: 18 segments beyond the window, 7 prunes, 1877 segments collapsed, 14 window probes), although two earlier tries by hand had passed. So it is not something ferry does differently. CRIU writes a restored socket's queues with both of its buffers at their maximum and sets the dumped sizes only afterwards (criu/sk-tcp.c, criu/sk-inet.c of CRIU 4.2), so nothing bounds the queue's memory by the dumped receive buffer while it is rebuilt. Not the namespace's settings: during a cold and a post-copy migration, the TCP, core and loopback settings (`sysctl` net.ipv4.tcp_*, net.core.*, lo) of the container's namespace on the source and on the destination were identical, 194 values, and equal to the host's (a new namespace copies the host's TCP settings). Not ferry's lock, held until the commit: letting the container's loopback through it at CRIU's post-restore step, where CRIU lifts its own lock, did not prevent the stall (and letting it through during the restore breaks it: CRIU's resend of unsent data meets a reset). Changing the loopback MTU right after the restore brings a socket that sends at that moment back to 65483 bytes, but not one waiting in retransmission backoff",
  'socket-tcpbuf-local': 'refused, as socket-tcpbuf',
  'socket-tcpbuf6': 'refused, as socket-tcpbuf (over IPv6)',
  'socket-tcpbuf6-local': 'refused, as socket-tcpbuf (over IPv6)',
  'sk-unix-listen02':
    "crfail: refused, a unix connection not yet accepted holding data its client sent (CRIU cannot take data out of a connection in flight). /proc shows such a connection but not what it holds: ferry asks the kernel's socket diagnostics (ss) whenever /proc shows one",
  'sk-unix-listen03':
    'crfail: refused, a unix connection not yet accepted whose client has closed its end (CRIU cannot dump it); found as for sk-unix-listen02',
  'sk-unix-listen04': 'crfail: refused, as sk-unix-listen03 (the client sent data, then closed)',
  sigtrap: "crfail: refused, a pending SIGTRAP (CRIU's parasite code uses SIGTRAP itself)",
  ...Object.fromEntries(
    ['pid00', 'mlock_setuid', 'seccomp_filter'].map((t) => [
      t,
      "refused: it changes to another uid, and this host's agent lacks CAP_SYS_RESOURCE. CRIU reads each task's rlimits with prlimit64() on its pid, which the kernel allows a process of another uid only when the caller's uid and gid equal all of the task's real, effective and saved ids (pid00 has three different ones) or when the caller has CAP_SYS_RESOURCE over the task's user namespace. This host drops CAP_SYS_RESOURCE from every process's bounding set (`capsh --print`: `!cap_sys_resource`), root's included, so no agent here can have it (an agent that has it does not refuse such a process). The way around it, a container in a user namespace of its own (whose owner, the agent's root, has every capability in it), does not apply: CRIU then refuses the dump (\"One or more namespaces doesn't belong to the target user namespace\"), since the container's network namespace, which ferry makes before the container to carry its address from host to host, belongs to the host's user namespace",
    ]),
  ),
  ...Object.fromEntries(
    ['stopped', 'stopped01', 'stopped02', 'stopped03', 'stopped04', 'stopped12'].map((t) => [
      t,
      "a task stopped by a signal. CRIU seizes the tasks of a container frozen by a cgroup-v1 freezer with ptrace, which waits in the kernel for a frozen, stopped task until the cgroup is thawed: CRIU's dump would hang. For a container with such a task ferry has CRIU seize every task with ptrace alone (CRIU's interrupt-only mode); the freezer holds the container again before the tasks are let go, and the task is restored stopped",
    ]),
  ),
  file_lease02:
    'refused: leases being broken. CRIU restores such a lease by breaking it again (criu/file-lock.c, with the lease-break signal blocked only while it breaks it), which leaves the test a second lease-break signal it does not expect; CRIU alone (dump and restore on one host, no ferry, CRIU 4.2.1) fails it the same way: "Unexpected fd(4)", then "Ghost signal"',
  ptrace_sig: 'crfail: refused, a traced task (CRIU seizes every task with ptrace)',
  'socket_udp-corked': 'crfail: refused, a corked UDP socket',
  'socket-tcp-skip-in-flight':
    "a listening socket with a connection not yet accepted, which CRIU refuses to dump unless told to drop such connections (--skip-in-flight, the test's own option): migrated with `ferry migrate --skip-in-flight`. Without it ferry refuses such a container before the freeze",
};

/** Unescaped `|` separates cells; a reason's own pipes are written `\|`. */
function cells(line: string): string[] {
  return line
    .trim()
    .replace(/^\||\|$/g, '')
    .split(/(?<!\\)\|/)
    .map((c) => c.trim());
}

/** Strips what changes between runs (image directory names, paths of a testbed) from a reason. */
export function stable(reason: string): string {
  return reason
    .replace(/ \(CRIU log: [^)]*\)/g, '')
    .replace(/; rolled back: .*$/, '')
    .replace(/\|/g, '\\|')
    .slice(0, 240);
}

function firstReason(r: ZdtmTestReport, strategies: string[]): string {
  if (r.control?.outcome !== 'PASS') return `control: ${r.control?.reason ?? r.control?.outcome}`;
  for (const st of strategies) {
    const m = r.migrations[st];
    if (m && m.outcome !== 'PASS') return `${st}: ${m.reason ?? m.outcome}`;
  }
  return '';
}

/** A run's reports as rows and skipped entries, dated `run`. */
export function rowsOf(
  reports: ZdtmTestReport[],
  strategies: string[],
  run: string,
): { rows: DocRow[]; skipped: Doc['skipped'] } {
  const rows: DocRow[] = [];
  const skipped: Doc['skipped'] = [];
  for (const r of reports) {
    if (r.skipped) {
      skipped.push({ test: r.test, why: r.skipped });
      continue;
    }
    rows.push({
      test: r.test,
      control: r.control?.outcome ?? '-',
      cells: Object.fromEntries(strategies.map((st) => [st, r.migrations[st]?.outcome ?? '-'])),
      reason: stable(firstReason(r, strategies)),
      run,
    });
  }
  return { rows, skipped };
}

const OUTCOMES: Outcome[] = ['PASS', 'REFUSED', 'ROLLBACK', 'FAIL', 'HANG'];

export function summary(rows: DocRow[], strategies: string[], skipped: number) {
  const control = rows.filter((r) => r.control === 'PASS').length;
  const per: Record<string, Record<Outcome, number>> = {};
  for (const st of strategies) {
    per[st] = Object.fromEntries(
      OUTCOMES.map((o) => [o, rows.filter((r) => r.control === 'PASS' && r.cells[st] === o).length]),
    ) as Record<Outcome, number>;
  }
  return { tests: rows.length + skipped, skipped, ran: rows.length, control, per };
}

const pct = (n: number, of: number) => (of ? `${((100 * n) / of).toFixed(1)} %` : '-');

/** Each strategy's outcomes, as the summary line gives them: `cold PASS 221 (90.9 %), REFUSED 20, FAIL 2; ...`. */
function counts(s: ReturnType<typeof summary>, strategies: string[]): string {
  return strategies
    .map((st) => {
      const c = s.per[st]!;
      const rest = (['REFUSED', 'ROLLBACK', 'FAIL', 'HANG'] as const)
        .filter((o) => c[o] > 0 || o === 'REFUSED')
        .map((o) => `${o} ${c[o]}`)
        .join(', ');
      return `${COLUMN[st] ?? st} PASS ${c.PASS} (${pct(c.PASS, s.control)}), ${rest}`;
    })
    .join('; ');
}

export function renderConformance(doc: Doc, strategies: string[]): string {
  const rows = [...doc.rows].sort((a, b) => a.test.localeCompare(b.test));
  const skipped = [...doc.skipped].sort((a, b) => a.test.localeCompare(b.test));
  const s = summary(rows, strategies, skipped.length);
  // only those whose control passed: the rest never reached a migration
  const crfail = (doc.crfail ?? [])
    .filter((t) => rows.some((r) => r.test === t && r.control === 'PASS'))
    .sort();
  const movable = summary(
    rows.filter((r) => !crfail.includes(r.test)),
    strategies,
    0,
  );
  const later = [...new Set(rows.map((r) => r.run).filter((d) => d !== doc.fullRun))].sort();
  const lines = [
    "# Conformance: CRIU's zdtm static tests in ferry containers",
    '',
    `Generated by \`ferry bench zdtm\` (bench/zdtm.ts); do not edit by hand. The rows come from the run of every test on ${doc.fullRun}` +
      (later.length
        ? `, except those re-run since with \`ferry bench zdtm --tests\` (on ${later.join(', ')}), which replaced only their own rows: the \`run\` column says which run each row comes from.`
        : '.'),
    '',
    `CRIU ${doc.criu} (the zdtm tests from its Debian source), kernel ${doc.kernel}.`,
    ...(doc.fullEnv ? [`The run of every test used ${doc.fullEnv}.`] : []),
    '',
    "Each test runs in a ferry container (`ferry run --bundle`, the host's /usr and /etc read-only) as zdtm's",
    "Makefile starts it, with zdtm's environment (TMPDIR; the unprivileged uid for tests without the `suid` flag",
    doc.dropUid
      ? 'as zdtm.py gives it).'
      : "is not used here: this host lacks CAP_SYS_RESOURCE (it drops it from every process's bounding set), without which CRIU cannot read the rlimits of a process of another uid, so every test runs as root).",
    "**control**: start, SIGTERM, the test's verdict, no migration. **cold / post-copy / pre-copy / auto**:",
    'start, `ferry migrate --to b --strategy S`, SIGTERM on the destination, the verdict. A migration runs only',
    'where the control passed. Skipped: what zdtm itself would not run in a default run here (`noauto`,',
    'namespace-only flavors, missing CRIU features, `checkskip`) and what does not build. The `crfail` tests',
    "(zdtm expects CRIU's dump to fail) run: ferry has to refuse them before the freeze or roll them back.",
    '',
    `Tests: ${s.tests}; run: ${s.ran}; control PASS: ${s.control}. After a migration, of the ${s.control} ` +
      `whose control passed: ${counts(s, strategies)}.`,
    ...(crfail.length
      ? [
          '',
          `Of the ${movable.control} whose control passed and that CRIU can migrate at all (all but the ` +
            `${s.control - movable.control} \`crfail\` ones: ${crfail.join(', ')}): ${counts(movable, strategies)}.`,
        ]
      : []),
    '',
    '**REFUSED**: ferry refused the migration before the freeze (`FERRY_E_CONTAINER_UNMOVABLE`, a process state',
    "CRIU cannot dump or restore, read from /proc and, for unix sockets, the kernel's socket diagnostics), the container ran on untouched and the test still passed.",
    "**ROLLBACK**: the migration failed inside the freeze (CRIU's dump or restore), ferry thawed the container on",
    'the source (it was found running there, once, with the same init) and the test still passed. **FAIL** after',
    'a migration includes a rollback that lost the container (its reason then says `ROLLBACK FAILED`). **HANG**: the',
    'run passed its time limit; its reason names the step it was in.',
    '',
    `| test | control | ${strategies.map((st) => COLUMN[st] ?? st).join(' | ')} | reason | run |`,
    `| --- | --- | ${strategies.map(() => '---').join(' | ')} | --- | --- |`,
  ];
  for (const r of rows)
    lines.push(
      `| ${r.test} | ${r.control} | ${strategies.map((st) => r.cells[st] ?? '-').join(' | ')} | ${r.reason} | ${r.run} |`,
    );
  const notes = rows.filter((r) => NOTES[r.test]);
  if (notes.length) {
    lines.push('', '## Notes', '', 'Why some tests end as they do, where ferry cannot do better:', '');
    for (const r of notes) lines.push(`- **${r.test}**: ${NOTES[r.test]}.`);
  }
  lines.push('', '## Skipped', '', '| test | why |', '| --- | --- |');
  for (const k of skipped) lines.push(`| ${k.test} | ${k.why} |`);
  return `${lines.join('\n')}\n`;
}

/** Reads a conformance.md back (this generator's, or the one before the `run` column); undefined if it is not one. */
export function parseConformance(md: string, strategies: string[]): Doc | undefined {
  const env =
    /^CRIU (\S+) \(the zdtm tests from its Debian source\), kernel ([^,\s]+?)(?:, (\d{4}-\d\d-\d\d))?\.$/m.exec(
      md,
    );
  const full =
    /the run of every test on (\d{4}-\d\d-\d\d)/.exec(md)?.[1] ??
    env?.[3] ??
    /(\d{4}-\d\d-\d\d)/.exec(md)?.[1];
  if (!env || !full) return undefined;
  const lines = md.split('\n');
  const head = lines.findIndex((l) => l.startsWith('| test | control |'));
  if (head < 0) return undefined;
  const cols = cells(lines[head]!);
  const byName = (c: string) => cols.indexOf(c);
  if (strategies.some((st) => byName(COLUMN[st] ?? st) < 0)) return undefined;
  const rows: DocRow[] = [];
  for (let i = head + 2; i < lines.length && lines[i]!.startsWith('|'); i++) {
    const c = cells(lines[i]!);
    rows.push({
      test: c[0]!,
      control: c[byName('control')]!,
      cells: Object.fromEntries(strategies.map((st) => [st, c[byName(COLUMN[st] ?? st)] ?? '-'])),
      reason: c[byName('reason')] ?? '',
      run: byName('run') >= 0 ? (c[byName('run')] ?? full) : full,
    });
  }
  const skipped: Doc['skipped'] = [];
  const sk = lines.indexOf('## Skipped');
  if (sk >= 0)
    for (const l of lines.slice(sk)) {
      if (!l.startsWith('| ') || l.startsWith('| test |') || l.startsWith('| ---')) continue;
      const [test, why] = cells(l);
      if (test) skipped.push({ test, why: why ?? '' });
    }
  const fullEnv = /^The run of every test used (CRIU \S+, kernel \S+)\.$/m.exec(md)?.[1];
  const crfail =
    /^Of the \d+ whose control passed and that CRIU can migrate at all \(all but the \d+ `crfail` ones: ([^)]*)\)/m
      .exec(md)?.[1]
      ?.split(', ')
      .filter(Boolean);
  return {
    criu: env[1]!,
    kernel: env[2]!,
    dropUid: md.includes('as zdtm.py gives it).'),
    fullRun: full,
    ...(fullEnv ? { fullEnv } : {}),
    rows,
    skipped,
    ...(crfail?.length ? { crfail } : {}),
  };
}

/** The doc with a partial run's rows and skips in place of the old ones for the same tests; the rest untouched. */
export function mergeRun(
  old: Doc,
  fresh: { rows: DocRow[]; skipped: Doc['skipped'] },
  meta: Pick<Doc, 'criu' | 'kernel' | 'dropUid'>,
): Doc {
  const redone = new Set([...fresh.rows, ...fresh.skipped].map((r) => r.test));
  const fullEnv =
    old.fullEnv ??
    (old.criu !== meta.criu || old.kernel !== meta.kernel
      ? `CRIU ${old.criu}, kernel ${old.kernel}`
      : undefined);
  return {
    ...meta,
    fullRun: old.fullRun,
    ...(fullEnv ? { fullEnv } : {}),
    rows: [...old.rows.filter((r) => !redone.has(r.test)), ...fresh.rows],
    skipped: [...old.skipped.filter((k) => !redone.has(k.test)), ...fresh.skipped],
  };
}
