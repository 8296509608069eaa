// A held switchover (decision 11): during the freeze the container's packets wait on the destination instead of
// being dropped, and reach the restored sockets at the commit. A real client on one connection sends a request
// every 2 ms; its own kernel counts what TCP had to resend and every reset, before and after, and a packet capture
// in its namespace (tcpdump) counts every reset on its wire, whichever side sent it. The first and the last test
// share one testbed (each removes its containers when it ends); moves run through the CLI's own migrate function in
// this process.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runMigration } from '../../src/cli/commands.ts';
import type { ContainerInfo } from '../../src/host/containers.ts';
import type { MigrationReport } from '../../src/migration/types.ts';
import { LINE_COUNTER_PY, pythonArgs, UDP_COUNTER_PY } from '../../src/workloads/servers.ts';
import {
  type Bed,
  containers,
  hostDir,
  type ProbeSummary,
  served,
  servedPast,
  sharedBed,
  skipUnlessReady,
  startBed,
  startProbe,
  waitFor,
  waitForPort,
} from './helpers.ts';

/** Waits until the probe holds its connection (a probe process may take seconds to start on a loaded machine). */
async function connected(bed: Bed, target: string): Promise<void> {
  await waitFor(
    `the probe's connection to ${target}`,
    () =>
      execFileSync(
        'ip',
        ['netns', 'exec', bed.state.client.netns, 'ss', '-tnH', 'state', 'established', 'dst', target],
        {
          encoding: 'utf8',
        },
      ).trim() || undefined,
    60_000,
  );
}

/** The client namespace's TCP counters that matter here (nstat, absolute, not updating its history). */
const COUNTERS = [
  'TcpOutRsts',
  'TcpEstabResets',
  'TcpRetransSegs',
  'TcpExtTCPLostRetransmit',
  'TcpExtTCPTimeouts',
  'TcpExtTCPLossProbes',
] as const;
type Counters = Record<(typeof COUNTERS)[number], number>;

function clientCounters(bed: Bed): Counters {
  const out = execFileSync('ip', ['netns', 'exec', bed.state.client.netns, 'nstat', '-asz'], {
    encoding: 'utf8',
  });
  const all = new Map<string, number>();
  for (const line of out.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v) all.set(k, Number(v));
  }
  return Object.fromEntries(COUNTERS.map((k) => [k, all.get(k) ?? 0])) as Counters;
}

/** UDP datagrams a host's kernel dropped because a socket's receive buffer was full. */
function rcvbufErrors(netns: string): number {
  const out = execFileSync('ip', ['netns', 'exec', netns, 'nstat', '-asz', 'UdpRcvbufErrors'], {
    encoding: 'utf8',
  });
  return Number(/UdpRcvbufErrors\s+(\d+)/.exec(out)?.[1] ?? 0);
}

function delta(a: Counters, b: Counters): Counters {
  return Object.fromEntries(COUNTERS.map((k) => [k, b[k] - a[k]])) as Counters;
}

async function runJson(bed: Bed, args: string[]): Promise<ContainerInfo> {
  const dd = args.indexOf('--');
  const r = await bed.cli([...args.slice(0, dd), '--json', ...args.slice(dd)]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as ContainerInfo;
}

/** `ferry migrate NAME --to TO` (the CLI's defaults: auto), in this process. */
function migrate(bed: Bed, name: string, to: string): Promise<MigrationReport> {
  return runMigration(bed.ctx, name, to, { strategy: 'auto' }, () => {});
}

const bedOf = sharedBed(['a', 'b']);

interface Released {
  packets: number;
  dropped: number;
}

/**
 * The holds a host released (its agent logs each one's figures once it has drained); a test on the shared testbed
 * takes those after the ones it found at its start.
 */
function releasedHolds(bed: Bed, host: string): Released[] {
  const out: Released[] = [];
  for (const line of readFileSync(join(hostDir(bed, host), 'agent.log'), 'utf8').split('\n')) {
    if (!line.includes('"hold released"')) continue;
    const hold = (JSON.parse(line) as { hold?: { packets: number; dropped: number } }).hold;
    if (hold) out.push({ packets: hold.packets, dropped: hold.dropped });
  }
  return out;
}

/** No hold (tbf, ifb, redirect) is left on any host of the testbed. */
function assertNoHolds(bed: Bed): void {
  for (const h of bed.state.hosts) {
    const qd = execFileSync('ip', ['netns', 'exec', h.netns, 'tc', 'qdisc', 'show'], { encoding: 'utf8' });
    assert.doesNotMatch(qd, /qdisc tbf .*rate 8bit/, `a hold left on ${h.name}: ${qd}`);
    const links = execFileSync('ip', ['-n', h.netns, '-o', 'link', 'show', 'type', 'ifb'], {
      encoding: 'utf8',
    });
    assert.equal(links.trim(), '', `an ifb left on ${h.name}`);
  }
}

function assertClean(res: ProbeSummary, d: Counters, what: string): void {
  assert.equal(res.resets, 0, `${what}: no reset`);
  assert.equal(res.errors, 0, `${what}: no error`);
  assert.equal(res.lost, 0, `${what}: no lost reply`);
  assert.equal(d.TcpOutRsts, 0, `${what}: the client sent no reset`);
  assert.equal(d.TcpEstabResets, 0, `${what}: no connection of the client was reset`);
  // (TCP's resends are reported, not asserted: a request that reaches the source between its lock and the
  // destination's announcement is dropped there and resent, and under load the freeze may outlast the client's
  // retransmission timer, whose resends are then held too)
}

/**
 * tcpdump in the client's namespace, TCP to and from `hosts` only (the CLI's own connections to the agents are
 * not the client's). stop() counts the packets it saw and those with RST set, in either direction.
 */
async function capture(
  bed: Bed,
  hosts: string[],
): Promise<{ stop(): Promise<{ packets: number; resets: number }> }> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-hold-pcap-'));
  const file = join(dir, 'client.pcap');
  const filter = `tcp and (${hosts.map((h) => `host ${h}`).join(' or ')})`;
  // -Z root: Debian's tcpdump otherwise drops to its own user, who cannot write here; -U: every packet written
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      bed.state.client.netns,
      'tcpdump',
      '-i',
      'any',
      '-n',
      '-U',
      '-Z',
      'root',
      '-w',
      file,
      filter,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  child.stderr.on('data', (d) => {
    err += d;
  });
  const closed = new Promise<void>((r) => child.on('close', () => r()));
  await waitFor(
    'tcpdump listening in the client namespace',
    () => {
      if (child.exitCode !== null) throw new Error(`tcpdump exited: ${err}`);
      return err.includes('listening on') || undefined;
    },
    30_000,
  );
  return {
    async stop() {
      child.kill('SIGINT');
      await closed;
      // counted by a pipe: the capture's text runs to megabytes
      const read = (f: string) =>
        Number(
          execFileSync('sh', ['-c', `tcpdump -r "$0" -n ${f ? '"$1"' : ''} 2>/dev/null | wc -l`, file, f], {
            encoding: 'utf8',
          }).trim(),
        );
      const r = { packets: read(''), resets: read('tcp[tcpflags] & tcp-rst != 0') };
      rmSync(dir, { recursive: true, force: true });
      return r;
    },
  };
}

test('own namespace: a held switchover loses no packet and sends no reset; held packets reach the restored socket', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await bedOf(t);
  const heldBefore = [releasedHolds(bed, 'a').length, releasedHolds(bed, 'b').length];
  const info = await runJson(bed, [
    'run',
    '--host',
    'a',
    '--name',
    'web',
    '--',
    ...pythonArgs(LINE_COUNTER_PY, 7000),
  ]);
  await waitForPort(info.ip!, 7000);
  const probe = startProbe(bed, 'tcp', `${info.ip}:7000`);
  await connected(bed, `${info.ip}:7000`);
  const cap = await capture(bed, [info.ip!]);
  await servedPast(bed, 'web', 0);
  const before = clientCounters(bed);
  const reports: MigrationReport[] = [];
  for (const to of ['b', 'a', 'b', 'a']) {
    const report = await migrate(bed, 'web', to);
    assert.equal(report.ok, true, JSON.stringify(report.error));
    // the destination's runc restore was started at the hold, before the freeze (migration/staged-restore.ts)
    assert.equal(report.restoreStaged, true, 'the restore was staged');
    reports.push(report);
  }
  // the restored server goes on answering the same connection after the last move
  await servedPast(bed, 'web', await served(bed, 'web'));
  const res = await probe.stop();
  const wire = await cap.stop();
  const d = delta(before, clientCounters(bed));
  const held = [
    ...releasedHolds(bed, 'a').slice(heldBefore[0]),
    ...releasedHolds(bed, 'b').slice(heldBefore[1]),
  ];
  t.diagnostic(
    `replies ${res.replies}, max gap ${res.maxGapMs.toFixed(0)} ms, freeze ms ${reports.map((r) => r.freezeMs).join(' ')}`,
  );
  t.diagnostic(
    `client counters ${JSON.stringify(d)}; holds ${JSON.stringify(held)}; capture ${JSON.stringify(wire)}`,
  );
  assertClean(res, d, 'held switchovers');
  assert.ok(wire.packets > 0, "the capture saw the client's traffic");
  assert.equal(wire.resets, 0, "the capture saw no reset on the client's wire");
  assert.equal(res.serverValues?.continuous, true, 'the server counted every request once, in order');
  assert.equal(held.length, 4, 'each switchover held the traffic and released it');
  for (const h of held) assert.equal(h.dropped, 0, 'a hold dropped nothing');
  // the priming frame and the client's requests: the holds delivered what arrived during the freezes
  assert.ok(
    held.some((h) => h.packets > 2),
    'client packets were held and delivered',
  );
  assert.equal((await containers(bed)).find((c) => c.name === 'web')?.host, 'a');
  assertNoHolds(bed);
});

test('a restore that fails after the hold began rolls back, own namespace and floating address: the held packets are dropped, the connection lives on, no reset on the wire', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await startBed(['a', 'b'], { agentEnv: { b: { FERRY_FAULTS: 'invalid-bundle' } } });
  t.after(() => bed.down());
  const floating = `${bed.state.subnet}.62`;
  // the same failed move twice on one bed: a container in its own namespace, then one holding a floating address
  const cases = [
    { name: 'web', port: 7000, net: [] as string[], bind: undefined as string | undefined },
    { name: 'hweb', port: 7003, net: ['--net', 'host', '--ip', floating], bind: floating },
  ];
  for (const c of cases) {
    const info = await runJson(bed, [
      'run',
      '--host',
      'a',
      '--name',
      c.name,
      ...c.net,
      '--',
      ...pythonArgs(LINE_COUNTER_PY, c.port, c.bind),
    ]);
    const ip = c.bind ?? info.ip!;
    const what = `${c.bind ? 'floating address' : 'own namespace'}, rolled back`;
    await waitForPort(ip, c.port);
    const probe = startProbe(bed, 'tcp', `${ip}:${c.port}`);
    await connected(bed, `${ip}:${c.port}`);
    const cap = await capture(bed, [ip]);
    await servedPast(bed, c.name, 0);
    const before = clientCounters(bed);
    const report = await migrate(bed, c.name, 'b');
    assert.equal(report.ok, false, what);
    assert.equal(report.error?.phase, 'restore', what);
    assert.equal(report.rollback?.sourceRunning, true, what);
    assert.equal(report.rollback?.destinationCleaned, true, what);
    // the client's resent requests come back to the thawed source, on the same connection
    await servedPast(bed, c.name, await served(bed, c.name));
    const res = await probe.stop();
    const wire = await cap.stop();
    const d = delta(before, clientCounters(bed));
    t.diagnostic(
      `${what}: replies ${res.replies}, max gap ${res.maxGapMs.toFixed(0)} ms; client counters ${JSON.stringify(d)}; capture ${JSON.stringify(wire)}`,
    );
    assertClean(res, d, what);
    assert.equal(wire.resets, 0, `${what}: the capture saw no reset on the client's wire`);
    assert.equal(
      res.serverValues?.continuous,
      true,
      `${what}: the source counted every request once, in order`,
    );
    assert.equal((await containers(bed)).find((x) => x.name === c.name)?.host, 'a');
    assert.deepEqual(releasedHolds(bed, 'b'), [], `${what}: nothing held was delivered on the destination`);
    assertNoHolds(bed);
  }
});

test('floating address: TCP and UDP are held through ifb; the address moves; no reset, nothing left', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await bedOf(t);
  const heldBefore = [releasedHolds(bed, 'a').length, releasedHolds(bed, 'b').length];
  const tcpIp = `${bed.state.subnet}.60`;
  const udpIp = `${bed.state.subnet}.61`;
  const run = (name: string, ip: string, prog: string, port: number) =>
    runJson(bed, [
      'run',
      '--host',
      'a',
      '--name',
      name,
      '--net',
      'host',
      '--ip',
      ip,
      '--',
      ...pythonArgs(prog, port, ip),
    ]);
  await run('htcp', tcpIp, LINE_COUNTER_PY, 7001);
  await run('hudp', udpIp, UDP_COUNTER_PY, 7002);
  await waitForPort(tcpIp, 7001);
  const tcp = startProbe(bed, 'tcp', `${tcpIp}:7001`);
  const udp = startProbe(bed, 'udp', `${udpIp}:7002`);
  await connected(bed, `${tcpIp}:7001`);
  const cap = await capture(bed, [tcpIp]);
  await servedPast(bed, 'htcp', 0);
  await servedPast(bed, 'hudp', 0);
  const before = clientCounters(bed);
  const overflowBefore = bed.state.hosts.map((h) => rcvbufErrors(h.netns));
  for (const to of ['b', 'a']) {
    for (const name of ['htcp', 'hudp']) {
      const report = await migrate(bed, name, to);
      assert.equal(report.ok, true, JSON.stringify(report.error));
    }
  }
  await servedPast(bed, 'htcp', await served(bed, 'htcp'));
  await servedPast(bed, 'hudp', await served(bed, 'hudp'));
  const tres = await tcp.stop();
  const ures = await udp.stop();
  const wire = await cap.stop();
  const d = delta(before, clientCounters(bed));
  const held = [
    ...releasedHolds(bed, 'a').slice(heldBefore[0]),
    ...releasedHolds(bed, 'b').slice(heldBefore[1]),
  ];
  const overflow = bed.state.hosts.reduce(
    (n, h, i) => n + rcvbufErrors(h.netns) - (overflowBefore[i] ?? 0),
    0,
  );
  t.diagnostic(`tcp ${JSON.stringify(tres)}; udp ${JSON.stringify(ures)}`);
  t.diagnostic(`UDP: ${ures.lost} unanswered, ${overflow} dropped by a full receive buffer on the hosts`);
  t.diagnostic(`client counters ${JSON.stringify(d)}; holds ${JSON.stringify(held)}`);
  t.diagnostic(`capture ${JSON.stringify(wire)}`);
  assertClean(tres, d, 'floating TCP');
  assert.equal(wire.resets, 0, "floating TCP: the capture saw no reset on the client's wire");
  assert.equal(tres.serverValues?.continuous, true, 'the server counted every request once, in order');
  assert.equal(ures.errors, 0, 'UDP: no error');
  // (UDP's unanswered datagrams are reported, not asserted: see the diagnostic line)
  assert.equal(ures.serverValues?.continuous, true, 'UDP: the server counted what reached it once, in order');
  assert.equal(held.length, 4);
  for (const h of held) assert.equal(h.dropped, 0, 'a hold dropped nothing');
  for (const name of ['htcp', 'hudp'])
    assert.equal((await containers(bed)).find((c) => c.name === name)?.host, 'a');
  assertNoHolds(bed);
});
