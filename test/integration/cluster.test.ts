// The controller with real agents: heartbeats, greedy rebalance by live migration, drain, restart, bad input. The
// silent-host and the restart cases share one testbed; each removes its containers when it ends.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { MigrationRecord } from '../../src/cluster/store.ts';
import { ProcessRunner } from '../../src/runtime/exec.ts';
import { startAgent, startController, stopAgent, stopController } from '../../src/testbed/testbed.ts';
import {
  type Bed,
  containers,
  FERRY_ARGV,
  instancesOf,
  removeContainers,
  sharedBed,
  skipUnlessReady,
  startBed,
  waitFor,
} from './helpers.ts';

/** Three hosts and a controller that marks a host down after 3 s without a heartbeat (one every 500 ms). */
const bedOf = sharedBed(['a', 'b', 'c'], {
  controller: { heartbeatMs: 500, heartbeatTimeoutMs: 3000, rebalanceIntervalMs: 0, cooldownMs: 0 },
});

type Summary = {
  hosts: {
    name: string;
    up: boolean;
    loadPercent: number;
    containers: { name: string; cpuPercent: number }[];
  }[];
};

/** What `ferry cluster --json` prints, asked in this process (the waits below ask it many times). */
async function summary(bed: Bed): Promise<Summary> {
  return (await bed.ctx.controller().cluster()) as Summary;
}

/** `ferry cluster --json` itself. */
async function summaryByCli(bed: Bed): Promise<Summary> {
  const r = await bed.cli(['cluster', '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Summary;
}

const burner = (marker: string, load: number) => [
  '/usr/bin/stress-ng',
  '--cpu',
  '1',
  '--cpu-load',
  String(load),
  '--timeout',
  '0',
  '--quiet',
  '--metrics-brief',
  `--taskset`,
  '0',
  '--log-file',
  `/tmp/${marker}`,
];

test('controller: CPU burners started on one host are spread by live migration until no host is over target', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await startBed(['a', 'b', 'c'], {
    controller: { heartbeatMs: 500, heartbeatTimeoutMs: 5000, rebalanceIntervalMs: 0, cooldownMs: 0 },
  });
  t.after(() => bed.down());
  const names = ['burn1', 'burn2', 'burn3'];
  for (const n of names) {
    const r = await bed.cli(['run', '--host', 'a', '--name', n, '--', ...burner(`${bed.name}-${n}`, 30)]);
    assert.equal(r.code, 0, r.stderr);
  }
  // the controller sees the load (three burners on a: ~90 % of its declared core on an idle machine). On a busy
  // machine the burners get less of the CPU than they ask and the moving average climbs slowly: after a minute any
  // clear load will do, and the target is half of what a carries, so the plan is the same either way (shed until
  // no host is over target)
  const waitStart = Date.now();
  const loadA = await waitFor(
    "a loaded in the controller's view",
    async () => {
      // asked once a heartbeat: a tighter loop would only take CPU from the burners
      await new Promise((r) => setTimeout(r, 500));
      const l = (await summary(bed)).hosts.find((h) => h.name === 'a')?.loadPercent ?? 0;
      return l > 60 || (l > 20 && Date.now() - waitStart > 60_000) ? l : undefined;
    },
    180_000,
  );
  const target = String(Math.floor(loadA / 2));
  t.diagnostic(`a at ${loadA.toFixed(0)} %: target ${target} %`);
  // the load is a moving average of CPU shares: it can dip under the target between two heartbeats, so the dry
  // run is asked again until it sees the load (a dry run changes nothing)
  type Plan = { moves: { container: string; from: string; to: string }[] };
  const plan = await waitFor(
    'a dry run that plans moves',
    async () => {
      const dry = await bed.cli(['rebalance', '--dry-run', '--target', target, '--json']);
      assert.equal(dry.code, 0, dry.stderr);
      const p = JSON.parse(dry.stdout).plan as Plan;
      return p.moves.length >= 1 ? p : undefined;
    },
    30_000,
  );
  assert.ok(plan.moves.length >= 1, 'the dry run plans moves');
  assert.equal((await containers(bed)).filter((c) => c.host === 'a').length, 3, 'a dry run moves nothing');
  // the real rebalance plans again from the loads of that moment, which may have dipped under the target since the
  // dry run: a rebalance that plans nothing moves nothing, so it is asked again (for up to a minute) until it moves
  let out: { migrations: MigrationRecord[] } = { migrations: [] };
  for (const deadline = Date.now() + 60_000; out.migrations.length === 0 && Date.now() < deadline; ) {
    const real = await bed.cli(['rebalance', '--target', target, '--json']);
    assert.equal(real.code, 0, `${real.stdout}\n${real.stderr}`);
    out = JSON.parse(real.stdout) as { migrations: MigrationRecord[] };
    if (out.migrations.length === 0) await new Promise((r) => setTimeout(r, 1000));
  }
  assert.ok(out.migrations.length >= 1, 'a rebalance migrates at least one burner');
  assert.ok(
    out.migrations.every((m) => m.status === 'done'),
    JSON.stringify(out.migrations),
  );
  const list = await containers(bed);
  assert.deepEqual(list.map((c) => c.name).sort(), names, 'every container still exists');
  assert.ok(list.every((c) => c.status === 'running'));
  assert.ok(new Set(list.map((c) => c.host)).size >= 2, 'the burners are spread');
  for (const n of names) assert.equal(instancesOf(`/tmp/${bed.name}-${n}`), 1, `${n} runs exactly once`);
  const history = JSON.parse((await bed.cli(['rebalance', '--dry-run', '--json'])).stdout);
  assert.ok(history.plan);
  t.diagnostic(
    `moves: ${out.migrations.map((m) => `${m.container} ${m.from}->${m.to} freeze ${m.freezeMs} ms`).join('; ')}`,
  );
});

test('controller: a silent host is marked down and excluded; it comes back by heartbeating; drain empties a host; bad input is refused', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await bedOf();
  const deps = { runner: new ProcessRunner(), env: bed.env, ferryArgv: FERRY_ARGV };
  const hostC = bed.state.hosts.find((h) => h.name === 'c')!;
  let cStopped = false;
  t.after(async () => {
    // the next test finds every agent up and the hosts empty
    if (cStopped) await startAgent(bed.state, hostC, deps);
    await removeContainers(bed);
  });
  for (const n of ['s1', 's2']) {
    assert.equal(
      (await bed.cli(['run', '--host', 'a', '--name', n, '--', '/bin/busybox', 'sleep', '100000'])).code,
      0,
    );
  }
  await waitFor(
    'all hosts up',
    async () => (await summary(bed)).hosts.filter((h) => h.up).length === 3 || undefined,
    15_000,
  );
  cStopped = true;
  await stopAgent(bed.state, hostC);
  await waitFor(
    'c marked down',
    async () => (await summary(bed)).hosts.find((h) => h.name === 'c')?.up === false || undefined,
    15_000,
  );
  // drain a while c is down: everything goes to b
  const d = await bed.cli(['drain', 'a', '--json']);
  assert.equal(d.code, 0, `${d.stdout}\n${d.stderr}`);
  const list = await containers(bed);
  assert.deepEqual(list.map((c) => [c.name, c.host]).sort(), [
    ['s1', 'b'],
    ['s2', 'b'],
  ]);
  await startAgent(bed.state, hostC, deps);
  cStopped = false;
  await waitFor(
    'c back up',
    async () => (await summary(bed)).hosts.find((h) => h.name === 'c')?.up === true || undefined,
    15_000,
  );
  assert.deepEqual(
    (await summaryByCli(bed)).hosts.map((h) => [h.name, h.up]).sort(),
    [
      ['a', true],
      ['b', true],
      ['c', true],
    ],
    'the CLI shows every host up',
  );
  // placement without --host goes through the controller
  const placed = await bed.cli([
    'run',
    '--name',
    'placed',
    '--json',
    '--',
    '/bin/busybox',
    'sleep',
    '100000',
  ]);
  assert.equal(placed.code, 0, placed.stderr);
  assert.ok(
    ['a', 'c'].includes(JSON.parse(placed.stdout).host),
    'placed on a host with room (not the busiest)',
  );
  // bad input: nothing changes (the refusals run at once, and what they left is looked at once after them all)
  const before = JSON.stringify((await containers(bed)).map((c) => [c.name, c.host]).sort());
  const refusals = [
    [['drain', 'nosuch'], 'FERRY_E_HOST_UNKNOWN'],
    [['rebalance', '--target', '0'], 'FERRY_E_INPUT_ARGS'],
    [['rebalance', '--target', '101'], 'FERRY_E_INPUT_ARGS'],
    [['drain', '../a'], 'FERRY_E_INPUT_NAME'],
  ] as const;
  const answers = await Promise.all(refusals.map(([args]) => bed.cli([...args])));
  for (const [i, [args, code]] of refusals.entries()) {
    const r = answers[i]!;
    // exit status 2: the command line was refused as such; 1: any other refusal
    const usage = code === 'FERRY_E_INPUT_ARGS' || code === 'FERRY_E_INPUT_NAME';
    assert.equal(r.code, usage ? 2 : 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`^ferry: ${code}: `, 'm'));
  }
  await assert.rejects(
    bed.ctx.controller().request('POST', '/v1/rebalance', { json: { targetPercent: 'x' } }),
    /malformed request/,
  );
  await assert.rejects(bed.ctx.controller().request('POST', '/v1/drain', { json: {} }), /malformed request/);
  assert.equal(JSON.stringify((await containers(bed)).map((c) => [c.name, c.host]).sort()), before);
  // a drain that cannot empty its host exits 1 and names what stays: a container whose process ended is not
  // migratable (a script powering the host off after the drain must stop there)
  const ended = await bed.cli(['run', '--host', 'c', '--name', 'ended', '--', '/bin/busybox', 'true']);
  assert.equal(ended.code, 0, ended.stderr);
  await waitFor(
    'the ended container stopped',
    async () => (await containers(bed)).find((c) => c.name === 'ended' && c.status === 'stopped'),
    15_000,
  );
  await waitFor(
    'the controller sees it',
    async () =>
      (await summary(bed)).hosts.find((h) => h.name === 'c')?.containers.some((c) => c.name === 'ended') ||
      undefined,
    15_000,
  );
  const left = await bed.cli(['drain', 'c']);
  assert.equal(left.code, 1, `${left.stdout}\n${left.stderr}`);
  assert.match(left.stdout, /ended on c: not migratable, left in place/);
  assert.match(left.stderr, /^ferry: c is not empty: left on it: ended /m);
  assert.deepEqual(
    (await containers(bed)).filter((c) => c.host === 'c').map((c) => c.name),
    ['ended'],
    'everything else moved off c',
  );
});

test('controller: a restart in the middle of a drain resumes it without repeating a move', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await bedOf();
  t.after(() => removeContainers(bed));
  const deps = { runner: new ProcessRunner(), env: bed.env, ferryArgv: FERRY_ARGV };
  const names = ['d1', 'd2', 'd3', 'd4'];
  for (const n of names) {
    const r = await bed.cli(['run', '--host', 'a', '--name', n, '--', '/bin/busybox', 'sleep', '100000']);
    assert.equal(r.code, 0, `run ${n}: ${r.stderr}`);
  }
  await waitFor(
    'a reported',
    async () => {
      const a = (await summary(bed)).hosts.find((h) => h.name === 'a');
      return (
        (a?.containers.length === 4 &&
          a.containers.every((c) => (c as { status?: string }).status === 'running')) ||
        undefined
      );
    },
    15_000,
  );
  const r = await bed.ctx
    .controller()
    .request<{ batch: string; plan: unknown }>('POST', '/v1/drain', { json: { host: 'a' } });
  // kill the controller once the first move has started
  await waitFor(
    'a move under way',
    async () =>
      (await bed.ctx.controller().request<MigrationRecord[]>('GET', `/v1/batches/${r.batch}`)).some(
        (m) => m.status !== 'planned',
      ) || undefined,
    15_000,
  );
  await stopController(bed.state, 'SIGKILL');
  await startController(bed.state, deps);
  const final = await waitFor(
    'the drain finished',
    async () => {
      const ms = await bed.ctx.controller().request<MigrationRecord[]>('GET', `/v1/batches/${r.batch}`);
      return ms.every((m) => m.status === 'done' || m.status === 'failed') ? ms : undefined;
    },
    120_000,
  );
  const list = await containers(bed);
  assert.deepEqual(list.map((c) => c.name).sort(), names, 'every container still exists');
  assert.deepEqual(
    list.filter((c) => c.host === 'a'),
    [],
    `a is empty: ${JSON.stringify(r.plan)} ${JSON.stringify(list.map((c) => [c.name, c.host, c.status]))} ${JSON.stringify(final.map((m) => [m.container, m.status, m.error, m.startedAt, m.finishedAt]))}`,
  );
  assert.equal(final.length, 4, 'one record per container, none repeated');
  assert.equal(new Set(final.map((m) => m.container)).size, 4);
  // (the controller also remembers the earlier test's moves, of other containers)
  const all = (await bed.ctx.controller().request<MigrationRecord[]>('GET', '/v1/migrations')).filter((m) =>
    names.includes(m.container),
  );
  assert.equal(
    all.filter((m) => m.status === 'done').length,
    final.filter((m) => m.status === 'done').length,
    'no extra migration',
  );
});
