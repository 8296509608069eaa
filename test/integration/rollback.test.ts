// Rollback: a migration that fails before the destination is confirmed leaves the container running on the source.
// Every case but the shaped-link one runs on one testbed, each with containers of its own names: the faults are
// scoped to those names (`@NAME`), and an agent a case kills comes back with the environment it started with (less
// the fault that just fired, when the case migrates that container again). The case with a client through two failed
// restores runs after the agent-kill cases, whose containers stay running on b: its client's connection must survive
// whatever else runs on the destination.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, type TestContext, test } from 'node:test';
import { runMigration } from '../../src/cli/commands.ts';
import type { MigrationReport } from '../../src/migration/types.ts';
import { IpNet } from '../../src/network/ip.ts';
import { Probe } from '../../src/probe/session.ts';
import { ProcessRunner } from '../../src/runtime/exec.ts';
import { startAgent, stopAgent } from '../../src/testbed/testbed.ts';
import { LINE_COUNTER_PY, pythonArgs } from '../../src/workloads/servers.ts';
import {
  assertHostClean,
  type Bed,
  containers,
  counterCommand,
  FERRY_ARGV,
  hostDir,
  instancesOf,
  missingPrerequisite,
  processesWith,
  readCounter,
  runningInstancesOf,
  skipUnlessReady,
  startBed,
  startProbe,
  waitFor,
  waitForPort,
} from './helpers.ts';

async function counter(bed: Bed, name: string): Promise<{ host: string; value: number }> {
  const c = (await containers(bed)).find((x) => x.name === name);
  assert.ok(c?.pid, `${name} is running somewhere`);
  return { host: c.host, value: await readCounter(c.pid) };
}

/** The source agent SIGKILLs itself at these points, each for a container of its own (`k` and the point). */
const KILL_POINTS = ['checkpoint', 'transfer', 'restore'] as const;
const killedName = (point: string) => `k${point}`;
/**
 * A commit deadline below the default (120 s) but far above the 3 s for which the source takes a host refusing
 * connections as an agent gone: the case whose destination dies with its copy restored must be thawed by that
 * refusal, not by the deadline (a link that is cut would still wait it out).
 */
const FERRY_DEADLINES = JSON.stringify({ commitMs: 30_000 });
/** Each host's environment on the shared testbed (its faults), also when a case restarts its agent. */
const AGENT_ENV: Record<string, NodeJS.ProcessEnv> = {
  a: {
    FERRY_DEADLINES,
    FERRY_FAULTS: KILL_POINTS.map((p) => `kill-at:source:${p}@${killedName(p)}`).join(','),
  },
  b: { FERRY_DEADLINES, FERRY_FAULTS: 'invalid-bundle@svc,invalid-bundle@web,kill-at:dest:restored@unc' },
};

let shared: Bed | undefined;
before(async () => {
  if (missingPrerequisite()) return;
  shared = await startBed(['a', 'b'], { agentEnv: AGENT_ENV });
});
after(() => shared?.down());

/**
 * A case on the shared testbed. Whatever happened, both its agents are up afterwards, and a case that failed has its
 * container removed (one that passed keeps it running: its address stays taken, so no later case reuses it while the
 * client side may still remember the old owner's MAC).
 */
function sharedTest(title: string, name: string, fn: (t: TestContext, bed: Bed) => Promise<void>): void {
  test(title, async (t) => {
    if (!skipUnlessReady(t) || !shared) return;
    const bed = shared;
    let failed = true;
    try {
      await fn(t, bed);
      failed = false;
    } finally {
      for (const h of ['a', 'b']) {
        const pid = Number(readFileSync(join(hostDir(bed, h), 'agent.pid'), 'utf8').trim());
        if (!alive(pid)) await restartAgent(bed, h);
      }
      if (failed)
        for (const h of ['a', 'b'])
          await bed.ctx
            .client(h)
            .remove(name)
            .catch(() => undefined);
    }
  });
}

sharedTest(
  'destination restore fails: the container keeps running on the source, nothing is left on the destination',
  'svc',
  async (_t, bed) => {
    const marker = `rb1-${bed.name}`;
    assert.equal(
      (await bed.cli(['run', '--host', 'a', '--name', 'svc', '--', ...counterCommand(marker)])).code,
      0,
    );
    await waitFor('counting', async () => (await counter(bed, 'svc')).value > 3 || undefined);
    const before = await counter(bed, 'svc');
    const r = await bed.cli(['migrate', 'svc', '--to', 'b', '--json']);
    assert.equal(r.code, 1);
    const report = JSON.parse(r.stdout) as MigrationReport;
    assert.equal(report.ok, false);
    assert.equal(report.error?.phase, 'restore');
    assert.equal(report.error?.code, 'FERRY_E_RESTORE_FAILED');
    assert.match(
      report.error?.message ?? '',
      /failed in phase restore: .+; rolled back: svc is running on a/,
    );
    assert.equal(report.rollback?.sourceRunning, true);
    assert.equal(report.rollback?.destinationCleaned, true);
    const after = await counter(bed, 'svc');
    assert.equal(after.host, 'a');
    assert.ok(after.value >= before.value, `counter went back from ${before.value} to ${after.value}`);
    await waitFor('still counting', async () => (await counter(bed, 'svc')).value > after.value || undefined);
    assert.equal(instancesOf(marker), 1);
    assertHostClean(bed, 'b', 'svc');
    // the human form: one line naming the phase and the cause
    const h = await bed.cli(['migrate', 'svc', '--to', 'b']);
    assert.equal(h.code, 1);
    assert.match(
      h.stderr,
      /^ferry: FERRY_E_RESTORE_FAILED: migration of svc to b failed in phase restore: /m,
    );
    assert.equal((await counter(bed, 'svc')).host, 'a');
    // (its loop forks a sleep 50 times a second: not left running beside the cases that follow)
    await bed.ctx.client('a').remove('svc');
  },
);

test('destination agent killed mid-transfer: the container resumes on the source; the restarted agent leaves nothing', async (t) => {
  if (!skipUnlessReady(t)) return;
  // a shaped link (2 MB/s) and 16 MiB of memory make the transfer last seconds, so the kill lands inside it even
  // when progress reaches the test late on a loaded machine (a testbed of its own: the shaping would slow every
  // other case)
  const bed = await startBed(['a', 'b'], { rate: '16mbit' });
  t.after(() => bed.down());
  const marker = `rb2-${bed.name}`;
  const prog = [
    'import os, time',
    'b = bytearray(os.urandom(16 << 20))',
    'i = 0',
    'while True:',
    '    i += 1',
    "    open('/tmp/counter', 'w').write(str(i))",
    '    time.sleep(0.02)',
  ].join('\n');
  const run = await bed.cli([
    'run',
    '--host',
    'a',
    '--name',
    'big',
    '--',
    '/usr/bin/python3',
    '-c',
    `${prog}\n# ${marker}`,
  ]);
  assert.equal(run.code, 0, run.stderr);
  await waitFor('counting', async () => (await counter(bed, 'big')).value > 3 || undefined, 20_000);
  const before = await counter(bed, 'big');
  const hostB = bed.state.hosts.find((h) => h.name === 'b')!;
  let killed = false;
  const report: MigrationReport = await runMigration(bed.ctx, 'big', 'b', { strategy: 'cold' }, (e) => {
    if (e.type === 'progress' && e.phase === 'transfer' && !killed && e.bytes > 1 << 20) {
      killed = true;
      void stopAgent(bed.state, hostB, 'SIGKILL');
    }
  });
  assert.ok(killed, 'the transfer was under way when the agent was killed');
  assert.equal(report.ok, false);
  // the kill is sent from a progress event and lands when it lands: now and then the last bytes were through and
  // the restore's request went out first; that move fails at the restore, and the source thaws once b's host has
  // refused connections for a few seconds (its agent is gone, and the copy with it), not at the commit deadline
  assert.ok(['transfer', 'restore'].includes(report.error?.phase ?? ''), `failed in ${report.error?.phase}`);
  if (report.error?.phase === 'restore')
    t.diagnostic('the kill landed after the transfer: failed at the restore');
  assert.equal(report.rollback?.sourceRunning, true);
  const after = await counter(bed, 'big');
  assert.equal(after.host, 'a');
  assert.ok(after.value >= before.value, `counter went from ${before.value} to ${after.value}`);
  await waitFor('still counting', async () => (await counter(bed, 'big')).value > after.value || undefined);
  assert.equal(instancesOf(marker), 1);
  // the destination cleans up what the dead agent left when it comes back
  await startAgent(bed.state, hostB, { runner: new ProcessRunner(), env: bed.env, ferryArgv: FERRY_ARGV });
  assertHostClean(bed, 'b', 'big');
  // and the container can still migrate afterwards, on a link no longer shaped (its slowness was only for the kill)
  // (`ferry migrate`'s code, in this process: one node start less)
  const ip = new IpNet(new ProcessRunner());
  for (const h of bed.state.hosts) {
    await ip.shape(h.vethOuter, '10gbit');
    await ip.shape('eth0', '10gbit', h.netns);
  }
  const again = await runMigration(bed.ctx, 'big', 'b', { strategy: 'auto' }, () => {});
  assert.equal(again.ok, true, JSON.stringify(again.error));
  assert.equal((await counter(bed, 'big')).host, 'b');
});

/** A TCP server named `name` with a client holding one connection, on host a; its command line carries `marker`. */
async function serverWithClient(t: TestContext, bed: Bed, name: string, marker: string) {
  const r = await bed.cli([
    'run',
    '--host',
    'a',
    '--name',
    name,
    '--json',
    '--',
    ...pythonArgs(`${LINE_COUNTER_PY}\n# ${marker}`, 7000),
  ]);
  assert.equal(r.code, 0, r.stderr);
  const ip = JSON.parse(r.stdout).ip as string;
  await waitForPort(ip, 7000);
  // a client on one connection from the LAN, answered before the migration starts (a probe started beside a busy
  // migration could still be connecting when the container freezes); a late reply is no failure here: the
  // connection must survive an outage as long as an agent's restart
  const probe = new Probe({ kind: 'tcp', host: ip, port: 7000, intervalMs: 2, replyTimeoutMs: 120_000 });
  // (stopped whatever happens: a case that fails must not leave it probing beside the cases that follow)
  t.after(() =>
    probe.stop().then(
      () => undefined,
      () => undefined,
    ),
  );
  await probe.start();
  return probe;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const hostOf = (bed: Bed, name: string) => bed.state.hosts.find((h) => h.name === name)!;

/** Processes carrying `marker` in the containers of one simulated host (by their cgroup). */
function instancesOn(bed: Bed, host: string, marker: string): number {
  const parent = `${hostOf(bed, host).cgroupParent}/`;
  return processesWith(marker).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cgroup`, 'utf8').includes(parent);
    } catch {
      return false;
    }
  }).length;
}
/** Starts a host's agent again (stopping the one running), as a supervisor would: with the environment given. */
const restartAgent = (bed: Bed, name: string, env: NodeJS.ProcessEnv | undefined = AGENT_ENV[name]) =>
  startAgent(
    bed.state,
    hostOf(bed, name),
    { runner: new ProcessRunner(), env: bed.env, ferryArgv: FERRY_ARGV },
    env,
  );

for (const point of KILL_POINTS) {
  const web = killedName(point);
  sharedTest(
    `source agent killed (SIGKILL) during the ${point}: after its restart the container runs exactly once on the source, with its client connection`,
    web,
    async (t, bed) => {
      const marker = `rbk-${point}-${bed.name}`;
      const probe = await serverWithClient(t, bed, web, marker);
      // ferry migrate reattaches when its link to the source agent drops, so the agent must come back while the
      // CLI waits: a supervisor restarts it (without this container's fault), and it settles what its previous run
      // left by asking b
      const withoutFault = AGENT_ENV['a']!['FERRY_FAULTS']!.split(',')
        .filter((f) => !f.endsWith(`@${web}`))
        .join(',');
      const migrating = bed.cli(['migrate', web, '--to', 'b', '--strategy', 'cold', '--json'], {
        timeoutMs: 120_000,
      });
      let done = false;
      let restarted = false;
      const pidFile = join(hostDir(bed, 'a'), 'agent.pid');
      const firstPid = Number(readFileSync(pidFile, 'utf8').trim());
      const supervisor = (async () => {
        while (!done) {
          if (!alive(firstPid)) {
            // frozen on a; b holds at most an uncommitted copy behind its lock
            assert.ok(runningInstancesOf(marker) <= 1, 'never two running');
            await restartAgent(bed, 'a', { ...AGENT_ENV['a'], FERRY_FAULTS: withoutFault });
            restarted = true;
            return;
          }
          await new Promise((res) => setTimeout(res, 50));
        }
      })();
      const m = await migrating;
      done = true;
      await supervisor;
      assert.ok(restarted, 'the source agent died mid-migration');
      assert.notEqual(m.code, 0, `the migration was rolled back: ${m.stdout}`);
      await waitFor(
        `${web} running on a again`,
        async () => {
          const c = (await containers(bed)).find((x) => x.name === web);
          return (c?.host === 'a' && c.status === 'running') || undefined;
        },
        30_000,
      );
      // the client's TCP may back off over the outage: its connection answers again once a retransmission lands
      const answered = probe.replies;
      await waitFor('the client answered again', () => probe.replies > answered + 3 || undefined, 60_000);
      const res = await probe.stop();
      t.diagnostic(`max gap ${res.maxGapMs.toFixed(0)} ms across the crash and the restart`);
      assert.equal(res.resets, 0, 'no reset');
      assert.equal(res.errors, 0, JSON.stringify(res).slice(0, 2000));
      assert.equal(res.serverValues?.continuous, true, 'the same server process answered, its state intact');
      assert.equal(instancesOf(marker), 1, 'exactly once');
      assert.equal((await containers(bed)).filter((c) => c.name === web).length, 1);
      assertHostClean(bed, 'b', web);
      assert.deepEqual(readdirSync(join(hostDir(bed, 'a'), 'images')), [], 'no images left on a');
      assert.deepEqual(readdirSync(join(hostDir(bed, 'a'), 'journal')), [], 'the journal is settled');
      // and it can migrate again
      // (`ferry migrate`'s code, in this process: one node start less)
      const again = await runMigration(bed.ctx, web, 'b', { strategy: 'auto' }, () => {});
      assert.equal(again.ok, true, JSON.stringify(again.error));
      assert.equal((await containers(bed)).find((c) => c.name === web)?.host, 'b');
      assert.equal(instancesOf(marker), 1);
    },
  );
}

sharedTest(
  'rollback with a client connected: the connection survives a failed cold and a failed post-copy migration, with other containers running on the destination',
  'web',
  async (t, bed) => {
    // (the agent-kill cases before this one leave their containers on b, migrated in: a destination that runs other
    // containers, and a freeze calibration to it that can make `auto` pick post-copy)
    const onB = (await containers(bed)).filter((c) => c.host === 'b' && c.status === 'running');
    assert.ok(onB.length > 0, 'precondition: a container that migrated in runs on b');
    const r = await bed.cli([
      'run',
      '--host',
      'a',
      '--name',
      'web',
      '--json',
      '--',
      ...pythonArgs(LINE_COUNTER_PY, 7000),
    ]);
    assert.equal(r.code, 0, r.stderr);
    const ip = JSON.parse(r.stdout).ip as string;
    await waitForPort(ip, 7000);
    const probe = startProbe(bed, 'tcp', `${ip}:7000`);
    await new Promise((res) => setTimeout(res, 700));
    // both ways a rollback hands the tasks back: cold thaws what its dump left frozen, post-copy fails CRIU's page
    // server (its sockets must come back out of repair mode, or the server's next read fails and the client is reset)
    for (const strategy of ['cold', 'postcopy']) {
      const m = await bed.cli(['migrate', 'web', '--to', 'b', '--strategy', strategy, '--json']);
      assert.equal(m.code, 1);
      const report = JSON.parse(m.stdout) as MigrationReport;
      assert.equal(report.strategy, strategy);
      assert.equal(report.error?.phase, 'restore');
      assert.equal(report.rollback?.sourceRunning, true);
    }
    await new Promise((res) => setTimeout(res, 700));
    const res = await probe.stop();
    t.diagnostic(
      `max gap ${res.maxGapMs.toFixed(0)} ms across two rolled-back migrations (${onB.length} other containers on b)`,
    );
    assert.equal(res.resets, 0, 'neither rollback reset the connection');
    assert.equal(res.errors, 0, JSON.stringify(res).slice(0, 2000));
    assert.equal(res.lost, 0);
    assert.equal(res.serverValues?.continuous, true);
    assert.equal((await containers(bed)).find((c) => c.name === 'web')?.host, 'a');
    assertHostClean(bed, 'b', 'web');
    const rules = execFileSync('nsenter', [`--net=/run/netns/${bed.state.prefix}-a-c-web`, 'iptables-save'], {
      encoding: 'utf8',
    });
    assert.doesNotMatch(rules, /CRIU/, 'CRIU lock rules removed from the source namespace');
  },
);

sharedTest(
  'destination agent killed (SIGKILL) with its restored copy running uncommitted: that copy dies at once, the source resumes',
  'unc',
  async (t, bed) => {
    // (b dies at dest:restored for unc only; its host then refuses connections, which the source takes as its
    // agent gone after a few seconds, and thaws)
    const marker = `rbd-${bed.name}`;
    const probe = await serverWithClient(t, bed, 'unc', marker);
    const migrating = bed.cli(['migrate', 'unc', '--to', 'b', '--strategy', 'cold', '--json'], {
      timeoutMs: 120_000,
    });
    // b restores, saves its record as restored and dies before answering: its copy must die with it, before the
    // source thaws its own
    const incomingB = join(hostDir(bed, 'b'), 'incoming');
    await waitFor(
      'b restored its copy',
      () =>
        readdirSync(incomingB).some(
          (f) =>
            f.endsWith('.json') && readFileSync(join(incomingB, f), 'utf8').includes('"state":"restored"'),
        ) || undefined,
      60_000,
    );
    const t0 = Date.now();
    await waitFor('the dead-man switch killed it', () =>
      instancesOn(bed, 'b', marker) === 0 ? true : undefined,
    );
    t.diagnostic(`b's uncommitted copy died ${Date.now() - t0} ms after its agent`);
    const m = await migrating;
    assert.equal(m.code, 1);
    const report = JSON.parse(m.stdout) as MigrationReport;
    assert.equal(report.error?.phase, 'restore');
    assert.equal(report.rollback?.sourceRunning, true);
    // its host refuses connections once the agent is dead: the source thaws after a few seconds of that, long
    // before the commit deadline
    assert.match(report.rollback?.note ?? '', /b refused connections for 3 s: its agent is gone/);
    assert.equal((await containers(bed)).find((c) => c.name === 'unc')?.host, 'a');
    assert.equal(instancesOf(marker), 1);
    // the client's TCP backs off over the outage (the commit deadline): its next retransmission reaches the thawed
    // source seconds after the thaw
    const answered = probe.replies;
    await waitFor('the client answered again', () => probe.replies > answered + 3 || undefined, 60_000);
    const res = await probe.stop();
    t.diagnostic(`client: max gap ${res.maxGapMs.toFixed(0)} ms`);
    // b kept its copy locked (it was never committed): the client only ever talked to the source's process
    // the requests sent while it waited out b's commit deadline are answered late, after the thaw; the connection
    // itself survives: no reset, and the server's count never jumps
    assert.equal(res.resets, 0);
    assert.equal(res.serverValues?.continuous, true);
    // b's agent comes back: the dead copy's reservation, network and files go
    await restartAgent(bed, 'b');
    assertHostClean(bed, 'b', 'unc');
    assert.ok(!existsSync(join(hostDir(bed, 'a'), 'journal', `${report.id}.json`)));
  },
);

sharedTest(
  'a restarted agent never touches a container that took the name of a stale incoming reservation',
  'stale',
  async (_t, bed) => {
    const marker = `rbs-${bed.name}`;
    const r = await bed.cli(['run', '--host', 'b', '--name', 'stale', '--', ...counterCommand(marker)]);
    assert.equal(r.code, 0, r.stderr);
    await waitFor('counting', async () => (await counter(bed, 'stale')).value > 1 || undefined);
    // a reservation of the name by a migration that went stale (its copy restored, never committed)
    const hd = hostDir(bed, 'b');
    const record = JSON.parse(readFileSync(join(hd, 'containers', 'stale', 'record.json'), 'utf8'));
    const stale = {
      id: 'm0123456789ab',
      name: 'stale',
      from: 'a',
      record: { ...record, origin: { kind: 'run' } },
      state: 'restored',
      received: ['bundle', 'images'],
      createdAt: new Date().toISOString(),
    };
    writeFileSync(join(hd, 'incoming', 'm0123456789ab.json'), JSON.stringify(stale));
    await restartAgent(bed, 'b');
    const before = await counter(bed, 'stale');
    await waitFor(
      'still counting',
      async () => (await counter(bed, 'stale')).value > before.value || undefined,
    );
    assert.equal(before.host, 'b');
    assert.equal(instancesOf(marker), 1);
    assert.deepEqual(readdirSync(join(hd, 'incoming')), [], 'the stale reservation itself is gone');
  },
);
