// Agentless migration (`ferry migrate NAME --to ssh://…`, decision 0014) against the real sshd of
// `ferry testbed up --ssh`, with no agent running on either host: the CLI runs the source half in host a's network
// namespace on containers started with plain `runc run`, and ferry's single executable, copied over ssh, is the
// temporary destination agent. One testbed for every case: Redis (started by a's agent, which is then stopped:
// a host whose agent is gone) moves a -> b cold and back by post-copy with the probe's connection open; a counter
// moves a -> b cold and back b -> a by post-copy (that run by the single executable itself, with no node on the
// PATH) and keeps counting; a changed
// host key is refused with FERRY_E_SSH_HOST_KEY and nothing changes; the ssh connection killed mid-transfer rolls
// back and the container runs on the source. Nothing is left behind: no temporary agent, no ferry file.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { MigrationReport } from '../../src/migration/types.ts';
import { buildCommandBundle } from '../../src/runtime/bundle.ts';
import { ProcessRunner, startBackground } from '../../src/runtime/exec.ts';
import { controlAgent, testbedDown, testbedUp } from '../../src/testbed/testbed.ts';
import { REDIS_SERVER_ARGS } from '../../src/workloads/servers.ts';
import {
  assertNothingLeft,
  counterCommand,
  FERRY_ARGV,
  type ProbeSummary,
  processesWith,
  readInContainer,
  skipUnlessReady,
  waitFor,
  waitForPort,
} from './helpers.ts';
import { singleExecutable } from './single-executable.ts';

const NAMES = ['c1', 'c2', 'c3', 'r1'];

interface Outcome {
  status: number | null;
  stdout: string;
  stderr: string;
  report?: MigrationReport;
}

/** `ferry migrate … --json` in a host's network namespace (nsenter: /sys and the cgroups stay the machine's). */
function migrate(netns: string, argv: string[], env: NodeJS.ProcessEnv): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = spawn('nsenter', [`--net=/run/netns/${netns}`, '--', ...argv, '--json'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.on('close', (status) => {
      let report: MigrationReport | undefined;
      try {
        report = JSON.parse(stdout) as MigrationReport;
      } catch {
        // no report: refused before the migration started
      }
      resolve({ status, stdout, stderr, ...(report ? { report } : {}) });
    });
  });
}

function redisCli(ip: string, ...args: string[]): string {
  return execFileSync('redis-cli', ['-h', ip, ...args], { encoding: 'utf8', timeout: 20_000 }).trim();
}

function runcState(root: string, name: string): { status: string; pid: number } | undefined {
  const r = spawnSync('runc', ['--root', root, 'state', name], { encoding: 'utf8' });
  return r.status === 0 ? (JSON.parse(r.stdout) as { status: string; pid: number }) : undefined;
}

function counter(pid: number): number {
  return Number(readInContainer(pid, '/tmp/counter').trim());
}

async function counts(root: string, name: string): Promise<void> {
  const st = runcState(root, name);
  assert.equal(st?.status, 'running', `${name} runs in ${root}`);
  const first = await waitFor('the counter', () => {
    try {
      return counter(st!.pid) || undefined;
    } catch {
      return undefined;
    }
  });
  await waitFor(`${name} counts on`, () => counter(st!.pid) > first || undefined, 15_000);
}

test('agentless migration over ssh: cold and post-copy with no agent, host keys checked, a cut connection rolled back', async (t) => {
  if (!skipUnlessReady(t)) return;
  const name = `g${randomBytes(2).toString('hex')}`;
  const work = mkdtempSync(join(tmpdir(), 'ferry-agentless-'));
  const env: NodeJS.ProcessEnv = { ...process.env, FERRY_STATE: join(work, 'state') };
  const deps = { runner: new ProcessRunner(), env, ferryArgv: FERRY_ARGV };
  const srcRoot = join(work, 'runc');
  const roots: string[] = [srcRoot];
  t.after(async () => {
    for (const root of roots)
      for (const c of NAMES) {
        spawnSync('runc', ['--root', root, 'kill', c, 'KILL']);
        spawnSync('runc', ['--root', root, 'delete', '--force', c]);
      }
    await testbedDown(name, deps);
    rmSync(work, { recursive: true, force: true });
  });
  const [tb, exe] = await Promise.all([
    testbedUp({ name, hosts: ['a', 'b'], ssh: true }, deps),
    singleExecutable(),
  ]);
  assert.ok(tb.ssh);
  // Redis with an address on the LAN, started by a's agent (which stops below): ferry's namespace, eth0 and veth
  const started = spawnSync(
    FERRY_ARGV[0]!,
    [...FERRY_ARGV.slice(1), 'run', '--host', 'a', '--name', 'r1', '--json', '--', ...REDIS_SERVER_ARGS],
    { env, encoding: 'utf8' },
  );
  assert.equal(started.status, 0, started.stderr);
  const redisIp = (JSON.parse(started.stdout) as { ip: string }).ip;
  await waitForPort(redisIp, 6379);
  // no agent anywhere: the destination has only its sshd
  await controlAgent(name, 'kill', 'a', deps);
  await controlAgent(name, 'kill', 'b', deps);
  const [a, b] = [tb.hosts[0]!, tb.hosts[1]!];
  const hostDir = (h: string) => join(tb.dir, 'hosts', h, 'ssh', 'agentless');
  const agentRoot = join(tb.dir, 'hosts', 'a', 'runc');
  roots.push(join(hostDir('a'), 'runc'), join(hostDir('b'), 'runc'), agentRoot);
  const cliEnv = { ...env, FERRY_EXECUTABLE: exe };
  const ferry = [...FERRY_ARGV];
  const sshConfig = ['--ssh-config', tb.ssh.config];

  // containers started by hand, as runc's own users start them
  mkdirSync(srcRoot);
  for (const c of ['c1', 'c2', 'c3']) {
    const bundle = join(work, `bundle-${c}`);
    await buildCommandBundle(bundle, counterCommand(`${name}-${c}`), c);
    const r = spawnSync('runc', ['--root', srcRoot, 'run', '--detach', c], { cwd: bundle, stdio: 'ignore' });
    assert.equal(r.status, 0, `runc run ${c}`);
  }
  await counts(srcRoot, 'c1');

  await t.test(
    'Redis with a client connected: cold a -> b, post-copy back, the connection never breaks',
    async () => {
      const probe = startBackground(
        [...FERRY_ARGV, 'probe', 'redis', `${redisIp}:6379`, '--interval', '2', '--json'],
        env,
      );
      // the probe's counter in Redis (INCR per reply): it moves once the probe is connected and answered
      const probed = () => Number(redisCli(redisIp, 'GET', 'ferry:probe') || 0);
      await waitFor('the probe answered', () => probed() > 3 || undefined, 15_000);
      const there = await migrate(
        a.netns,
        [
          ...ferry,
          'migrate',
          'r1',
          '--to',
          'ssh://b',
          '--strategy',
          'cold',
          '--runc-root',
          agentRoot,
          ...sshConfig,
        ],
        cliEnv,
      );
      assert.equal(there.status, 0, `${there.stdout}${there.stderr}`);
      assert.equal(runcState(join(hostDir('b'), 'runc'), 'r1')?.status, 'running');
      assert.ok(!existsSync(join(tb.dir, 'hosts', 'a', 'containers', 'r1')), "gone from a's agent state");
      const back = await migrate(
        b.netns,
        [
          ...ferry,
          'migrate',
          'r1',
          '--to',
          'ssh://a',
          '--strategy',
          'postcopy',
          '--runc-root',
          join(hostDir('b'), 'runc'),
          ...sshConfig,
        ],
        cliEnv,
      );
      assert.equal(back.status, 0, `${back.stdout}${back.stderr}`);
      assert.equal(back.report?.strategy, 'postcopy');
      assert.equal(runcState(join(hostDir('a'), 'runc'), 'r1')?.status, 'running');
      // answered by the copy on a before it stops
      const home = probed();
      await waitFor('the probe answered on a', () => probed() > home + 3 || undefined, 15_000);
      const out = await probe.stop('SIGINT');
      const res = JSON.parse(out.stdout.trim().split('\n').pop() ?? '') as ProbeSummary;
      t.diagnostic(`redis max gap ${res.maxGapMs.toFixed(0)} ms over two agentless migrations`);
      assert.equal(res.resets, 0);
      assert.equal(res.errors, 0, JSON.stringify(res).slice(0, 2000));
      assert.equal(res.serverValues?.continuous, true, 'INCR continued without a jump');
    },
  );

  await t.test('cold a -> b: the counter runs on b and counts on; nothing of it is left on a', async () => {
    const r = await migrate(
      a.netns,
      [
        ...ferry,
        'migrate',
        'c1',
        '--to',
        'ssh://b',
        '--strategy',
        'cold',
        '--runc-root',
        srcRoot,
        ...sshConfig,
      ],
      cliEnv,
    );
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
    assert.equal(r.report?.ok, true);
    assert.equal(r.report?.strategy, 'cold');
    assert.equal(r.report?.to, 'b');
    assert.equal(runcState(srcRoot, 'c1'), undefined, 'gone from the source');
    await counts(join(hostDir('b'), 'runc'), 'c1');
    assert.ok(existsSync(join(hostDir('b'), 'containers', 'c1', 'bundle', 'config.json')), 'its bundle on b');
  });

  await t.test('post-copy b -> a by the single executable, with no node on the PATH', async () => {
    const bin = join(work, 'bin');
    mkdirSync(bin);
    for (const p of readdirSync('/usr/bin'))
      if (p !== 'node' && p !== 'nodejs') symlinkSync(join('/usr/bin', p), join(bin, p));
    const noNode = { ...env, PATH: `${bin}:/usr/sbin:/sbin` };
    const bRoot = join(hostDir('b'), 'runc');
    const r = await migrate(
      b.netns,
      [exe, 'migrate', 'c1', '--to', 'ssh://a', '--strategy', 'postcopy', '--runc-root', bRoot, ...sshConfig],
      noNode,
    );
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
    assert.equal(r.report?.strategy, 'postcopy');
    assert.ok(r.report?.postcopy, 'the pages phase ran');
    assert.equal(runcState(bRoot, 'c1'), undefined);
    // what b's temporary agent had received is gone with the container
    assert.ok(!existsSync(join(hostDir('b'), 'containers', 'c1')));
    await counts(join(hostDir('a'), 'runc'), 'c1');
  });

  await t.test('a changed host key: FERRY_E_SSH_HOST_KEY, nothing changed', async () => {
    const known = join(work, 'known_hosts');
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(work, 'other')]);
    const fake = readFileSync(join(work, 'other.pub'), 'utf8').split(' ').slice(0, 2).join(' ');
    writeFileSync(
      known,
      readFileSync(tb.ssh!.knownHosts, 'utf8')
        .split('\n')
        .map((l) => (l.startsWith('b,') ? `${l.split(' ')[0]} ${fake}` : l))
        .join('\n'),
    );
    const config = join(work, 'ssh_config');
    writeFileSync(
      config,
      readFileSync(tb.ssh!.config, 'utf8').replace(/UserKnownHostsFile .*/, `UserKnownHostsFile ${known}`),
    );
    const r = await migrate(
      a.netns,
      [...ferry, 'migrate', 'c2', '--to', 'ssh://b', '--runc-root', srcRoot, '--ssh-config', config],
      cliEnv,
    );
    assert.notEqual(r.status, 0);
    assert.match(r.stdout + r.stderr, /FERRY_E_SSH_HOST_KEY/);
    assert.doesNotMatch(readFileSync(config, 'utf8'), /StrictHostKeyChecking\s+no/i);
    await counts(srcRoot, 'c2');
    assert.equal(runcState(join(hostDir('b'), 'runc'), 'c2'), undefined);
  });

  await t.test('the ssh connection killed mid-transfer: rolled back, the container runs on a', async () => {
    const holds = join(work, 'holds');
    mkdirSync(holds);
    const held = join(holds, 'source_transfer@c3.held');
    const pending = migrate(
      a.netns,
      [
        ...ferry,
        'migrate',
        'c3',
        '--to',
        'ssh://b',
        '--strategy',
        'cold',
        '--runc-root',
        srcRoot,
        ...sshConfig,
      ],
      { ...cliEnv, FERRY_FAULTS: 'hold-at:source:transfer@c3', FERRY_FAULT_HOLD_DIR: holds },
    );
    // (a migration that ended before its hold says why, rather than leaving this to wait for a file never written)
    let ended: Outcome | undefined;
    void pending.then((o) => {
      ended = o;
    });
    const first = await waitFor(
      'the hold before the transfer',
      () => (existsSync(held) ? 'held' : ended ? 'ended' : undefined),
      120_000,
    );
    if (first === 'ended')
      assert.fail(`the migration ended before its hold: ${ended?.stdout}${ended?.stderr}`);
    // the local ssh client of this migration (the remote agent's own command line says `agent --stdin` too)
    const ssh = processesWith('agent --stdin').filter((p) =>
      readFileSync(`/proc/${p}/cmdline`, 'utf8').startsWith('ssh\0'),
    );
    assert.equal(ssh.length, 1, 'one ssh session');
    process.kill(ssh[0]!, 'SIGKILL');
    rmSync(held);
    const r = await pending;
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.report?.ok, false);
    assert.equal(r.report?.rollback?.sourceRunning, true);
    assert.match(r.report?.error?.message ?? '', /ssh session to ssh:\/\/b had ended/);
    await counts(srcRoot, 'c3');
    await waitFor(
      'the temporary agent ends with its session',
      () => processesWith('agent --stdin').length === 0 || undefined,
      30_000,
    );
    assert.equal(runcState(join(hostDir('b'), 'runc'), 'c3'), undefined);
    assert.ok(!existsSync(join(hostDir('b'), 'containers', 'c3')), 'nothing of c3 on b');
  });

  assert.deepEqual(processesWith('agent --stdin'), [], 'no temporary agent left');
  assert.deepEqual(
    readdirSync('/run/ferry').filter((d) => d.startsWith('agentless-')),
    [],
    'no private files left',
  );
  for (const root of roots)
    for (const c of NAMES) {
      spawnSync('runc', ['--root', root, 'kill', c, 'KILL']);
      spawnSync('runc', ['--root', root, 'delete', '--force', c]);
    }
  await testbedDown(name, deps);
  await assertNothingLeft(name);
});
