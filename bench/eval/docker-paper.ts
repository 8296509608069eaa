// `ferry bench docker-paper`: the two experiments of a paper on checkpoint/restore of Docker containers.
// 1. The busybox counter: checkpointed into an archive (`ferry checkpoint --export`) and restored from it
//    (`ferry restore --import --host`) on the same host and on another; each command timed as a user runs it, and
//    the counter must go on from where it stopped (not start again).
// 2. The SDN experiment (sdn-scenario.ts): an os-ken controller in a ferry container migrated post-copy, cold and
//    pre-copy while two Open vSwitch bridges stay connected to it and traffic crosses them.
// Both on one two-host testbed; needs `scripts/setup.sh sdn` (Open vSwitch, python3-os-ken).
import { readFile, rm, stat } from 'node:fs/promises';
import { ClusterClients } from '../../src/api/cluster-clients.ts';
import { ProcessRunner } from '../../src/runtime/exec.ts';
import { type TestbedState, testbedDown, testbedUp } from '../../src/testbed/testbed.ts';
import { sleep } from '../common.ts';
import { row, Samples, type SuiteOutput } from './model.ts';
import type { EvalContext, EvalSuite } from './run.ts';
import { sdnScenario } from './sdn-scenario.ts';

const TESTBED = 'edock';
const WORK = 'Paper: checkpoint/restore of Docker containers';

/** The paper's counter: a shell loop in busybox; it writes its count to a file so that a restore can be checked. */
const COUNTER = [
  '/bin/busybox',
  'sh',
  '-c',
  'i=0; while true; do i=$((i+1)); echo $i; echo $i > /tmp/count; sleep 0.1; done',
];

const STRATEGIES = ['postcopy', 'cold', 'precopy'];
const LABEL: Record<string, string> = { postcopy: 'post-copy', cold: 'cold', precopy: 'pre-copy' };

async function readCount(pid: number | undefined): Promise<number> {
  if (!pid) return Number.NaN;
  // every simulated host shares this kernel: the container's files are under its process's root
  const text = await readFile(`/proc/${pid}/root/tmp/count`, 'utf8').catch(() => '');
  return Number.parseInt(text.trim(), 10);
}

/** Reads the count until `ok` holds for it or `ms` have passed; the last count read. */
async function countUntil(pid: number | undefined, ok: (n: number) => boolean, ms: number): Promise<number> {
  const deadline = performance.now() + ms;
  for (;;) {
    const n = await readCount(pid);
    if (ok(n) || performance.now() > deadline) return n;
    await sleep(50);
  }
}

async function counterRuns(
  ctx: EvalContext,
  tb: TestbedState,
  clients: ClusterClients,
  s: Samples,
): Promise<void> {
  const runner = new ProcessRunner();
  const ferry = async (...args: string[]) => {
    const t0 = performance.now();
    const r = await runner.run([...ctx.ferryArgv, '--cluster', tb.clusterFile, ...args, '--json'], {
      label: `ferry ${args[0]}`,
    });
    return { ms: performance.now() - t0, out: JSON.parse(r.stdout) as Record<string, unknown> };
  };
  for (let run = 0; run < ctx.runs; run++) {
    for (const [where, host] of [
      ['same host', 'a'],
      ['another host', 'b'],
    ] as const) {
      const name = `count${run}${host}`;
      const file = `/dev/shm/ferry-bench-${TESTBED}-${name}.tar.zst`;
      let restoredOn: string | undefined;
      try {
        await clients.client('a').create({ name, command: COUNTER, net: 'none' });
        if (!ctx.quick) await sleep(1000);
        const pid = (await clients.client('a').containers()).find((c) => c.name === name)?.pid;
        // --quick: as soon as it has counted a little, not a second
        const before = ctx.quick ? await countUntil(pid, (n) => n >= 2, 5000) : await readCount(pid);
        const ck = await ferry('checkpoint', name, '--export', file);
        const bytes = (await stat(file)).size;
        // the checkpoint stopped it; its record goes before the restore takes the name (as `docker rm` would)
        await clients.client('a').remove(name);
        const rs = await ferry('restore', '--import', file, '--host', host);
        restoredOn = host;
        const restoredPid = (rs.out['container'] as { pid?: number } | undefined)?.pid;
        let v1: number;
        let v2: number;
        if (ctx.quick) {
          // --quick: the first count readable, then the first one past it
          v1 = await countUntil(restoredPid, Number.isFinite, 5000);
          v2 = await countUntil(restoredPid, (n) => n > v1, 5000);
        } else {
          await sleep(300);
          v1 = await readCount(restoredPid);
          await sleep(500);
          v2 = await readCount(restoredPid);
        }
        // it goes on from where it stopped: at least the count read before the checkpoint, and still counting
        const continued = v1 >= before && v2 > v1;
        ctx.log(
          `counter run ${run + 1}/${ctx.runs} ${where}: checkpoint ${Math.round(ck.ms)} ms, restore ${Math.round(rs.ms)} ms, ` +
            `count ${before} → ${v1} → ${v2}${continued ? '' : ' (DID NOT CONTINUE)'}`,
        );
        s.add(`${where}/checkpoint`, continued ? ck.ms : undefined);
        s.add(`${where}/restore`, continued ? rs.ms : undefined);
        s.add(`${where}/restore-agent`, continued ? Number(rs.out['restoreMs']) : undefined);
        s.add(`${where}/size`, continued ? bytes / 1024 : undefined);
        s.add(`${where}/continued`, continued ? 1 : 0);
      } catch (err) {
        ctx.log(`counter run ${run + 1} ${where} failed: ${(err as Error).message}`);
        for (const k of ['checkpoint', 'restore', 'restore-agent', 'size']) s.add(`${where}/${k}`, undefined);
        s.add(`${where}/continued`, 0);
      } finally {
        for (const h of new Set(['a', restoredOn ?? 'a']))
          await clients
            .client(h)
            .remove(name)
            .catch(() => {});
        await rm(file, { force: true });
      }
    }
  }
}

async function sdnRuns(
  ctx: EvalContext,
  tb: TestbedState,
  clients: ClusterClients,
  s: Samples,
): Promise<number> {
  let moves = 0;
  for (let run = 0; run < ctx.runs; run++) {
    try {
      const r = await sdnScenario({
        ctx: clients,
        tb,
        runner: new ProcessRunner(),
        prefix: 'esdb',
        name: `ofctl${run}`,
        ip: `${tb.subnet}.${80 + run}`,
        // --quick: one move shows the suite works; the three moves are the integration test's (sdn.test.ts)
        strategies: ctx.quick ? STRATEGIES.slice(0, 1) : STRATEGIES,
        brief: ctx.quick,
        log: ctx.log,
      });
      for (const m of r.moves) {
        moves++;
        s.add(`${m.strategy}/gap`, m.ok ? m.packetInGapMs : undefined);
        s.add(`${m.strategy}/freeze`, m.ok ? m.freezeMs : undefined);
        s.add(`${m.strategy}/total`, m.ok ? m.totalMs : undefined);
        s.add(`${m.strategy}/newflow`, m.ok ? m.newFlowMs : undefined);
        s.add('reconnects', m.reconnects);
        s.add('connected', m.stayedConnected ? 1 : 0);
      }
      s.add('lost', r.unicast.lost);
      s.add('sent', r.unicast.sent);
      s.add('quiet', r.quietGapMs);
      ctx.log(`sdn run ${run + 1}/${ctx.runs}: unicast ${r.unicast.lost} of ${r.unicast.sent} lost`);
    } catch (err) {
      // a run that broke off before its moves were counted (the testbed, OVS): its moves count as failed
      ctx.log(`sdn run ${run + 1} failed: ${(err as Error).message}`);
      for (const st of STRATEGIES)
        for (const k of ['gap', 'freeze', 'total', 'newflow']) s.add(`${st}/${k}`, undefined);
      s.add('connected', 0);
    }
  }
  return moves;
}

const sum = (xs: (number | undefined)[]) => xs.reduce<number>((a, b) => a + (b ?? 0), 0);

async function measure(ctx: EvalContext): Promise<SuiteOutput> {
  const runner = new ProcessRunner();
  const deps = { runner, ferryArgv: ctx.ferryArgv };
  await testbedDown(TESTBED, deps).catch(() => {});
  const tb = await testbedUp({ name: TESTBED, hosts: ['a', 'b'] }, deps);
  const clients = await ClusterClients.load(tb.clusterFile);
  const counter = new Samples();
  const sdn = new Samples();
  let moves = 0;
  try {
    await counterRuns(ctx, tb, clients, counter);
    moves = await sdnRuns(ctx, tb, clients, sdn);
  } finally {
    clients.close();
    await testbedDown(TESTBED, deps);
  }
  const counterRows = (['same host', 'another host'] as const).flatMap((w) => [
    row(`${w}: ferry checkpoint --export`, 'ms', counter.get(`${w}/checkpoint`)),
    row(`${w}: ferry restore --import`, 'ms', counter.get(`${w}/restore`)),
    row(`${w}: restore inside the agent`, 'ms', counter.get(`${w}/restore-agent`)),
    row(`${w}: archive size`, 'KiB', counter.get(`${w}/size`)),
  ]);
  const continued = ['same host', 'another host'].map(
    (w) => `${sum(counter.get(`${w}/continued`))} of ${counter.get(`${w}/continued`).length}`,
  );
  const sdnRows = STRATEGIES.flatMap((st) => [
    row(`${LABEL[st]}: packet-in path stalled`, 'ms', sdn.get(`${st}/gap`)),
    row(`${LABEL[st]}: freeze (ferry's report)`, 'ms', sdn.get(`${st}/freeze`)),
    row(`${LABEL[st]}: migration, whole`, 'ms', sdn.get(`${st}/total`)),
    row(`${LABEL[st]}: new flow installed after the move`, 'ms', sdn.get(`${st}/newflow`)),
  ]);
  sdnRows.push(
    row('packet-in gap without a move (baseline)', 'ms', sdn.get('quiet')),
    row('switch reconnects per move', 'count', sdn.get('reconnects')),
    row('unicast datagrams sent per run (one every 10 ms)', 'count', sdn.get('sent')),
    row('unicast datagrams lost per run', 'count', sdn.get('lost')),
  );
  const connected = `${sum(sdn.get('connected'))} of ${moves}`;
  return {
    tables: [
      {
        id: 'counter',
        title: 'Busybox counter: checkpoint into an archive, restore on the same host and on another',
        rows: counterRows,
        note:
          `Each command timed as a user runs it (the CLI's whole run); the archive is zstd on tmpfs. The counter went on ` +
          `from where it stopped after every restore counted here (same host: ${continued[0]}, another host: ${continued[1]} runs).`,
      },
      {
        id: 'sdn',
        title: 'SDN controller (os-ken, OpenFlow 1.3) migrated while two Open vSwitch bridges stay connected',
        rows: sdnRows,
        note:
          `Each run migrates the controller three times (post-copy a→b, cold b→a, pre-copy a→b). Every bridge stayed ` +
          `connected through ${connected} moves (no new connection attempt in ovs-vswitchd's log, sec_since_connect ` +
          `never reset). "Packet-in path stalled": the longest gap between broadcasts (one every 20 ms, each a packet-in and ` +
          `a packet-out on both bridges) reaching the far host during a move, as the switches saw the controller. ` +
          `OVS's echo probes are at least 5 s apart, too coarse to time a move; the packet-in path is what the switches wait on. ` +
          `The bridges keep OVS's default inactivity probe: a controller silent for 5 s gets an echo request and 5 s more to ` +
          `answer, so a move that stalls it about 10 s (a starved machine) drops the connection; such a move counts as failed above.`,
      },
    ],
    plots: [
      {
        id: 'sdn',
        title: 'SDN controller moves: packet-in stall against ferry’s freeze (medians)',
        kind: 'bar',
        xLabel: 'strategy',
        yLabel: 'ms',
        x: STRATEGIES.map((st) => LABEL[st]!),
        series: [
          { name: 'packet-in path stalled', values: STRATEGIES.map((st) => sdn.median(`${st}/gap`)) },
          { name: 'freeze', values: STRATEGIES.map((st) => sdn.median(`${st}/freeze`)) },
          { name: 'new flow after the move', values: STRATEGIES.map((st) => sdn.median(`${st}/newflow`)) },
        ],
      },
      {
        id: 'counter',
        title: 'Busybox counter: checkpoint and restore commands (medians)',
        kind: 'bar',
        xLabel: 'restored on',
        yLabel: 'ms',
        x: ['same host', 'another host'],
        series: [
          {
            name: 'ferry checkpoint --export',
            values: ['same host', 'another host'].map((w) => counter.median(`${w}/checkpoint`)),
          },
          {
            name: 'ferry restore --import',
            values: ['same host', 'another host'].map((w) => counter.median(`${w}/restore`)),
          },
        ],
      },
    ],
    notes: [
      'No published figure is set beside these rows: the experiments are reproduced as the paper describes them (a ' +
        'counter that must go on, a controller whose switches must stay connected), and that outcome is what the tables check.',
    ],
  };
}

export const dockerPaperSuite: EvalSuite = {
  name: 'docker-paper',
  work: WORK,
  measure,
};
