// The write-up on live migration with runc: a ~366 MB game server dumped whole, after pre-copy and for post-copy
// (the sizes of the dump taken in the freeze, and the time of each step), then a container carried around the
// world hop by hop, each host's link shaped to its own rate (the tour of `ferry demo`).
import type { MigrationReport, StrategyName } from '../../src/api/types.ts';
import { sleep } from '../common.ts';
import {
  ballastServer,
  intact,
  type Lab,
  labUp,
  migrate,
  PORT,
  phaseMs,
  probed,
  removeContainer,
  startContainer,
} from './lab.ts';
import { type EvalTable, type PlotSpec, type Published, row, Samples, type SuiteOutput } from './model.ts';
import type { EvalContext, EvalSuite } from './run.ts';

const WORK = 'runc-blog';
/** The write-up's server held 366 MB. */
const SERVER_MB = 366;
const MODES: { strategy: StrategyName; label: string; published?: Published; publishedTime?: Published }[] = [
  {
    strategy: 'cold',
    label: 'full dump (cold)',
    publishedTime: { value: 0.58, unit: 's', work: WORK, note: 'full dump' },
  },
  {
    strategy: 'precopy',
    label: 'pre-copy, final dump',
    published: { value: 20, unit: 'MB', work: WORK },
  },
  {
    strategy: 'postcopy',
    label: 'post-copy, final dump',
    published: { value: 204, unit: 'KB', work: WORK },
  },
];
/** --quick: post-copy only. */
const modes = (c: EvalContext) => (c.quick ? MODES.filter((m) => m.strategy === 'postcopy') : MODES);
const STEPS = ['rounds', 'checkpoint', 'transfer', 'restore', 'confirm', 'pages'] as const;

/** The tour of `ferry demo`: four hosts, each link shaped to its own rate; the service goes round and home. */
const TOUR = [
  { host: 'stuttgart', rate: '1gbit' },
  { host: 'strasbourg', rate: '400mbit' },
  { host: 'montreal', rate: '200mbit' },
  { host: 'singapore', rate: '100mbit' },
];
const TOUR_MIB = 16;

async function dumps(c: EvalContext, s: Samples, mib: number): Promise<void> {
  const lab = await labUp('evblog', { hosts: ['a', 'b'] }, c.ferryArgv, c.log, c.quick);
  try {
    for (let run = 0; run < c.runs; run++) {
      for (const m of modes(c)) {
        const name = `g${run}${m.strategy.slice(0, 4)}`;
        const ip = await startContainer(lab, 'a', name, ballastServer(mib));
        let ok = false;
        try {
          const { value: rep, probe } = await probed(
            lab,
            'tcp',
            `${ip}:${PORT}`,
            () => migrate(lab, name, 'a', 'b', { strategy: m.strategy }),
            (r) => r.freezeMs,
          );
          ok = rep.ok && intact(probe);
          const v = (x: number) => (ok ? x : undefined);
          s.add(`size/${m.strategy}`, v(rep.bytesSent));
          for (const st of STEPS) s.add(`${st}/${m.strategy}`, v(phaseMs(rep, st)));
          s.add(`freeze/${m.strategy}`, v(rep.freezeMs));
          s.add(`total/${m.strategy}`, v(rep.totalMs));
          s.add(`gap/${m.strategy}`, v(probe.maxGapMs));
          c.log(
            `run ${run + 1}/${c.runs} ${m.strategy}: final dump ${rep.bytesSent} bytes, freeze ${rep.freezeMs} ms${ok ? '' : ' FAILED'}`,
          );
        } finally {
          await removeContainer(lab, 'b', name);
          await removeContainer(lab, 'a', name);
        }
      }
    }
  } finally {
    await lab.down();
  }
}

async function tour(c: EvalContext, s: Samples): Promise<string[]> {
  const lab: Lab = await labUp(
    'evtour',
    { hosts: TOUR.map((t) => t.host), rates: Object.fromEntries(TOUR.map((t) => [t.host, t.rate])) },
    c.ferryArgv,
    c.log,
  );
  const route = [...TOUR.slice(1).map((t) => t.host), TOUR[0]!.host];
  const hops: string[] = [];
  let here = TOUR[0]!.host;
  for (const to of route) {
    const rate = (h: string) => TOUR.find((t) => t.host === h)!.rate;
    hops.push(`${here} → ${to} (${rate(here)}/${rate(to)})`);
    here = to;
  }
  try {
    for (let run = 0; run < c.runs; run++) {
      const name = `tour${run}`;
      let host = TOUR[0]!.host;
      const ip = await startContainer(lab, host, name, ballastServer(TOUR_MIB));
      try {
        const { value: reports, probe } = await probed(
          lab,
          'tcp',
          `${ip}:${PORT}`,
          async () => {
            const out: { rep: MigrationReport; start: number; end: number }[] = [];
            for (const to of route) {
              const start = performance.timeOrigin + performance.now();
              const rep = await migrate(lab, name, host, to, { strategy: 'auto' });
              out.push({ rep, start, end: performance.timeOrigin + performance.now() });
              if (!rep.ok) break;
              host = to;
              await sleep(1500);
            }
            return out;
          },
          (hs) => Math.max(0, ...hs.map((h) => h.rep.freezeMs)),
        );
        reports.forEach((h, i) => {
          const ok = h.rep.ok && intact(probe);
          // a hop's gap is the one that overlaps it (it may end after the hop returns: TCP backs off)
          const gap = Math.max(
            0,
            ...probe.gaps.filter((g) => g.from <= h.end && g.to >= h.start).map((g) => g.ms),
          );
          s.add(`hop-freeze/${i}`, ok ? h.rep.freezeMs : undefined);
          s.add(`hop-gap/${i}`, ok ? gap : undefined);
          s.add(`hop-total/${i}`, ok ? h.rep.totalMs : undefined);
          c.log(
            `run ${run + 1}/${c.runs} ${hops[i]}: ${h.rep.strategy}, freeze ${h.rep.freezeMs} ms, gap ${gap} ms`,
          );
        });
      } finally {
        await removeContainer(lab, host, name);
      }
    }
  } finally {
    await lab.down();
  }
  return hops;
}

async function measure(c: EvalContext): Promise<SuiteOutput> {
  const mib = c.quick ? 16 : Math.round((SERVER_MB * 1e6) / 2 ** 20);
  const s = new Samples();
  await dumps(c, s, mib);
  // the tour needs four hosts: a --quick run leaves it out
  const hops = c.quick ? [] : await tour(c, s);
  const kb = (k: string) => s.get(k).map((x) => (x === undefined ? x : x / 1000));
  const ran = modes(c);
  const sizes: EvalTable = {
    id: 'dumps',
    title: `The dump taken in the freeze, ${mib} MiB server`,
    rows: ran.map((m) => row(m.label, 'KB', kb(`size/${m.strategy}`), m.published)),
    note: "What crossed during the freeze: CRIU images and the bundle's changes as ferry sends them (zero pages skipped).",
  };
  const steps: EvalTable = {
    id: 'steps',
    title: `Time of each step, ${mib} MiB server`,
    rows: ran.flatMap((m) => [
      ...STEPS.filter((st) => s.median(`${st}/${m.strategy}`) > 0).map((st) =>
        row(
          `${m.strategy}: ${st}`,
          'ms',
          s.get(`${st}/${m.strategy}`),
          st === 'checkpoint' ? m.publishedTime : undefined,
        ),
      ),
      row(`${m.strategy}: freeze`, 'ms', s.get(`freeze/${m.strategy}`)),
      row(`${m.strategy}: client's longest gap`, 'ms', s.get(`gap/${m.strategy}`)),
      row(`${m.strategy}: total`, 'ms', s.get(`total/${m.strategy}`)),
    ]),
    note:
      'Steps as the migration report names them: rounds (pre-copy while it runs), checkpoint (the final dump), ' +
      'transfer, restore, confirm, pages (post-copy: memory after the restore).',
  };
  const tables = [sizes, steps];
  const plots: PlotSpec[] = [
    {
      id: 'dumps',
      title: `Dump in the freeze, ${mib} MiB server`,
      kind: 'bar',
      log: true,
      xLabel: 'mode',
      yLabel: 'KB',
      x: ran.map((m) => m.strategy),
      series: [
        { name: 'ferry (median)', values: ran.map((m) => s.median(`size/${m.strategy}`) / 1000) },
        {
          name: 'published',
          values: ran.map((m) =>
            m.published ? (m.published.value * (m.published.unit === 'MB' ? 1e6 : 1e3)) / 1000 : Number.NaN,
          ),
        },
      ],
    },
  ];
  if (hops.length) {
    tables.push({
      id: 'tour',
      title: `Around the world: a ${TOUR_MIB} MiB service, strategy auto, each host's link shaped`,
      rows: hops.flatMap((h, i) => [
        row(`${h}: freeze`, 'ms', s.get(`hop-freeze/${i}`)),
        row(`${h}: client's gap`, 'ms', s.get(`hop-gap/${i}`)),
        row(`${h}: total`, 'ms', s.get(`hop-total/${i}`)),
      ]),
      note: 'One client holds one TCP connection through the whole tour; a hop counts only if it stayed intact.',
    });
    plots.push({
      id: 'tour',
      title: 'Around the world, hop by hop',
      kind: 'bar',
      xLabel: 'hop',
      yLabel: 'ms',
      x: hops.map((h) => h.split(' (')[0]!.replace(' → ', '→')),
      series: [
        { name: 'freeze', values: hops.map((_, i) => s.median(`hop-freeze/${i}`)) },
        { name: 'client gap', values: hops.map((_, i) => s.median(`hop-gap/${i}`)) },
      ],
    });
  }
  return {
    tables,
    plots,
    notes: c.quick
      ? ['--quick: post-copy only; the around-the-world tour is left out (it needs four hosts).']
      : [],
  };
}

export const runcBlogSuite: EvalSuite = {
  name: 'runc-blog',
  work: 'Write-up: live migration with runc',
  measure,
};
