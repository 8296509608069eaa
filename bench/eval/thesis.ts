// The master's thesis on runC live migration with CRIU. Its micro-benchmarks of CRIU itself (dump and restore
// against memory size, tmpfs or disk, a page server; iterative pre-copy with and without memory changes; TCP after
// a long stop and right after a restore), its macro-benchmark (Redis's downtime against the pre-copy loop's stop
// threshold) and its comparison of naive dump–copy–restore with live migration (the time of each step, and how
// much a Redis client slows down: the thesis found ×1.5 for live container migration and ×10 for naive).
// The page-level tools are the hand recipe's (bench/hand-recipe.ts); ferry's strategies run through its API.
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { MigrationReport, StrategyName } from '../../src/api/types.ts';
import { startBackground } from '../../src/runtime/exec.ts';
import { writerWithServerArgs } from '../../src/workloads/servers.ts';
import { pipeFile, writeFill } from '../archive.ts';
import { sleep, waitForPort } from '../common.ts';
import { handDumpRestore, handMigrate, handRemove, handStart } from '../hand-recipe.ts';
import {
  ballastServer,
  intact,
  type Lab,
  labUp,
  migrate,
  PORT,
  phaseMs,
  probed,
  REDIS,
  removeContainer,
  startContainer,
} from './lab.ts';
import { type EvalTable, type PlotSpec, row, Samples, type SuiteOutput } from './model.ts';
import type { EvalContext, EvalSuite } from './run.ts';

const WORK = 'thesis';
const REDIS_PORT = 6379;
const TMPFS = '/dev/shm/ferry-bench-eval-thesis';
const DISK = '/var/tmp/ferry-bench-eval-thesis';
const STRATEGIES: StrategyName[] = ['cold', 'precopy', 'postcopy'];
type Method = StrategyName | 'auto' | 'naive';

type Where = 'tmpfs' | 'disk' | 'page-server';

interface Sizes {
  micro: number[];
  wheres: Where[];
  tcpStops: number[];
  precopy: number;
  precopyKinds: ('idle' | 'writing')[];
  thresholdRedis: number;
  thresholds: number[];
  compare: number[];
  methods: Method[];
  /** Seconds of Redis requests a client needs without a migration (the job whose slowdown is measured). */
  jobS: number;
  /** How long a client writes (threshold) or its job runs (compare) before the migration starts. */
  warmMs: number;
}

const SIZES = (quick: boolean): Sizes =>
  quick
    ? {
        micro: [16],
        wheres: ['tmpfs'],
        tcpStops: [0],
        precopy: 16,
        precopyKinds: ['writing'],
        thresholdRedis: 16,
        thresholds: [1],
        compare: [16],
        methods: ['naive'],
        jobS: 0.5,
        warmMs: 200,
      }
    : {
        micro: [16, 64, 256],
        wheres: ['tmpfs', 'disk', 'page-server'],
        tcpStops: [0, 5000],
        precopy: 64,
        precopyKinds: ['idle', 'writing'],
        thresholdRedis: 128,
        thresholds: [0.25, 1, 4, 16, 64],
        compare: [64, 256],
        methods: ['naive', ...STRATEGIES, 'auto'],
        jobS: 15,
        warmMs: 2000,
      };

/** Ferry's pre-copy without soft-dirty tracking: each round dumps, then sends only what changed. */
const roundsOf = (r: MigrationReport) => r.precopy?.roundBytes.length ?? 0;

async function micro(lab: Lab, c: EvalContext, z: Sizes, s: Samples, run: number): Promise<void> {
  let port = 27_000 + run * 10;
  for (const mib of z.micro) {
    for (const where of z.wheres) {
      const name = `m${run}${where[0]}${mib}`;
      const ip = lab.nextIp();
      const hc = await handStart(lab.runner, lab.tb, 'a', name, ip, ballastServer(mib));
      try {
        await waitForPort(ip, PORT, 180_000);
        const r = await handDumpRestore(lab.runner, lab.tb, hc, {
          images: join(where === 'disk' ? DISK : TMPFS, name),
          ...(where === 'page-server' ? { pageServer: { host: 'b', port: port++ } } : {}),
        });
        s.add(`dump/${where}/${mib}`, r.dumpMs);
        s.add(`restore/${where}/${mib}`, r.restoreMs);
        c.log(
          `run ${run + 1} CRIU ${where} ${mib} MiB: dump ${r.dumpMs.toFixed(0)} ms, restore ${r.restoreMs.toFixed(0)} ms`,
        );
      } catch (err) {
        s.add(`dump/${where}/${mib}`, undefined);
        s.add(`restore/${where}/${mib}`, undefined);
        c.log(`run ${run + 1} CRIU ${where} ${mib} MiB FAILED: ${(err as Error).message.slice(0, 300)}`);
      } finally {
        await handRemove(lab.runner, lab.tb, hc);
      }
    }
  }
}

async function tcp(lab: Lab, c: EvalContext, z: Sizes, s: Samples, run: number): Promise<void> {
  for (const stop of z.tcpStops) {
    const name = `c${run}s${stop}`;
    const ip = lab.nextIp();
    const hc = await handStart(lab.runner, lab.tb, 'a', name, ip, ballastServer(0));
    try {
      await waitForPort(ip, PORT, 60_000);
      const { value: r, probe } = await probed(
        lab,
        'tcp',
        `${ip}:${PORT}`,
        () => handDumpRestore(lab.runner, lab.tb, hc, { images: join(TMPFS, name), stoppedMs: stop }),
        (x) => x.dumpMs + stop + x.restoreMs,
      );
      const ok = intact(probe);
      s.add(`tcp-gap/${stop}`, ok ? probe.maxGapMs : undefined);
      s.add(`tcp-extra/${stop}`, ok ? probe.maxGapMs - (r.dumpMs + stop + r.restoreMs) : undefined);
      c.log(`run ${run + 1} TCP stopped ${stop} ms: gap ${probe.maxGapMs} ms${ok ? '' : ' BROKEN'}`);
    } catch (err) {
      s.add(`tcp-gap/${stop}`, undefined);
      s.add(`tcp-extra/${stop}`, undefined);
      c.log(`run ${run + 1} TCP stopped ${stop} ms FAILED: ${(err as Error).message.slice(0, 300)}`);
    } finally {
      await handRemove(lab.runner, lab.tb, hc);
    }
  }
}

async function precopy(lab: Lab, c: EvalContext, z: Sizes, s: Samples, run: number): Promise<void> {
  for (const kind of z.precopyKinds) {
    const name = `p${run}${kind[0]}`;
    let host = 'a';
    try {
      await startContainer(
        lab,
        'a',
        name,
        kind === 'idle' ? ballastServer(z.precopy) : writerWithServerArgs(z.precopy, PORT),
      );
      const rep = await migrate(lab, name, 'a', 'b', { strategy: 'precopy' });
      if (rep.ok) host = 'b';
      const v = (x: number | undefined) => (rep.ok ? x : undefined);
      s.add(`pc-rounds/${kind}`, v(roundsOf(rep)));
      s.add(`pc-first/${kind}`, v(rep.precopy?.roundBytes[0]));
      s.add(`pc-last/${kind}`, v(rep.precopy?.roundBytes.at(-1)));
      s.add(`pc-switch/${kind}`, v(rep.bytesSent));
      s.add(`pc-freeze/${kind}`, v(rep.freezeMs));
      c.log(
        `run ${run + 1} pre-copy ${kind}: rounds ${rep.precopy?.roundBytes.join(',')} then ${rep.bytesSent} bytes`,
      );
    } finally {
      await removeContainer(lab, host, name);
    }
  }
}

/** A Redis container filled with `mib` MiB of random values (as hex text). */
async function redis(lab: Lab, name: string, mib: number, fill: string, hand: boolean) {
  const ip = lab.nextIp();
  const hc = hand ? await handStart(lab.runner, lab.tb, 'a', name, ip, REDIS) : undefined;
  if (!hand) await lab.ctx.client('a').create({ name, command: REDIS, net: 'own', ip });
  await waitForPort(ip, REDIS_PORT, 60_000);
  await pipeFile(
    ['ip', 'netns', 'exec', lab.tb.client.netns, 'redis-cli', '-h', ip, '--pipe'],
    `${fill}-${mib}`,
  );
  return { ip, hc };
}

/** redis-benchmark from the client's namespace on one connection: `n` GETs, its time in ms. */
async function job(lab: Lab, ip: string, n: number): Promise<number> {
  const t0 = performance.now();
  await lab.client(['redis-benchmark', '-h', ip, '-c', '1', '-n', String(n), '-t', 'get', '-q']);
  return performance.now() - t0;
}

async function thresholds(lab: Lab, c: EvalContext, z: Sizes, s: Samples, run: number, fill: string) {
  for (const t of z.thresholds) {
    const name = `h${run}t${String(t).replace('.', '')}`;
    let host = 'a';
    try {
      const { ip } = await redis(lab, name, z.thresholdRedis, fill, false);
      // a client that keeps writing, so that the rounds have something to send again; started once the probe
      // is connected (the probe waits for an established connection, and the writer's would count)
      const writer = () =>
        startBackground([
          'ip',
          'netns',
          'exec',
          lab.tb.client.netns,
          'redis-benchmark',
          '-h',
          ip,
          '-c',
          '1',
          '-n',
          '1000000000',
          '-t',
          'set',
          '-r',
          '20000',
          '-d',
          '1024',
          '-q',
        ]);
      let w: ReturnType<typeof writer> | undefined;
      try {
        const { value: rep, probe } = await probed(
          lab,
          'redis',
          `${ip}:${REDIS_PORT}`,
          async () => {
            w = writer();
            await sleep(z.warmMs);
            return migrate(lab, name, 'a', 'b', {
              strategy: 'precopy',
              thresholdBytes: Math.round(t * 2 ** 20),
            });
          },
          (r) => r.freezeMs,
        );
        const ok = rep.ok && intact(probe);
        if (rep.ok) host = 'b';
        s.add(`th-gap/${t}`, ok ? probe.maxGapMs : undefined);
        s.add(`th-freeze/${t}`, ok ? rep.freezeMs : undefined);
        s.add(`th-rounds/${t}`, ok ? roundsOf(rep) : undefined);
        s.add(`th-total/${t}`, ok ? rep.totalMs : undefined);
        c.log(
          `run ${run + 1} threshold ${t} MiB: ${roundsOf(rep)} rounds, gap ${probe.maxGapMs} ms${ok ? '' : ' FAILED'}`,
        );
      } finally {
        await w?.stop('SIGINT').catch(() => {});
      }
    } catch (err) {
      for (const k of ['gap', 'freeze', 'rounds', 'total']) s.add(`th-${k}/${t}`, undefined);
      c.log(`run ${run + 1} threshold ${t} MiB FAILED: ${(err as Error).message.slice(0, 300)}`);
    } finally {
      await removeContainer(lab, host, name);
      await removeContainer(lab, 'a', name);
    }
  }
}

async function compare(lab: Lab, c: EvalContext, z: Sizes, s: Samples, run: number, fill: string) {
  for (const mib of z.compare) {
    // the job: as many GETs as the client does in jobS seconds without a migration, measured now
    let n = 0;
    for (const m of z.methods) {
      const name = `n${run}${m.slice(0, 3)}${mib}`;
      const hand = m === 'naive';
      let where = 'a';
      let hc: Awaited<ReturnType<typeof redis>>['hc'];
      try {
        const r = await redis(lab, name, mib, fill, hand);
        hc = r.hc;
        if (!n) {
          const calib = c.quick ? 1000 : 3000;
          n = Math.max(calib, Math.round((calib / (await job(lab, r.ip, calib))) * 1000 * z.jobS));
        }
        const { value, probe } = await probed(
          lab,
          'redis',
          `${r.ip}:${REDIS_PORT}`,
          async () => {
            // the same job without a migration first, with the probe running as it will during the migration
            const base = await job(lab, r.ip, n);
            const running = job(lab, r.ip, n);
            await sleep(Math.min(1000, z.warmMs));
            const t0 = performance.now();
            let rep: MigrationReport | undefined;
            let steps: Record<string, number> = {};
            if (hc) {
              const t = await handMigrate(lab.runner, lab.tb, hc, 'b');
              steps = { dump: t.dumpMs, copy: t.copyMs, restore: t.restoreMs };
            } else {
              rep = await migrate(lab, name, 'a', 'b', { strategy: m as StrategyName | 'auto' });
              for (const p of ['rounds', 'checkpoint', 'transfer', 'restore', 'confirm', 'pages'])
                steps[p] = phaseMs(rep, p);
            }
            const totalMs = performance.now() - t0;
            return { rep, steps, totalMs, base, jobMs: await running };
          },
          (v) => v.rep?.freezeMs ?? v.totalMs,
        );
        const ok = (value.rep?.ok ?? true) && intact(probe);
        if (ok) where = 'b';
        const v = (x: number) => (ok ? x : undefined);
        s.add(`cmp-gap/${m}/${mib}`, v(probe.maxGapMs));
        s.add(`cmp-total/${m}/${mib}`, v(value.rep?.totalMs ?? value.totalMs));
        s.add(`cmp-slow/${m}/${mib}`, v(value.jobMs / value.base));
        for (const [k, ms] of Object.entries(value.steps)) s.add(`cmp-step/${m}/${mib}/${k}`, v(ms));
        c.log(
          `run ${run + 1} ${m} ${mib} MiB: gap ${probe.maxGapMs} ms, slowdown ×${(value.jobMs / value.base).toFixed(2)}${ok ? '' : ' FAILED'}`,
        );
      } catch (err) {
        for (const k of ['gap', 'total', 'slow']) s.add(`cmp-${k}/${m}/${mib}`, undefined);
        c.log(`run ${run + 1} ${m} ${mib} MiB FAILED: ${(err as Error).message.slice(0, 300)}`);
      } finally {
        if (hc) await handRemove(lab.runner, lab.tb, hc);
        else {
          await removeContainer(lab, where, name);
          await removeContainer(lab, 'a', name);
        }
      }
    }
  }
}

const STEP_NAMES = ['dump', 'copy', 'rounds', 'checkpoint', 'transfer', 'restore', 'confirm', 'pages'];

function tables(z: Sizes, s: Samples): { tables: EvalTable[]; plots: PlotSpec[] } {
  const wheres = z.wheres;
  const criu: EvalTable = {
    id: 'criu',
    title: 'CRIU alone: dump and restore in place against memory size and where the images go',
    rows: z.micro.flatMap((mib) =>
      wheres.flatMap((w) => [
        row(`${mib} MiB, ${w}: dump`, 'ms', s.get(`dump/${w}/${mib}`)),
        row(`${mib} MiB, ${w}: restore`, 'ms', s.get(`restore/${w}/${mib}`)),
      ]),
    ),
    note:
      'runc checkpoint/restore by hand on one host, a Python process holding random bytes. disk: a directory on ' +
      "the root file system (written to the page cache, not synced); page-server: the pages go to CRIU's page " +
      'server on the other host, then the images are merged there for the restore.',
  };
  const tcpT: EvalTable = {
    id: 'tcp',
    title: "TCP: a client's downtime when the container is restored right away and after a long stop",
    rows: z.tcpStops.flatMap((st) => [
      row(`stopped ${st} ms: client's longest gap`, 'ms', s.get(`tcp-gap/${st}`)),
      row(`stopped ${st} ms: gap beyond dump + stop + restore`, 'ms', s.get(`tcp-extra/${st}`)),
    ]),
    note:
      "Whether the client's retransmission backoff adds to its gap once the server is back: the gap beyond " +
      "dump + stop + restore (below 0 when it adds nothing: runc's own work before the freeze and after the " +
      'restore counts in the dump and restore times).',
  };
  const kinds = z.precopyKinds;
  const pc: EvalTable = {
    id: 'precopy',
    title: `Iterative pre-copy of a ${z.precopy} MiB container, with and without memory changes`,
    rows: kinds.flatMap((k) => [
      row(`${k}: rounds`, 'count', s.get(`pc-rounds/${k}`)),
      row(
        `${k}: first round`,
        'MiB',
        s.get(`pc-first/${k}`).map((x) => (x === undefined ? x : x / 2 ** 20)),
      ),
      row(
        `${k}: last round`,
        'MiB',
        s.get(`pc-last/${k}`).map((x) => (x === undefined ? x : x / 2 ** 20)),
      ),
      row(
        `${k}: sent in the freeze`,
        'MiB',
        s.get(`pc-switch/${k}`).map((x) => (x === undefined ? x : x / 2 ** 20)),
      ),
      row(`${k}: freeze`, 'ms', s.get(`pc-freeze/${k}`)),
    ]),
    note:
      "This kernel has no soft-dirty tracking, so CRIU's own pre-dumps fail here; ferry's pre-copy dumps in " +
      'each round and sends only pages whose content changed since the previous round. writing: a process ' +
      'rewriting 1/64 of its pages every 10 ms.',
  };
  const th: EvalTable = {
    id: 'threshold',
    title: `Redis (${z.thresholdRedis} MiB of values, a client writing) migrated by pre-copy against the stop threshold`,
    rows: z.thresholds.flatMap((t) => [
      row(`threshold ${t} MiB: downtime`, 'ms', s.get(`th-gap/${t}`)),
      row(`threshold ${t} MiB: freeze`, 'ms', s.get(`th-freeze/${t}`)),
      row(`threshold ${t} MiB: rounds`, 'count', s.get(`th-rounds/${t}`)),
      row(`threshold ${t} MiB: total`, 'ms', s.get(`th-total/${t}`)),
    ]),
    note:
      '`ferry migrate --strategy precopy --threshold BYTES`: the loop switches over once a round sends at most ' +
      'the threshold (or after 5 rounds). Downtime: the longest gap a Redis client saw, one request every 2 ms.',
  };
  const label = (m: Method) => (m === 'naive' ? 'naive (dump, copy, restore)' : `ferry ${m}`);
  const cmp: EvalTable = {
    id: 'compare',
    title: "Naive migration against ferry's strategies: Redis, downtime, total, slowdown of a client",
    rows: z.compare.flatMap((mib) =>
      z.methods.flatMap((m) => [
        row(`${mib} MiB, ${label(m)}: downtime`, 'ms', s.get(`cmp-gap/${m}/${mib}`)),
        row(`${mib} MiB, ${label(m)}: total`, 'ms', s.get(`cmp-total/${m}/${mib}`)),
        row(
          `${mib} MiB, ${label(m)}: client slowdown`,
          '×',
          s.get(`cmp-slow/${m}/${mib}`),
          m === 'naive'
            ? { value: 10, unit: '×', work: WORK, note: 'naive migration' }
            : { value: 1.5, unit: '×', work: WORK, note: 'live container migration' },
        ),
      ]),
    ),
    note:
      `Slowdown: the time a Redis client takes for ${z.jobS} s worth of GETs on one connection while the ` +
      `container migrates (it starts ${Math.min(1000, z.warmMs) / 1000} s into them), divided by its time for the same GETs just before. The ` +
      'thesis reported ×1.5 for live container migration, ×2 for virtual machine migration (see the QEMU ' +
      'section) and ×10 for naive migration.',
  };
  const steps: EvalTable = {
    id: 'steps',
    title: 'Where the time goes: each step of each method',
    rows: z.compare.flatMap((mib) =>
      z.methods.flatMap((m) =>
        STEP_NAMES.filter((st) => s.median(`cmp-step/${m}/${mib}/${st}`) > 0).map((st) =>
          row(`${mib} MiB, ${label(m)}: ${st}`, 'ms', s.get(`cmp-step/${m}/${mib}/${st}`)),
        ),
      ),
    ),
  };
  const plots: PlotSpec[] = [
    {
      id: 'criu',
      title: 'CRIU dump and restore time against memory',
      kind: 'line',
      xLabel: 'memory (MiB)',
      yLabel: 'ms',
      x: z.micro.map(String),
      series: wheres.flatMap((w) => [
        { name: `dump, ${w}`, values: z.micro.map((m) => s.median(`dump/${w}/${m}`)) },
        ...(w === 'page-server'
          ? []
          : [{ name: `restore, ${w}`, values: z.micro.map((m) => s.median(`restore/${w}/${m}`)) }]),
      ]),
    },
    {
      id: 'threshold',
      title: 'Redis downtime against the pre-copy threshold',
      kind: 'line',
      xLabel: 'threshold (MiB)',
      yLabel: 'ms',
      x: z.thresholds.map(String),
      series: [
        { name: 'downtime', values: z.thresholds.map((t) => s.median(`th-gap/${t}`)) },
        { name: 'freeze', values: z.thresholds.map((t) => s.median(`th-freeze/${t}`)) },
      ],
    },
    {
      id: 'compare',
      title: 'Redis downtime: naive against ferry',
      kind: 'bar',
      log: true,
      xLabel: 'Redis memory (MiB)',
      yLabel: 'ms',
      x: z.compare.map(String),
      series: z.methods.map((m) => ({
        name: m,
        values: z.compare.map((mib) => s.median(`cmp-gap/${m}/${mib}`)),
      })),
    },
    {
      id: 'slowdown',
      title: 'Client slowdown during the migration',
      kind: 'bar',
      xLabel: 'Redis memory (MiB)',
      yLabel: 'slowdown (×)',
      x: z.compare.map(String),
      series: z.methods.map((m) => ({
        name: m,
        values: z.compare.map((mib) => s.median(`cmp-slow/${m}/${mib}`)),
      })),
    },
  ];
  return { tables: [criu, tcpT, pc, th, cmp, steps], plots };
}

async function measure(c: EvalContext): Promise<SuiteOutput> {
  const z = SIZES(c.quick);
  const s = new Samples();
  await mkdir(TMPFS, { recursive: true });
  await mkdir(DISK, { recursive: true });
  const fill = join(TMPFS, 'fill');
  for (const mib of new Set([z.thresholdRedis, ...z.compare])) await writeFill(`${fill}-${mib}`, mib);
  const lab = await labUp('evthes', { hosts: ['a', 'b'] }, c.ferryArgv, c.log, c.quick);
  try {
    for (let run = 0; run < c.runs; run++) {
      await micro(lab, c, z, s, run);
      await tcp(lab, c, z, s, run);
      await precopy(lab, c, z, s, run);
      await thresholds(lab, c, z, s, run, fill);
      await compare(lab, c, z, s, run, fill);
    }
  } finally {
    await lab.down();
    await rm(TMPFS, { recursive: true, force: true });
    await rm(DISK, { recursive: true, force: true });
  }
  return {
    ...tables(z, s),
    notes: c.quick
      ? [
          '--quick: one size, images on tmpfs, no long stop, the writing container, one threshold, naive only.',
        ]
      : [],
  };
}

export const thesisSuite: EvalSuite = {
  name: 'thesis',
  work: "Master's thesis: runC live migration with CRIU",
  measure,
};
