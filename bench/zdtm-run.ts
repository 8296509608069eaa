// One zdtm static test in a ferry container, under zdtm's own protocol: start it as zdtm's Makefile does
// (`./NAME --pidfile=NAME.pid --outfile=NAME.out ...`), wait for the pidfile, optionally migrate the container
// a -> b, then SIGTERM the test and read PASS/FAIL from its outfile. ferry runs and migrates the container through
// its CLI, as a user does; the harness looks at where it runs and removes it through the agents' API (what
// `ferry ps` and `ferry rm` ask), which spares a CLI process per look.
import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdir, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ClusterClients } from '../src/api/cluster-clients.ts';
import { buildCommandBundle, writeConfig } from '../src/runtime/bundle.ts';
import { type Suite, startCommand, type TestDesc } from './zdtm-suite.ts';

/**
 * REFUSED: ferry refused the migration before the freeze (FERRY_E_CONTAINER_UNMOVABLE) and the test, left
 * running on the source, still passed: what the issue of a process CRIU cannot move should look like.
 * ROLLBACK: the migration failed inside the freeze (CRIU's dump or restore), ferry rolled it back, and the test,
 * thawed on the source, still passed: nothing was lost, but /proc could not tell beforehand.
 */
export type Outcome = 'PASS' | 'FAIL' | 'HANG' | 'REFUSED' | 'ROLLBACK';

export interface TestResult {
  outcome: Outcome;
  /** Why it did not pass: the test's own FAIL line, CRIU's first `Error (` line, or ferry's error. */
  reason?: string;
  ms: number;
}

export interface Harness {
  /** argv that runs the ferry CLI, e.g. ['node', 'src/cli/main.ts']. */
  ferryArgv: string[];
  clusterFile: string;
  /** Where bundles are staged (outside the git tree). */
  workDir: string;
  from: string;
  to: string;
  /**
   * Give tests without the `suid` flag zdtm's unprivileged uid (as zdtm.py does). CRIU then needs
   * CAP_SYS_RESOURCE to read the rlimits of a process of another uid; without it every such dump fails with
   * "Can't get rlimit", so the harness runs them as root there (see `canDropUid`).
   */
  dropUid: boolean;
}

/** CAP_SYS_RESOURCE (bit 24) in this process's effective set: whether CRIU can dump a process of another uid. */
export async function canDropUid(): Promise<boolean> {
  const status = await readFile('/proc/self/status', 'utf8');
  const hex = /^CapEff:\s+([0-9a-f]+)$/m.exec(status)?.[1] ?? '0';
  return ((BigInt(`0x${hex}`) >> 24n) & 1n) === 1n;
}

/** The uid/gid zdtm.py gives a test without the `suid` flag (the test drops to them after its setup). */
/**
 * What the suite's bundles ask beyond the agents' default bundle policy: the host's /usr and /etc bound read-only
 * (the tests are built against the host's libc) and runc's default capabilities (several tests change owners,
 * uids and capabilities). Each testbed agent is configured with it, as an operator would allow a trusted suite.
 */
export const ZDTM_BUNDLE_POLICY = {
  allowMounts: ['/usr', '/etc'],
  allowCapabilities: [
    'CAP_CHOWN',
    'CAP_DAC_OVERRIDE',
    'CAP_FSETID',
    'CAP_FOWNER',
    'CAP_MKNOD',
    'CAP_NET_RAW',
    'CAP_SETGID',
    'CAP_SETUID',
    'CAP_SETFCAP',
    'CAP_SETPCAP',
    'CAP_SYS_CHROOT',
  ],
};

const UNPRIVILEGED_ENV = ['ZDTM_UID=18943', 'ZDTM_GID=58467', 'ZDTM_GROUPS=27495 48244'];
const TEST_DIR = '/zdtm/static';
/**
 * How long a test may take to write its pidfile (its setup done) before it is taken as hung. Tests write it
 * within seconds; one that has not by then would otherwise hold a full run for the whole time limit.
 */
const START_LIMIT_MS = 45_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class Hang extends Error {}

function ferry(
  h: Harness,
  args: string[],
  signal: AbortSignal,
  timeoutMs = 120_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const [cmd, ...pre] = h.ferryArgv;
  return new Promise((resolve, reject) => {
    execFile(
      cmd!,
      [...pre, '--cluster', h.clusterFile, ...args],
      { signal, timeout: timeoutMs, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (signal.aborted) return reject(new Hang('time limit'));
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

function lastJson<T>(stdout: string): T | undefined {
  const line = stdout.trim().split('\n').pop();
  try {
    return line ? (JSON.parse(line) as T) : undefined;
  } catch {
    return undefined;
  }
}

/** Every host's copy of the container, as `ferry ps` lists them (an unreachable host lists none, as there). */
async function copiesOf(api: ClusterClients, name: string) {
  const lists = await Promise.allSettled(api.file.hosts.map((x) => api.client(x.name).containers()));
  return lists.flatMap((l, i) =>
    l.status === 'fulfilled'
      ? l.value.filter((c) => c.name === name).map((c) => ({ ...c, host: api.file.hosts[i]!.name }))
      : [],
  );
}

/** The container as `ferry ps` lists it (on any host): its status and its init pid on the host. */
async function listed(
  api: ClusterClients,
  name: string,
): Promise<{ status?: string; pid?: number; copies: number }> {
  const rows = await copiesOf(api, name);
  return { status: rows[0]?.status, pid: rows[0]?.pid, copies: rows.length };
}

/** The container's init pid on the host, as `ferry ps` shows it, while it runs. */
async function initPid(api: ClusterClients, name: string): Promise<number | undefined> {
  const c = await listed(api, name);
  return c.status === 'running' ? c.pid : undefined;
}

/** Host pid of the process whose pid is `nsPid` inside the pid namespace of `init` (from /proc NSpid). */
export async function hostPid(init: number, nsPid: number): Promise<number | undefined> {
  const ns = await readlink(`/proc/${init}/ns/pid`).catch(() => '');
  if (!ns) return undefined;
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const status = await readFile(`/proc/${e}/status`, 'utf8').catch(() => '');
    const m = /^NSpid:\s+(.+)$/m.exec(status);
    const ids = m?.[1]?.trim().split(/\s+/).map(Number);
    if (!ids || ids.at(-1) !== nsPid) continue;
    if ((await readlink(`/proc/${e}/ns/pid`).catch(() => '')) === ns) return Number(e);
  }
  return undefined;
}

/** Alive and not a zombie (the container's init never reaps: it is `sleep`). */
async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (!stat) return false;
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

function inContainer(init: number, file: string): string {
  return `/proc/${init}/root${TEST_DIR}/${file}`;
}

/** zdtm's verdict: PASS among the outfile's words (zdtm.py's check), else its last lines as the reason. */
export function verdict(out: string): { pass: boolean; reason?: string } {
  if (out.split(/\s+/).includes('PASS')) return { pass: true };
  const lines = out.trim().split('\n').filter(Boolean);
  const fail = lines.find((l) => /FAIL|ERR|Error/.test(l)) ?? lines.at(-1);
  return { pass: false, reason: fail ? `test: ${fail.trim()}` : 'test: empty outfile' };
}

/** The reason a migration failed: CRIU's first `Error (` line when ferry's message carries it, else ferry's error. */
export function migrationReason(stdout: string, stderr: string): string {
  const rep = lastJson<{ error?: { code?: string; phase?: string; message?: string } }>(stdout);
  const e = rep?.error;
  const text = `${e?.message ?? ''}\n${stderr}`;
  const criu = /Error \([^)]*\):[^\n]*/.exec(text)?.[0];
  if (criu) return `${e?.phase ?? 'migrate'}: ${criu.trim()}`;
  if (e) return `${e.code ?? 'error'} (${e.phase ?? '?'}): ${(e.message ?? '').split('\n')[0]}`;
  return (stderr.trim().split('\n').pop() ?? 'ferry migrate failed').slice(0, 300);
}

async function stageBundle(s: Suite, h: Harness, test: string, desc: TestDesc, dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  const argv = await startCommand(s, test);
  // The test forks its daemon and its parent exits once the pidfile is written; the container's init must
  // outlive it, so the shell that starts the test becomes `sleep` (which never reaps: the test's exit
  // status stays visible as a zombie).
  const script = `${argv.join(' ')}; exec sleep infinity`;
  const config = await buildCommandBundle(dir, ['/bin/sh', '-c', script], 'zdtm');
  config.process.cwd = TEST_DIR;
  config.process.env.push(
    'TMPDIR=/tmp',
    ...(desc.flags.includes('suid') || !h.dropUid ? [] : UNPRIVILEGED_ENV),
  );
  await writeConfig(dir, config);
  const td = join(dir, 'rootfs', TEST_DIR);
  await mkdir(td, { recursive: true });
  // writable for the unprivileged uid, as zdtm.py's __add_wperms makes the test directory
  await chmod(td, 0o777);
  await copyFile(join(s.staticDir, test), join(td, test));
  await chmod(join(td, test), 0o755);
}

/**
 * Runs one test: control (strategy undefined: start, SIGTERM, verdict) or a migration with that strategy.
 * Always removes the container; a run past `timeoutMs` is killed and reported as HANG.
 */
export async function runTest(
  s: Suite,
  h: Harness,
  test: string,
  desc: TestDesc,
  strategy: string | undefined,
  timeoutMs: number,
): Promise<TestResult> {
  const t0 = Date.now();
  const name = `z-${test}`.slice(0, 64);
  const dir = join(h.workDir, name);
  const api = await ClusterClients.load(h.clusterFile);
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  /** Where the run is, for a HANG's reason: which step the time limit cut short. */
  let stage = 'start';
  const done = (outcome: Outcome, reason?: string): TestResult => ({
    outcome,
    ...(reason ? { reason } : {}),
    ms: Date.now() - t0,
  });
  try {
    await stageBundle(s, h, test, desc, dir);
    const started = await ferry(
      h,
      ['run', '--host', h.from, '--name', name, '--bundle', dir, '--json'],
      ac.signal,
    );
    if (started.code !== 0)
      return done('FAIL', `ferry run: ${started.stderr.trim().split('\n').pop() ?? started.code}`);
    let init = lastJson<{ pid?: number }>(started.stdout)?.pid ?? (await initPid(api, name));
    if (!init) return done('FAIL', 'ferry run: no init pid');
    let testPid: number | undefined;
    let refused: string | undefined;
    let rolledBack: string | undefined;
    const startBy = Date.now() + Math.min(timeoutMs, START_LIMIT_MS);
    while (!ac.signal.aborted) {
      if (Date.now() > startBy)
        return done('HANG', `no pidfile ${Math.min(timeoutMs, START_LIMIT_MS) / 1000} s after the start`);
      const text = await readFile(inContainer(init, `${test}.pid`), 'utf8').catch(() => '');
      if (text.trim()) {
        testPid = Number(text.trim().split('\n')[0]);
        break;
      }
      if (!(await alive(init))) return done('FAIL', 'start: the container exited');
      // the test's parent exits non-zero when its setup fails; its outfile says why
      const out = await readFile(inContainer(init, `${test}.out`), 'utf8').catch(() => '');
      if (/FAIL|ERR/.test(out)) return done('FAIL', `start: ${verdict(out).reason}`);
      await sleep(100);
    }
    if (testPid === undefined) throw new Hang('no pidfile');
    if (strategy) {
      stage = `ferry migrate --strategy ${strategy}`;
      const m = await ferry(
        h,
        [
          'migrate',
          name,
          '--to',
          h.to,
          '--strategy',
          strategy,
          '--json',
          // the one CRIU option of a test's own that ferry takes per migration (the others it always passes)
          ...([...desc.opts, ...desc.dopts].includes('--skip-in-flight') ? ['--skip-in-flight'] : []),
        ],
        ac.signal,
        timeoutMs,
      );
      if (m.code !== 0) {
        const why = migrationReason(m.stdout, m.stderr);
        // refused before the freeze, or rolled back: either way the container must run on the source, as it was
        const unmovable = /FERRY_E_CONTAINER_UNMOVABLE/.test(why);
        const now = await listed(api, name);
        if (now.status !== 'running' || now.pid !== init || now.copies !== 1)
          return done(
            'FAIL',
            `${why}; ${unmovable ? 'REFUSED, YET' : 'ROLLBACK FAILED'}: the container is ${now.status ?? 'gone'}${now.pid !== init ? ' (another copy)' : ''}${now.copies > 1 ? `, listed ${now.copies} times` : ''}`,
          );
        if (unmovable) refused = why;
        else rolledBack = why;
        // the links made for the restore (CRIU's link_remap.N, made anew by ferry after the dump) must be gone
        const left = (await readdir(inContainer(init, '')).catch(() => [])).filter((f) =>
          /^link_remap\.\d+$/.test(f),
        );
        if (left.length)
          return done('FAIL', `${why}; the rollback left ${left.join(', ')} in the rootfs on the source`);
      } else {
        init = await initPid(api, name);
        if (!init) return done('FAIL', 'after migration: the container is not running');
      }
    }
    const pid = await hostPid(init, testPid);
    if (!pid) {
      const out = await readFile(inContainer(init, `${test}.out`), 'utf8').catch(() => '');
      return done('FAIL', `the test died before SIGTERM${out ? ` (${verdict(out).reason})` : ''}`);
    }
    stage = 'the test, after SIGTERM';
    process.kill(pid, 'SIGTERM');
    while (await alive(pid)) {
      if (ac.signal.aborted) throw new Hang('no exit after SIGTERM');
      await sleep(50);
    }
    const out = await readFile(inContainer(init, `${test}.out`), 'utf8').catch(() => '');
    const v = verdict(out);
    if (refused) return v.pass ? done('REFUSED', refused) : done('FAIL', `${v.reason} (after: ${refused})`);
    if (rolledBack)
      return v.pass
        ? done('ROLLBACK', rolledBack)
        : done('FAIL', `${v.reason} (after rollback: ${rolledBack})`);
    return v.pass ? done('PASS') : done('FAIL', v.reason);
  } catch (err) {
    if (err instanceof Hang || ac.signal.aborted)
      return done('HANG', `time limit ${timeoutMs / 1000} s, in ${stage}`);
    return done('FAIL', `harness: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
    await removeContainer(api, name);
    api.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Removes the container wherever it is; a migration the killed CLI left running may hold it for a while. */
async function removeContainer(api: ClusterClients, name: string): Promise<void> {
  for (let i = 0; i < 10; i++) {
    const copies = await copiesOf(api, name).catch(() => undefined);
    if (copies?.length === 0) return;
    const removed = await Promise.allSettled((copies ?? []).map((c) => api.client(c.host).remove(name)));
    if (copies && removed.every((r) => r.status === 'fulfilled')) return;
    await sleep(1000);
  }
}
