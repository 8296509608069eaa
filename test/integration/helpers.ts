// Shared test-bed plumbing for integration tests: a uniquely named testbed per test (or one for the tests of a file
// that cannot disturb each other, sharedBed), real runc and CRIU, and a check that nothing it created is left behind.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, type TestContext } from 'node:test';
import { ClusterContext } from '../../src/cli/context.ts';
import type { ContainerInfo } from '../../src/host/containers.ts';
import { hierarchies } from '../../src/runtime/cgroups.ts';
import { ProcessRunner, startBackground } from '../../src/runtime/exec.ts';
import { type TestbedState, testbedDown, testbedUp, type UpOptions } from '../../src/testbed/testbed.ts';

export const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
export const FERRY_ARGV = [process.execPath, '--no-warnings', MAIN];

// The CLIs and agents these tests start (with FERRY_ARGV, in environments copied from this one) keep Node's compile
// cache where bin/ferry keeps it, as they would when started by bin/ferry: each start then costs about a third of
// the CPU. An integration file starts dozens of them, so without it the tests measure Node compiling the sources.
// (Entries are keyed by the source's content: an edited file is compiled afresh.)
if (process.env['NODE_COMPILE_CACHE'] === undefined) {
  const home = process.env['HOME'];
  process.env['NODE_COMPILE_CACHE'] = home
    ? join(process.env['XDG_CACHE_HOME'] || join(home, '.cache'), 'ferry', 'node-compile-cache')
    : join(tmpdir(), 'ferry-node-compile-cache');
}

/** Why these tests cannot run here, or undefined when they can. On this project's CI machine they always run. */
export function missingPrerequisite(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (runc, CRIU, network namespaces)';
  try {
    const v = execFileSync('criu', ['--version'], { encoding: 'utf8' });
    if (!/Version: (4\.([2-9]|\d\d)|[5-9]\.)/.test(v)) return `needs CRIU >= 4.2 (found ${v.split('\n')[0]})`;
  } catch {
    return 'needs criu (make setup installs it)';
  }
  return undefined;
}

export function skipUnlessReady(t: TestContext): boolean {
  const why = missingPrerequisite();
  if (why && process.env['CI']) assert.fail(`integration prerequisites missing on CI: ${why}`);
  if (why) t.skip(why);
  return !why;
}

export interface Bed {
  name: string;
  state: TestbedState;
  env: NodeJS.ProcessEnv;
  ctx: ClusterContext;
  cli(
    args: string[],
    opts?: { timeoutMs?: number },
  ): Promise<{ code: number | null; stdout: string; stderr: string }>;
  down(): Promise<void>;
}

export async function startBed(
  hosts: string[],
  opts: {
    rate?: string;
    agentEnv?: Record<string, NodeJS.ProcessEnv>;
    controller?: UpOptions['controller'];
    bundlePolicy?: UpOptions['bundlePolicy'];
  } = {},
): Promise<Bed> {
  const name = `t${randomBytes(3).toString('hex').slice(0, 5)}`;
  const stateDir = mkdtempSync(join(tmpdir(), 'ferry-it-'));
  // (NODE_COMPILE_CACHE comes with process.env: see above)
  const env: NodeJS.ProcessEnv = { ...process.env, FERRY_STATE: stateDir };
  const runner = new ProcessRunner();
  const deps = { runner, env, ferryArgv: FERRY_ARGV };
  // a testbed that fails to come up takes itself down; its state directory goes here
  const state = await testbedUp(
    {
      name,
      hosts,
      ...(opts.rate ? { rate: opts.rate } : {}),
      ...(opts.agentEnv ? { agentEnv: opts.agentEnv } : {}),
      ...(opts.controller ? { controller: opts.controller } : {}),
      ...(opts.bundlePolicy ? { bundlePolicy: opts.bundlePolicy } : {}),
    },
    deps,
  ).catch((err: unknown) => {
    rmSync(stateDir, { recursive: true, force: true });
    throw err;
  });
  env['FERRY_CLUSTER'] = state.clusterFile;
  const ctx = await ClusterContext.load(state.clusterFile);
  let downed = false;
  return {
    name,
    state,
    env,
    ctx,
    cli(args, o = {}) {
      return new Promise((resolve) => {
        const child = spawn(process.execPath, ['--no-warnings', MAIN, ...args], {
          env,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => {
          stdout += d;
        });
        child.stderr.on('data', (d) => {
          stderr += d;
        });
        const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 120_000);
        child.on('close', (code) => {
          clearTimeout(timer);
          resolve({ code, stdout, stderr });
        });
      });
    },
    async down() {
      if (downed) return;
      downed = true;
      ctx.close();
      await testbedDown(name, deps);
      await assertNothingLeft(name);
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/**
 * One testbed for the tests of a file that cannot disturb each other: brought up by the first test that asks for it,
 * taken down (and checked for leftovers) after the file's last test, also when a test failed. A test that passes its
 * context gets the hosts emptied again when it ends (`removeContainers`), so the next one finds them empty.
 */
export function sharedBed(
  hosts: string[],
  opts: Parameters<typeof startBed>[1] = {},
): (t?: { after(fn: () => Promise<void>): void }) => Promise<Bed> {
  let bed: Promise<Bed> | undefined;
  after(async () => {
    const b = await bed?.catch(() => undefined);
    await b?.down();
  });
  return async (t) => {
    bed ??= startBed(hosts, opts);
    const b = await bed;
    t?.after(() => removeContainers(b));
    return b;
  };
}

/** Removes every container of the testbed, wherever it runs (a shared testbed between two tests). */
export async function removeContainers(bed: Bed): Promise<void> {
  for (const c of await containers(bed)) await bed.ctx.client(c.host).remove(c.name);
}

/** No netns, link, cgroup, mount, runc container or process of this testbed remains. */
/** Top-level cgroups (in any hierarchy) whose name matches. */
async function listCgroups(match: (name: string) => boolean): Promise<string[]> {
  const out: string[] = [];
  for (const h of await hierarchies()) {
    let dirs: string[] = [];
    try {
      dirs = readdirSync(h, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      // a hierarchy that cannot be read has nothing of ours
    }
    for (const d of dirs) if (match(d)) out.push(join(h, d));
  }
  return out;
}

export async function assertNothingLeft(name: string): Promise<void> {
  const prefix = `fy${name}`;
  const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  assert.ok(!netns.includes(`${prefix}-`), `network namespaces left: ${netns}`);
  const links = execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' });
  assert.ok(!new RegExp(`\\b${prefix}(br|h\\d|i\\d|c)`).test(links), `links left: ${links}`);
  const cgroups = await listCgroups((b) => b.startsWith(`${prefix}-`));
  assert.deepEqual(cgroups, [], 'cgroups left');
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
  assert.ok(!mounts.includes(`/testbeds/${name}/`), 'mounts left');
  const procs = readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`/testbeds/${name}/`);
      } catch {
        return false;
      }
    });
  assert.deepEqual(procs, [], 'processes left');
}

export async function containers(bed: Bed): Promise<ContainerInfo[]> {
  return (await bed.ctx.containers()).containers;
}

/**
 * Where the controller's picture (each host's last heartbeat) puts every container, as sorted `name@host:status`.
 * It can lag the agents by a heartbeat: a host can still list a container that has just moved away, and the
 * controller's plans take it as there (no host takes a second of a name).
 */
export async function controllerPlacement(bed: Bed): Promise<string[]> {
  const s = await bed.ctx.controller().cluster();
  return s.hosts.flatMap((h) => h.containers.map((c) => `${c.name}@${h.name}:${c.status}`)).sort();
}

/** Reads a file inside a running container through /proc (all simulated hosts share this kernel). */
export function readInContainer(pid: number, path: string): string {
  return readFileSync(`/proc/${pid}/root${path}`, 'utf8');
}

/**
 * The number a counter program keeps in /tmp/counter of its container. The programs rewrite it in place (truncate,
 * then write), so a read can fall between the two and find it empty: such a read is taken again.
 */
export async function readCounter(pid: number): Promise<number> {
  for (let i = 0; ; i++) {
    const value = Number.parseInt(readInContainer(pid, '/tmp/counter'), 10);
    if (!Number.isNaN(value) || i === 50) return value;
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Processes on the whole machine whose command line contains a marker. */
export function processesWith(marker: string): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(marker);
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** Running instances of a program: marker processes whose parent is not one (a fork before exec is not a copy). */
export function instancesOf(marker: string): number {
  const pids = new Set(processesWith(marker));
  let n = 0;
  for (const pid of pids) {
    try {
      const ppid = Number(/PPid:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
      if (!pids.has(ppid)) n++;
    } catch {
      // exited meanwhile
    }
  }
  return n;
}

/** Whether a process's cgroup is frozen (cgroup v1 freezer or v2): a frozen copy does not run. */
export function isFrozen(pid: number): boolean {
  try {
    for (const line of readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n')) {
      const [, controllers, path] = line.split(':');
      if (controllers === 'freezer' && path !== undefined)
        return readFileSync(`/sys/fs/cgroup/freezer${path}/freezer.state`, 'utf8').trim() !== 'THAWED';
      if (controllers === '' && path !== undefined && path !== '/') {
        const events = `/sys/fs/cgroup${path}/cgroup.events`;
        if (existsSync(events)) return /^frozen 1$/m.test(readFileSync(events, 'utf8'));
      }
    }
  } catch {
    // exited meanwhile
  }
  return false;
}

/**
 * A task that is exiting or has SIGKILL pending never runs its own code again. A frozen copy that is being killed
 * (the source after the commit) leaves the freezer to die, and is then neither frozen nor running.
 */
function isDying(pid: number, status: string): boolean {
  if (/^State:\s+[ZX]/m.test(status)) return true;
  // PF_EXITING (0x4) in the flags of /proc/PID/stat: the signal was taken, the task is on its way out
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const flags = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[6]);
  if ((flags & 0x4) !== 0) return true;
  const sigkill = 1n << 8n;
  for (const m of status.matchAll(/^(?:SigPnd|ShdPnd):\s+([0-9a-f]+)$/gm)) {
    if ((BigInt(`0x${m[1]}`) & sigkill) !== 0n) return true;
  }
  return false;
}

/**
 * Instances that run: as instancesOf, without the frozen ones (a source keeps its copy frozen until the
 * destination commits; decision 9).
 */
export function runningInstancesOf(marker: string): number {
  const pids = new Set(processesWith(marker));
  let n = 0;
  for (const pid of pids) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const ppid = Number(/PPid:\s+(\d+)/.exec(status)?.[1]);
      if (!pids.has(ppid) && !isFrozen(pid) && !isDying(pid, status)) n++;
    } catch {
      // exited meanwhile
    }
  }
  return n;
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      // not yet; kept so that a timeout says what went wrong last
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out waiting for ${what}${last === undefined ? '' : ` (last error: ${(last as Error).message ?? String(last)})`}`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function hostDir(bed: Bed, host: string): string {
  return join(bed.state.dir, 'hosts', host);
}

/** Nothing of a container remains on a host: no record, bundle, images, incoming state, runc state. */
export function assertHostClean(bed: Bed, host: string, name: string): void {
  const hd = hostDir(bed, host);
  assert.ok(!existsSync(join(hd, 'containers', name)), `${host} still has containers/${name}`);
  assert.deepEqual(readdirSync(join(hd, 'images')), [], `${host} images dir not empty`);
  assert.deepEqual(readdirSync(join(hd, 'incoming')), [], `${host} incoming dir not empty`);
  assert.ok(!existsSync(join(hd, 'runc', name)), `${host} runc still knows ${name}`);
}

/** The requests a counter server (servers.ts) has answered, from the file it keeps in its container. */
export async function served(bed: Bed, name: string): Promise<number> {
  const c = (await containers(bed)).find((x) => x.name === name);
  if (!c?.pid) return 0;
  try {
    return (await readCounter(c.pid)) || 0;
  } catch {
    return 0; // not written yet
  }
}

/** Waits until a counter server has answered `more` requests beyond `from` (the probe sends one every 2 ms). */
export async function servedPast(bed: Bed, name: string, from: number, more = 50): Promise<number> {
  return waitFor(
    `${name} answering the probe`,
    async () => {
      const n = await served(bed, name);
      return n >= from + more ? n : undefined;
    },
    60_000,
  );
}

export interface ProbeSummary {
  ok: boolean;
  replies: number;
  errors: number;
  resets: number;
  lost: number;
  maxGapMs: number;
  p99GapMs: number;
  serverValues?: { first: number; last: number; continuous: boolean };
  notes?: string[];
}

/** `ferry probe` in the testbed's client namespace, as a user would run it; stop() sends SIGINT and reads its JSON. */
/**
 * Probes still running: a test that fails before it stops its probe would leave the probe running, and the file's
 * process (and `make test` with it) waiting on that child forever. They go after the file's last test.
 */
const liveProbes = new Set<{ stop(signal?: NodeJS.Signals): Promise<unknown> }>();
after(async () => {
  await Promise.all([...liveProbes].map((p) => p.stop('SIGINT')));
});

export function startProbe(
  bed: Bed,
  kind: 'tcp' | 'udp' | 'redis',
  target: string,
): { stop(): Promise<ProbeSummary> } {
  const p = startBackground([...FERRY_ARGV, 'probe', kind, target, '--interval', '2', '--json'], bed.env);
  liveProbes.add(p);
  return {
    async stop() {
      const out = await p.stop('SIGINT');
      liveProbes.delete(p);
      try {
        return JSON.parse(out.stdout.trim().split('\n').pop() ?? '') as ProbeSummary;
      } catch {
        throw new Error(`probe printed no result: ${out.stdout}\n${out.stderr}`);
      }
    },
  };
}

/** Waits until a TCP port answers (from the root namespace, through the testbed's LAN bridge). */
export async function waitForPort(address: string, port: number, timeoutMs = 15_000): Promise<void> {
  await waitFor(
    `${address}:${port}`,
    () =>
      new Promise<boolean | undefined>((resolve) => {
        const s = connect({ host: address, port, timeout: 500 });
        s.on('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(undefined));
        s.on('timeout', () => {
          s.destroy();
          resolve(undefined);
        });
      }),
    timeoutMs,
  );
}

export const counterCommand = (marker: string) => [
  '/bin/busybox',
  'sh',
  '-c',
  `i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.02; done # ${marker}`,
];
