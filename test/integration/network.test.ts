// Clients stay connected: one TCP (or UDP, or Redis) conversation held by a real probe across migrations. The tests
// share one testbed (each removes its containers when it ends) and migrate through the CLI's own migrate function in
// this process, a node start fewer per move.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { connect } from 'node:net';
import { test } from 'node:test';
import { runMigration } from '../../src/cli/commands.ts';
import type { ContainerInfo } from '../../src/host/containers.ts';
import type { MigrationReport } from '../../src/migration/types.ts';
import { macFor } from '../../src/network/identity.ts';
import {
  LINE_COUNTER_PY,
  pythonArgs,
  REDIS_SERVER_ARGS,
  UDP_COUNTER_PY,
} from '../../src/workloads/servers.ts';
import {
  type Bed,
  containers,
  served,
  servedPast,
  sharedBed,
  skipUnlessReady,
  startProbe,
  waitFor,
  waitForPort,
} from './helpers.ts';

const bedOf = sharedBed(['a', 'b']);

/**
 * Six moves: a -> b and b -> a three times each, ending on a. Each direction is crossed again by a copy that was
 * itself restored, with the client's one connection (or address) carried through all of them.
 */
const MOVES = 6;

async function runJson(bed: Bed, args: string[]): Promise<ContainerInfo> {
  const dd = args.indexOf('--');
  const r = await bed.cli([...args.slice(0, dd), '--json', ...args.slice(dd)]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as ContainerInfo;
}

/** `ferry migrate NAME --to TO` (the CLI's defaults: auto), in this process. */
async function migrate(bed: Bed, name: string, to: string): Promise<MigrationReport> {
  const report = await runMigration(bed.ctx, name, to, { strategy: 'auto' }, () => {});
  assert.equal(report.ok, true, JSON.stringify(report.error));
  return report;
}

function sh(argv: string[]): string {
  return execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
}

/** Lock rules of CRIU or ferry anywhere in a namespace. */
function lockRules(ns: string): string[] {
  const out = `${sh(['nsenter', `--net=/run/netns/${ns}`, 'iptables-save'])}\n${sh(['nsenter', `--net=/run/netns/${ns}`, 'nft', 'list', 'tables'])}`;
  return out.split('\n').filter((l) => /CRIU|ferry|0xc114/.test(l));
}

function assertNoLocks(bed: Bed): void {
  for (const ns of sh(['ip', 'netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')) {
    if (!ns.startsWith(bed.state.prefix)) continue;
    assert.deepEqual(lockRules(ns), [], `lock rules left in ${ns}`);
  }
}

test('own network namespace: one TCP connection survives 6 migrations; no reset, no lost reply, counter continuous', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await bedOf(t);
  const info = await runJson(bed, [
    'run',
    '--host',
    'a',
    '--name',
    'web',
    '--',
    ...pythonArgs(LINE_COUNTER_PY, 7000),
  ]);
  assert.ok(info.ip, 'an address on the LAN was allocated');
  await waitForPort(info.ip, 7000);
  const probe = startProbe(bed, 'tcp', `${info.ip}:7000`);
  await servedPast(bed, 'web', 0);
  const freezes: number[] = [];
  for (let i = 0; i < MOVES; i++) {
    const report = await migrate(bed, 'web', i % 2 === 0 ? 'b' : 'a');
    freezes.push(report.freezeMs);
  }
  // the restored server goes on answering the same connection after the last move
  await servedPast(bed, 'web', await served(bed, 'web'));
  const res = await probe.stop();
  t.diagnostic(
    `replies ${res.replies}, max gap ${res.maxGapMs.toFixed(0)} ms, freeze ms ${freezes.join(' ')}`,
  );
  assert.equal(res.resets, 0, 'no reset');
  assert.equal(res.errors, 0, 'no error');
  assert.equal(res.lost, 0, 'no lost reply');
  assert.ok(res.replies > 1000);
  assert.equal(res.serverValues?.continuous, true, 'the server counted every request once, in order');
  // the identity is on a only, announced, and nothing is left behind
  const list = await containers(bed);
  assert.deepEqual(
    list.map((c) => [c.name, c.host, c.ip]),
    [['web', 'a', info.ip]],
  );
  const netns = sh(['ip', 'netns', 'list']);
  assert.match(netns, new RegExp(`${bed.state.prefix}-a-c-web\\b`));
  assert.doesNotMatch(netns, new RegExp(`${bed.state.prefix}-b-c-web\\b`));
  const neigh = sh(['ip', '-n', bed.state.client.netns, 'neigh', 'show', info.ip]);
  assert.ok(
    !neigh || neigh.includes(macFor(info.ip)),
    `client's ARP entry points at the container's MAC: ${neigh}`,
  );
  assertNoLocks(bed);
});

test('host network with a floating IP: TCP and UDP keep working, the address moves, no rules are left', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await bedOf(t);
  const subnet = bed.state.subnet;
  const tcpIp = `${subnet}.60`;
  const udpIp = `${subnet}.61`;
  await runJson(bed, [
    'run',
    '--host',
    'a',
    '--name',
    'htcp',
    '--net',
    'host',
    '--ip',
    tcpIp,
    '--',
    ...pythonArgs(LINE_COUNTER_PY, 7001, tcpIp),
  ]);
  await runJson(bed, [
    'run',
    '--host',
    'a',
    '--name',
    'hudp',
    '--net',
    'host',
    '--ip',
    udpIp,
    '--',
    ...pythonArgs(UDP_COUNTER_PY, 7002, udpIp),
  ]);
  await waitForPort(tcpIp, 7001);
  const tcp = startProbe(bed, 'tcp', `${tcpIp}:7001`);
  const udp = startProbe(bed, 'udp', `${udpIp}:7002`);
  await servedPast(bed, 'htcp', 0);
  await servedPast(bed, 'hudp', 0);
  // six migrations back and forth for each; the last ones land on a
  for (let i = 0; i < MOVES; i++) {
    const to = i % 2 === 0 ? 'b' : 'a';
    await migrate(bed, 'htcp', to);
    await migrate(bed, 'hudp', to);
  }
  await servedPast(bed, 'htcp', await served(bed, 'htcp'));
  await servedPast(bed, 'hudp', await served(bed, 'hudp'));
  const [rt, ru] = [await tcp.stop(), await udp.stop()];
  t.diagnostic(
    `tcp max gap ${rt.maxGapMs.toFixed(0)} ms; udp max gap ${ru.maxGapMs.toFixed(0)} ms, lost ${ru.lost}`,
  );
  assert.equal(rt.resets, 0);
  assert.equal(rt.errors, 0);
  assert.equal(rt.lost, 0);
  assert.equal(rt.serverValues?.continuous, true);
  assert.equal(ru.errors, 0, 'no ICMP port-unreachable: the destination dropped UDP until the restore');
  assert.ok(ru.replies > 500, 'UDP kept answering');
  // the floating addresses live on a only; the client's ARP points at a's bridge
  const aMac = bed.state.hosts.find((h) => h.name === 'a')!.mac;
  for (const ip of [tcpIp, udpIp]) {
    assert.match(
      sh(['ip', '-n', `${bed.state.prefix}-a`, '-4', 'addr', 'show', 'br0']),
      new RegExp(`inet ${ip.replace(/\./g, '\\.')}/32`),
    );
    assert.doesNotMatch(
      sh(['ip', '-n', `${bed.state.prefix}-b`, '-4', 'addr', 'show', 'br0']),
      new RegExp(`inet ${ip.replace(/\./g, '\\.')}/`),
    );
    await waitFor(
      'client ARP updated',
      () => sh(['ip', '-n', bed.state.client.netns, 'neigh', 'show', ip]).includes(aMac) || undefined,
      3000,
    );
  }
  assertNoLocks(bed);
});

test('UDP server in its own namespace keeps answering across migrations', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await bedOf(t);
  const info = await runJson(bed, [
    'run',
    '--host',
    'a',
    '--name',
    'dns',
    '--',
    ...pythonArgs(UDP_COUNTER_PY, 5353),
  ]);
  const udp = startProbe(bed, 'udp', `${info.ip}:5353`);
  await servedPast(bed, 'dns', 0);
  for (let i = 0; i < MOVES; i++) await migrate(bed, 'dns', i % 2 === 0 ? 'b' : 'a');
  await servedPast(bed, 'dns', await served(bed, 'dns'));
  const res = await udp.stop();
  t.diagnostic(`udp max gap ${res.maxGapMs.toFixed(0)} ms, lost ${res.lost}`);
  assert.equal(res.errors, 0, JSON.stringify(res).slice(0, 2000));
  assert.ok(res.replies > 500);
  assert.equal(
    res.serverValues?.continuous,
    true,
    JSON.stringify({ sv: res.serverValues, notes: res.notes }),
  );
});

function redis(address: string, commands: string[][]): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: address, port: 6379 });
    let buf = '';
    const payload = commands
      .map((c) => `*${c.length}\r\n${c.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`)
      .join('');
    s.on('connect', () => s.write(payload));
    s.on('data', (d) => {
      buf += d;
      const replies = buf.split('\r\n').filter((l) => /^[+:\-$]/.test(l) && !/^\$\d/.test(l)).length;
      const bulk = buf.split('\r\n').filter((l) => /^\$\d/.test(l)).length;
      if (replies + bulk >= commands.length) {
        s.end();
        resolve(buf);
      }
    });
    s.on('error', reject);
    setTimeout(() => reject(new Error(`redis timeout: ${buf}`)), 5000).unref();
  });
}

test('Redis: same connection, same keys and values after the move, INCR continues', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await bedOf(t);
  const info = await runJson(bed, ['run', '--host', 'a', '--name', 'redis', '--', ...REDIS_SERVER_ARGS]);
  await waitForPort(info.ip!, 6379);
  await redis(info.ip!, [
    ['SET', 'greeting', 'hello from a'],
    ['HSET', 'user:1', 'name', 'ada', 'lang', 'en'],
  ]);
  const probe = startProbe(bed, 'redis', `${info.ip}:6379`);
  // the probe's counter (its INCRs), read over a connection of its own
  const incrs = async () =>
    Number(/\$\d+\r\n(\d+)/.exec(await redis(info.ip!, [['GET', 'ferry:probe']]))?.[1] ?? 0);
  const incrsPast = (from: number) =>
    waitFor('the probe INCRs', async () => ((await incrs()) >= from + 50 ? true : undefined), 60_000);
  await incrsPast(0);
  await migrate(bed, 'redis', 'b');
  await migrate(bed, 'redis', 'a');
  await incrsPast(await incrs());
  const res = await probe.stop();
  t.diagnostic(
    `redis max gap ${res.maxGapMs.toFixed(0)} ms, INCR ${res.serverValues?.first}..${res.serverValues?.last}`,
  );
  assert.equal(res.resets, 0);
  assert.equal(res.errors, 0, JSON.stringify(res).slice(0, 2000));
  assert.equal(res.serverValues?.continuous, true, 'INCR continued without a jump');
  const out = await redis(info.ip!, [
    ['GET', 'greeting'],
    ['HGET', 'user:1', 'name'],
  ]);
  assert.match(out, /hello from a/);
  assert.match(out, /ada/);
});
