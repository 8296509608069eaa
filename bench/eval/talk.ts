// The talk on CRIU/LXC migration: pre-copy against post-copy for a 200 MB process. What must cross before the
// process runs again on the destination (the talk: 116 KB with post-copy), and the downtime a client sees.
import type { MigrationReport, StrategyName } from '../../src/api/types.ts';
import {
  ballastServer,
  intact,
  labUp,
  migrate,
  PORT,
  probed,
  removeContainer,
  startContainer,
} from './lab.ts';
import { row, Samples, type SuiteOutput } from './model.ts';
import type { EvalContext, EvalSuite } from './run.ts';

const WORK = 'talk';
const STRATEGIES: StrategyName[] = ['precopy', 'postcopy', 'cold'];

/** Bytes that crossed before the restore: every pre-copy round, then what the freeze sent. */
export function bytesBeforeRestore(r: MigrationReport): number {
  return (r.precopy?.roundBytes ?? []).reduce((a, b) => a + b, 0) + r.bytesSent;
}

async function measure(c: EvalContext): Promise<SuiteOutput> {
  const mib = c.quick ? 16 : 200;
  const strategies: StrategyName[] = c.quick ? ['postcopy'] : STRATEGIES;
  const lab = await labUp('evtalk', { hosts: ['a', 'b'] }, c.ferryArgv, c.log, c.quick);
  const s = new Samples();
  try {
    for (let run = 0; run < c.runs; run++) {
      for (const strategy of strategies) {
        const name = `t${run}${strategy.slice(0, 4)}`;
        const ip = await startContainer(lab, 'a', name, ballastServer(mib));
        let ok = false;
        try {
          const { value: rep, probe } = await probed(
            lab,
            'tcp',
            `${ip}:${PORT}`,
            () => migrate(lab, name, 'a', 'b', { strategy }),
            (r) => r.freezeMs,
          );
          ok = rep.ok && intact(probe);
          const v = (x: number) => (ok ? x : undefined);
          s.add(`before/${strategy}`, v(bytesBeforeRestore(rep)));
          s.add(`freeze-bytes/${strategy}`, v(rep.bytesSent));
          s.add(`gap/${strategy}`, v(probe.maxGapMs));
          s.add(`freeze/${strategy}`, v(rep.freezeMs));
          s.add(`total/${strategy}`, v(rep.totalMs));
          if (strategy === 'postcopy') s.add('lastpage', v(rep.postcopy?.lastPageMs ?? Number.NaN));
          c.log(
            `run ${run + 1}/${c.runs} ${strategy}: ${bytesBeforeRestore(rep)} bytes before the restore, gap ${probe.maxGapMs} ms${ok ? '' : ' FAILED'}`,
          );
        } finally {
          await removeContainer(lab, ok ? 'b' : 'a', name);
          await removeContainer(lab, ok ? 'a' : 'b', name);
        }
      }
    }
  } finally {
    await lab.down();
  }
  const published = { value: 116, unit: 'KB', work: WORK, note: 'post-copy, 200 MB process' };
  const kib = (k: string) => s.get(k).map((x) => (x === undefined ? x : x / 1024));
  const before = {
    id: 'bytes',
    title: `Bytes that cross before the restore, ${mib} MiB process`,
    rows: strategies.map((st) =>
      row(
        `${st}: before the restore`,
        'KiB',
        kib(`before/${st}`),
        st === 'postcopy' ? { ...published, unit: 'KB' } : undefined,
      ),
    ),
    note:
      'Pre-copy: every round plus the final dump; post-copy: the final dump without memory (the pages follow on ' +
      'demand after the restore); cold: the whole dump. Bundle and images as ferry sends them, zero pages skipped.',
  };
  const downtime = {
    id: 'downtime',
    title: `Downtime and freeze, ${mib} MiB process`,
    rows: strategies.flatMap((st) => [
      row(`${st}: client's longest gap`, 'ms', s.get(`gap/${st}`)),
      row(`${st}: freeze`, 'ms', s.get(`freeze/${st}`)),
      row(`${st}: total`, 'ms', s.get(`total/${st}`)),
      ...(st === 'postcopy' ? [row('postcopy: last page after the restore', 'ms', s.get('lastpage'))] : []),
    ]),
    note: 'The gap is the longest silence a client sending a request every 2 ms on one TCP connection saw.',
  };
  return {
    tables: [before, downtime],
    plots: [
      {
        id: 'bytes',
        title: `Bytes before the restore, ${mib} MiB process`,
        kind: 'bar',
        log: true,
        xLabel: 'strategy',
        yLabel: 'KiB',
        x: strategies,
        series: [
          { name: 'ferry (median)', values: strategies.map((st) => s.median(`before/${st}`) / 1024) },
          {
            name: 'published (post-copy)',
            values: strategies.map((st) => (st === 'postcopy' ? (116 * 1000) / 1024 : Number.NaN)),
          },
        ],
      },
      {
        id: 'downtime',
        title: `Client-seen downtime, ${mib} MiB process`,
        kind: 'bar',
        xLabel: 'strategy',
        yLabel: 'ms',
        x: strategies,
        series: [
          { name: 'client gap', values: strategies.map((st) => s.median(`gap/${st}`)) },
          { name: 'freeze', values: strategies.map((st) => s.median(`freeze/${st}`)) },
        ],
      },
    ],
  };
}

export const talkSuite: EvalSuite = {
  name: 'talk',
  work: 'Talk: CRIU and LXC migration, pre-copy against post-copy',
  measure,
};
