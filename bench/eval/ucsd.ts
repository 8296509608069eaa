// The system that rebalances containers across virtual machines with a greedy policy. Its table: checkpoint and
// restore times of stress-ng workloads (CPU, I/O, memory, mixed); its experiment: containers started on one host
// spread to a target load, each moved by checkpoint, delete and restore elsewhere. ferry does the same moves by
// live migration (`ferry rebalance`); the delete-then-restore approach is measured by hand beside it, through
// ferry's archives, on the same testbed.
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { MigrationRecord, PlanResult } from '../../src/api/types.ts';
import { sleep } from '../common.ts';
import { type Lab, labUp, migrate, removeContainer } from './lab.ts';
import { type EvalTable, row, Samples, type SuiteOutput } from './model.ts';
import type { EvalContext, EvalSuite } from './run.ts';

const WORK = 'ucsd';
const STRESS = ['/usr/bin/stress-ng', '--timeout', '0', '--quiet'];

interface Workload {
  id: string;
  label: string;
  args: string[];
  /** How long it runs before the checkpoint (the memory stressor fills its 256 MB first). */
  settleMs: number;
  checkpoint?: number;
  restore?: number;
}

const WORKLOADS = (quick: boolean): Workload[] => [
  {
    id: 'cpu',
    label: 'CPU (--cpu 2)',
    args: ['--cpu', '2'],
    settleMs: quick ? 500 : 2000,
    checkpoint: 0.48,
    restore: 1.11,
  },
  { id: 'io', label: 'I/O (--io 3)', args: ['--io', '3'], settleMs: 2000 },
  {
    id: 'vm',
    label: `memory (--vm 1 --vm-bytes ${quick ? 16 : 256}M --vm-keep)`,
    args: ['--vm', '1', '--vm-bytes', quick ? '16M' : '256M', '--vm-keep'],
    settleMs: quick ? 2000 : 6000,
    ...(quick ? {} : { checkpoint: 2.75, restore: 4.06 }),
  },
  {
    id: 'mixed',
    label: `mixed (--cpu 1 --io 1 --vm 1 --vm-bytes ${quick ? 16 : 128}M --vm-keep)`,
    args: ['--cpu', '1', '--io', '1', '--vm', '1', '--vm-bytes', quick ? '16M' : '128M', '--vm-keep'],
    settleMs: quick ? 2000 : 4000,
  },
];

/** A CPU burner asking for `load` % of one core. */
const burner = (load: number) => [...STRESS, '--cpu', '1', '--cpu-load', String(load)];

/**
 * The load the controller sees on `host` (its containers' CPU shares as the last heartbeat reported them).
 * Asked through the API, as the dry runs below: only the moves are the CLI's, as a user runs them.
 */
async function hostLoad(lab: Lab, host: string): Promise<number> {
  const sum = await lab.ctx.controller().cluster();
  return sum.hosts.find((h) => h.name === host)?.loadPercent ?? 0;
}

/**
 * The published approach by hand: checkpoint into an archive (the container stops), delete it, restore the
 * archive on another host. Its downtime runs from the checkpoint's start to the end of the restore.
 */
async function deleteThenRestore(
  lab: Lab,
  name: string,
  from: string,
  to: string,
  dir: string,
): Promise<{ checkpointMs: number; restoreMs: number; downtimeMs: number }> {
  const file = join(dir, `${name}.tar`);
  const t0 = performance.now();
  const ck = await lab.ctx.client(from).checkpoint(name, { leaveRunning: false, compress: 'none' });
  try {
    await pipeline(ck.body, createWriteStream(file, { mode: 0o600 }));
    await lab.ctx.client(from).finishCheckpoint(ck.id, true);
  } catch (err) {
    await lab.ctx
      .client(from)
      .abortCheckpoint(ck.id)
      .catch(() => {});
    throw err;
  }
  const t1 = performance.now();
  await lab.ctx.client(from).remove(name);
  const t2 = performance.now();
  const staged = await lab.ctx.client(to).stageArchive(createReadStream(file));
  await lab.ctx.client(to).restoreStaged(staged.id);
  const t3 = performance.now();
  await rm(file, { force: true });
  return { checkpointMs: t1 - t0, restoreMs: t3 - t2, downtimeMs: t3 - t0 };
}

/** The rebalancing experiment's testbed: three hosts and a controller that heartbeats fast and never moves by itself. */
const rebalanceLab = (c: EvalContext) =>
  labUp(
    'evreb',
    {
      hosts: ['a', 'b', 'c'],
      controller: { heartbeatMs: 500, heartbeatTimeoutMs: 5000, rebalanceIntervalMs: 0, cooldownMs: 0 },
    },
    c.ferryArgv,
    c.log,
    c.quick,
  );

/** `shared`: the testbed to use (a --quick run brings up one for both experiments); none: its own. */
async function stressTable(c: EvalContext, s: Samples, dir: string, shared?: Lab): Promise<Workload[]> {
  const workloads = c.quick ? WORKLOADS(true).filter((w) => w.id === 'cpu') : WORKLOADS(false);
  const lab = shared ?? (await labUp('evucsd', { hosts: ['a', 'b'] }, c.ferryArgv, c.log));
  try {
    for (let run = 0; run < c.runs; run++) {
      for (const w of workloads) {
        const name = `u${run}${w.id}`;
        let host = 'a';
        try {
          await lab.ctx
            .client('a')
            .create({ name, command: [...STRESS, ...w.args], net: 'own', ip: lab.nextIp() });
          await sleep(w.settleMs);
          const r = await deleteThenRestore(lab, name, 'a', 'b', dir);
          host = 'b';
          s.add(`ck/${w.id}`, r.checkpointMs);
          s.add(`rs/${w.id}`, r.restoreMs);
          c.log(
            `run ${run + 1}/${c.runs} ${w.id}: checkpoint ${r.checkpointMs.toFixed(0)} ms, restore ${r.restoreMs.toFixed(0)} ms`,
          );
        } catch (err) {
          s.add(`ck/${w.id}`, undefined);
          s.add(`rs/${w.id}`, undefined);
          c.log(`run ${run + 1}/${c.runs} ${w.id} FAILED: ${(err as Error).message}`);
        } finally {
          await removeContainer(lab, host, name);
          await removeContainer(lab, 'a', name);
        }
      }
    }
  } finally {
    if (!shared) await lab.down();
  }
  return workloads;
}

/** Asks for a dry run until the controller's view of the burners' load plans moves. */
async function waitForPlan(lab: Lab, target: number, timeoutMs: number): Promise<PlanResult> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const { plan } = await lab.ctx.controller().rebalance({ dryRun: true, targetPercent: target });
    if (plan.moves.length > 0 || performance.now() > deadline) return plan;
    // --quick: asked again after a heartbeat or so
    await sleep(lab.quick ? 500 : 2000);
  }
}

async function rebalance(
  c: EvalContext,
  s: Samples,
  dir: string,
  shared?: Lab,
): Promise<{ burners: number; target: number }> {
  const burners = c.quick ? 3 : 4;
  const load = 40;
  // the target: half the load the controller sees on the crowded host once the burners run. What they get of
  // this machine's cores depends on everything else running on it, so a fixed target may never be crossed
  let target = 50;
  const lab = shared ?? (await rebalanceLab(c));
  try {
    for (let run = 0; run < c.runs; run++) {
      // the same burners for both approaches: after ferry's moves they go back (by migration, which keeps their
      // load in the controller's view) and the published approach moves them again
      const names = Array.from({ length: burners }, (_, i) => `r${run}b${i}`);
      const where = new Map<string, string>();
      try {
        for (const n of names) {
          await lab.ctx.client('a').create({ name: n, command: burner(load), net: 'own', ip: lab.nextIp() });
          where.set(n, 'a');
        }
        // the agents report a container's CPU share over each heartbeat (500 ms): a few of them with --quick
        await sleep(c.quick ? 1500 : 20_000);
        target = Math.max(5, Math.floor((await hostLoad(lab, 'a')) / 2));
        c.log(`run ${run + 1}/${c.runs}: target ${target} %`);
        for (const how of ['ferry', 'delete-restore'] as const) {
          try {
            const waited = performance.now();
            let plan = await waitForPlan(lab, target, 180_000);
            if (plan.moves.length === 0) throw new Error('the controller planned no moves');
            c.log(
              `run ${run + 1}/${c.runs} ${how}: the controller planned ${plan.moves.length} moves after ${((performance.now() - waited) / 1000).toFixed(0)} s`,
            );
            let t0 = performance.now();
            let moves = 0;
            let downtime = 0;
            if (how === 'ferry') {
              let out: { migrations: MigrationRecord[] } = { migrations: [] };
              for (let attempt = 0; attempt < 5; attempt++) {
                t0 = performance.now();
                const r = await lab.ferry(['rebalance', '--target', String(target), '--json']);
                out = JSON.parse(r.stdout) as { migrations: MigrationRecord[] };
                // the load is a moving average that can dip under the target between the dry run and this one
                if (out.migrations.length > 0) break;
                plan = await waitForPlan(lab, target, 60_000);
              }
              for (const m of out.migrations) {
                if (m.status !== 'done') throw new Error(`${m.container}: ${m.status} ${m.error ?? ''}`);
                where.set(m.container, m.to);
                downtime += m.freezeMs ?? 0;
              }
              moves = out.migrations.length;
              if (moves === 0) throw new Error('ferry rebalance moved nothing');
            } else {
              // the plan the same controller made, each move done the published way
              for (const m of plan.moves) {
                const r = await deleteThenRestore(lab, m.container, m.from, m.to, dir);
                where.set(m.container, m.to);
                downtime += r.downtimeMs;
                moves++;
              }
            }
            const ms = performance.now() - t0;
            s.add(`time/${how}`, ms);
            s.add(`moves/${how}`, moves);
            s.add(`down/${how}`, downtime);
            s.add(`per/${how}`, moves ? downtime / moves : undefined);
            c.log(
              `run ${run + 1}/${c.runs} ${how}: ${moves} moves in ${ms.toFixed(0)} ms, downtime ${downtime.toFixed(0)} ms`,
            );
          } catch (err) {
            for (const k of ['time', 'moves', 'down', 'per']) s.add(`${k}/${how}`, undefined);
            c.log(`run ${run + 1}/${c.runs} ${how} FAILED: ${(err as Error).message}`);
          }
          if (how === 'ferry') {
            for (const [n, h] of where) {
              if (h === 'a') continue;
              const rep = await migrate(lab, n, h, 'a', { strategy: 'cold' });
              if (rep.ok) where.set(n, 'a');
            }
          }
        }
      } finally {
        for (const n of names) {
          await removeContainer(lab, where.get(n) ?? 'a', n);
          for (const h of ['a', 'b', 'c']) await removeContainer(lab, h, n);
        }
      }
    }
  } finally {
    if (!shared) await lab.down();
  }
  return { burners, target };
}

async function measure(c: EvalContext): Promise<SuiteOutput> {
  const dir = `/dev/shm/ferry-bench-eval-ucsd-${process.pid}`;
  await mkdir(dir, { recursive: true });
  const s = new Samples();
  let shared: Lab | undefined;
  try {
    // --quick: one testbed for both experiments (the rebalancing one's: its hosts a and b serve the stress table)
    if (c.quick) shared = await rebalanceLab(c);
    const workloads = await stressTable(c, s, dir, shared);
    const { burners, target } = await rebalance(c, s, dir, shared);
    const pub = (v: number | undefined) =>
      v === undefined ? undefined : { value: v, unit: 's', work: WORK };
    const stress: EvalTable = {
      id: 'stress',
      title: 'Checkpoint and restore of stress-ng workloads (archive on tmpfs, restored on another host)',
      rows: workloads.flatMap((w) => [
        row(`${w.label}: checkpoint`, 'ms', s.get(`ck/${w.id}`), pub(w.checkpoint)),
        row(`${w.label}: restore`, 'ms', s.get(`rs/${w.id}`), pub(w.restore)),
      ]),
      note:
        'Checkpoint: from the request until the archive is written and the container stopped; restore: from ' +
        'streaming the archive to the other host until the container runs there.',
    };
    const hows = ['ferry', 'delete-restore'] as const;
    const label = {
      ferry: 'ferry rebalance (live migration)',
      'delete-restore': 'checkpoint, delete, restore',
    };
    const reb: EvalTable = {
      id: 'rebalance',
      title: `${burners} CPU burners started on one of three hosts, spread to half the load they put on it (last run: ${target} %)`,
      rows: hows.flatMap((h) => [
        row(`${label[h]}: time to balance`, 'ms', s.get(`time/${h}`)),
        row(`${label[h]}: moves`, 'count', s.get(`moves/${h}`)),
        row(`${label[h]}: total downtime`, 'ms', s.get(`down/${h}`)),
        row(`${label[h]}: downtime per move`, 'ms', s.get(`per/${h}`)),
      ]),
      note:
        "Both approaches carry out the plan of the same greedy controller on the same testbed. ferry's downtime is " +
        "the freeze of each live migration; the published approach's is each container's time from checkpoint " +
        'to running again.',
    };
    return {
      tables: [stress, reb],
      plots: [
        {
          id: 'stress',
          title: 'Checkpoint and restore per workload',
          kind: 'bar',
          xLabel: 'workload',
          yLabel: 'ms',
          x: workloads.map((w) => w.id),
          series: [
            { name: 'ferry checkpoint', values: workloads.map((w) => s.median(`ck/${w.id}`)) },
            { name: 'ferry restore', values: workloads.map((w) => s.median(`rs/${w.id}`)) },
            {
              name: 'published checkpoint',
              values: workloads.map((w) => (w.checkpoint ? w.checkpoint * 1000 : Number.NaN)),
            },
            {
              name: 'published restore',
              values: workloads.map((w) => (w.restore ? w.restore * 1000 : Number.NaN)),
            },
          ],
        },
        {
          id: 'rebalance',
          title: 'Rebalancing: total downtime',
          kind: 'bar',
          log: true,
          xLabel: 'approach',
          yLabel: 'ms',
          x: [...hows],
          series: [
            { name: 'total downtime', values: hows.map((h) => s.median(`down/${h}`)) },
            { name: 'time to balance', values: hows.map((h) => s.median(`time/${h}`)) },
          ],
        },
      ],
      notes: c.quick
        ? [`--quick: the CPU workload only, ${burners} burners, one testbed for both experiments.`]
        : [],
    };
  } finally {
    await shared?.down();
    await rm(dir, { recursive: true, force: true });
  }
}

export const ucsdSuite: EvalSuite = {
  name: 'ucsd',
  work: 'Rebalancing containers across virtual machines',
  measure,
};
