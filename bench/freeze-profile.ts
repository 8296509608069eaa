// The freeze, step by step: where each millisecond between the pause and the commit goes. Moves a container between
// two testbed hosts whose agents trace every child process and every engine step (FERRY_TRACE, core/trace.ts), and
// prints, per size and strategy, the medians of the freeze, of `auto`'s predicted freeze and of each traced step
// inside the freeze. With `--base DIR`, a second testbed runs the ferry checked out in DIR, interleaved run by run
// with this one (the same machine state for both): an A/B of a change to the freeze.
//
//   node bench/freeze-profile.ts [--runs 5] [--sizes 0,64] [--strategies cold,auto] [--base DIR] [--testbed bfrz] [--json]
//
// `--testbed` names the testbed (1-5 characters; the base's gets a `b` appended): two profiles on one machine at
// once need two names, as a profile starts by tearing down whatever testbed has its name.

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ClusterClients } from '../src/api/cluster-clients.ts';
import type { MigrationOptions, MigrationReport } from '../src/api/types.ts';
import { table } from '../src/core/table.ts';
import { ProcessRunner } from '../src/runtime/exec.ts';
import { type TestbedState, testbedDown, testbedUp } from '../src/testbed/testbed.ts';
import { ballastServerArgs } from '../src/workloads/servers.ts';
import { fmt, median, waitForPort } from './common.ts';

interface TraceLine {
  t: number;
  ms: number;
  step?: string;
  argv?: string[];
}

interface Sample {
  freezeMs: number;
  predictedMs?: number;
  strategy: string;
  /** Each step's duration inside the freeze, summed when it ran more than once. */
  steps: Map<string, number>;
}

const OUTSIDE = '(outside CRIU: the freeze less dump and restore)';

/** Options runc takes before its command, each with one value. */
const RUNC_GLOBAL = new Set(['--root', '--log', '--log-format', '--criu']);

/** A child process as a step: the program and its command, without the paths. */
function label(l: TraceLine, host: string): string {
  if (l.step) return l.step.startsWith(`${host}: `) ? l.step : `${host}: ${l.step}`;
  const argv = l.argv ?? [];
  const prog = basename(argv[0] ?? '?');
  const words: string[] = [];
  for (let i = 1; i < argv.length && words.length < 2; i++) {
    const a = argv[i]!;
    if (RUNC_GLOBAL.has(a)) i++;
    else if (!a.startsWith('/') && !a.startsWith('-')) words.push(a);
  }
  // (a trace keeps the first six words: runc's checkpoint and restore lose theirs behind its global options)
  if (prog === 'runc' && words.length === 0) words.push(host === 'source' ? 'checkpoint' : 'restore');
  return `${host}: ${[prog, ...words.slice(0, prog === 'runc' ? 1 : 2)].join(' ')}`;
}

async function readTrace(file: string): Promise<TraceLine[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as TraceLine);
}

interface Bed {
  label: string;
  tb: TestbedState;
  clients: ClusterClients;
  traces: { a: string; b: string };
}

async function bedUp(name: string, label: string, ferryArgv: string[], dir: string): Promise<Bed> {
  const runner = new ProcessRunner();
  const traces = { a: join(dir, `${name}-a.trace`), b: join(dir, `${name}-b.trace`) };
  await testbedDown(name, { runner, ferryArgv }).catch(() => {});
  const tb = await testbedUp(
    {
      name,
      hosts: ['a', 'b'],
      agentEnv: { a: { FERRY_TRACE: traces.a }, b: { FERRY_TRACE: traces.b } },
    },
    { runner, ferryArgv },
  );
  return { label, tb, clients: await ClusterClients.load(tb.clusterFile), traces };
}

/** One migration: its report and the steps that ran inside its freeze, on either host. */
async function once(bed: Bed, name: string, ip: string, mib: number, strategy: string): Promise<Sample> {
  const a = bed.clients.client('a');
  await a.create({ name, command: ballastServerArgs(mib), net: 'own', ip });
  let rep: MigrationReport | undefined;
  try {
    await waitForPort(ip, 7000, 180_000);
    const from = Date.now();
    rep = await a.migrate(name, {
      to: bed.clients.host('b'),
      strategy: strategy as MigrationOptions['strategy'],
    });
    if (!rep.ok) throw new Error(`${rep.error?.code}: ${rep.error?.message}`);
    const lines = {
      a: (await readTrace(bed.traces.a)).filter((l) => l.t >= from),
      b: (await readTrace(bed.traces.b)).filter((l) => l.t >= from),
    };
    // the freeze starts with the lock and the pause, side by side
    const pause = lines.a.find(
      (l) => l.step === 'source: locked and paused' || (l.argv?.includes('pause') && l.argv.includes(name)),
    );
    const start = pause?.t ?? Number.NaN;
    const end = start + rep.freezeMs;
    const steps = new Map<string, number>();
    for (const host of ['a', 'b'] as const) {
      for (const l of lines[host]) {
        if (l.t < start || l.t > end || l.step?.startsWith('phase')) continue;
        const k = label(l, host === 'a' ? 'source' : 'destination');
        steps.set(k, (steps.get(k) ?? 0) + l.ms);
      }
      for (const l of lines[host]) {
        if (!l.step?.startsWith('phase') || l.t < start - 1 || l.t > end) continue;
        steps.set(`source: ${l.step}`, (steps.get(`source: ${l.step}`) ?? 0) + l.ms);
      }
    }
    // what is not CRIU's own work: the freeze less the dump (until its images are written; post-copy's dump then
    // serves pages) and the restore
    // (a staged restore's runc started at the hold and waited at its gate: the restore inside the freeze is the
    // agent's own step, from the request to the restored container)
    const restoreStep = rep.restoreStaged ? 'destination: incoming: restore' : 'destination: runc restore';
    const criu = (steps.get('source: dump') ?? 0) + (steps.get(restoreStep) ?? 0);
    steps.set(OUTSIDE, rep.freezeMs - criu);
    // CRIU's own figures (its stats images): what is left of runc's processes around them is runc's own work, what
    // driving CRIU's RPC directly could save
    const d = rep.criu.dump;
    const r = rep.criu.restore;
    if (d?.frozenTimeUs !== undefined) {
      const criuMs = ((d.freezingTimeUs ?? 0) + d.frozenTimeUs) / 1000;
      steps.set('(CRIU: freezing and frozen time, its stats)', criuMs);
      // (a staged dump's runc started before the freeze: what is left of it is the dump step's)
      if (steps.has('source: dump'))
        steps.set("(the dump less CRIU's own time)", steps.get('source: dump')! - criuMs);
    }
    if (r?.restoreTimeUs !== undefined) {
      const criuMs = ((r.forkingTimeUs ?? 0) + r.restoreTimeUs) / 1000;
      steps.set('(CRIU: forking and restore time, its stats)', criuMs);
      if (steps.has(restoreStep))
        steps.set("(the restore less CRIU's own time)", steps.get(restoreStep)! - criuMs);
    }
    return {
      freezeMs: rep.freezeMs,
      strategy: rep.strategy,
      steps,
      ...(rep.predictedFreezeMs !== undefined ? { predictedMs: rep.predictedFreezeMs } : {}),
    };
  } finally {
    await bed.clients
      .client(rep?.ok ? 'b' : 'a')
      .remove(name)
      .catch(() => {});
  }
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string', default: '5' },
      sizes: { type: 'string', default: '0,64' },
      strategies: { type: 'string', default: 'cold,auto' },
      base: { type: 'string' },
      testbed: { type: 'string', default: 'bfrz' },
      json: { type: 'boolean', default: false },
    },
  });
  const runs = Number(values.runs);
  const sizes = values.sizes.split(',').map(Number);
  const strategies = values.strategies.split(',');
  const here = resolve(import.meta.dirname, '..');
  const ferry = (root: string) => [process.execPath, '--no-warnings', join(root, 'src/cli/main.ts')];
  const dir = await mkdtemp(join(tmpdir(), 'ferry-freeze-'));
  const beds: Bed[] = [];
  const log = (m: string) => process.stderr.write(`${m}\n`);
  const samples = new Map<string, Sample[]>();
  try {
    if (!/^[a-z0-9]{1,5}$/.test(values.testbed)) throw new Error('--testbed: 1-5 characters [a-z0-9]');
    beds.push(await bedUp(values.testbed, 'this', ferry(here), dir));
    if (values.base) beds.push(await bedUp(`${values.testbed}b`, 'base', ferry(resolve(values.base)), dir));
    let n = 0;
    for (let run = 0; run < runs; run++) {
      for (const mib of sizes) {
        for (const strategy of strategies) {
          // interleaved: the base and this tree back to back, alternating which goes first
          const order = run % 2 ? [...beds].reverse() : beds;
          for (const bed of order) {
            const key = `${bed.label}/${strategy}/${mib}`;
            const name = `f${run}${strategy.slice(0, 2)}${mib}`;
            // .150 to .249: clear of the hosts (.10 up), the client (.100) and the bridge (.254)
            const ip = `${bed.tb.subnet}.${150 + (n++ % 100)}`;
            try {
              const s = await once(bed, name, ip, mib, strategy);
              samples.set(key, [...(samples.get(key) ?? []), s]);
              const ratio = s.predictedMs ? ` = ${fmt((100 * s.predictedMs) / s.freezeMs)} %` : '';
              log(
                `${key} run ${run}: ${s.strategy} freeze ${s.freezeMs} ms, outside CRIU ${s.steps.get(OUTSIDE)} ms, predicted ${s.predictedMs ?? '-'}${ratio}`,
              );
            } catch (err) {
              log(`${key} run ${run} failed: ${(err as Error).message}`);
            }
          }
        }
      }
    }
  } finally {
    for (const bed of beds) await testbedDown(bed.tb.name, { ferryArgv: ferry(here) }).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
  const out: Record<string, unknown> = {};
  for (const [key, ss] of samples) {
    const freezes = ss.map((s) => s.freezeMs);
    const predicted = ss.flatMap((s) => (s.predictedMs === undefined ? [] : [s.predictedMs]));
    const keys = [...new Set(ss.flatMap((s) => [...s.steps.keys()]))].sort();
    // the slowest run's own steps beside the medians: what a step in the gap (one run far above the rest) was made of
    const slowest = ss.reduce((a, b) => (b.freezeMs > a.freezeMs ? b : a));
    const steps = keys.map((k) => {
      const xs = ss.map((s) => s.steps.get(k) ?? 0);
      return {
        step: k,
        median: median(xs),
        min: Math.min(...xs),
        max: Math.max(...xs),
        slowest: slowest.steps.get(k) ?? 0,
      };
    });
    out[key] = { strategy: ss[0]?.strategy, freezes, predicted, steps };
    if (values.json) continue;
    process.stdout.write(
      `\n${key} (${ss[0]?.strategy}): freeze median ${fmt(median(freezes))} ms [${Math.min(...freezes)}-${Math.max(...freezes)}], ` +
        `predicted ${predicted.length ? fmt(median(predicted)) : '-'} ms, ${ss.length} runs\n`,
    );
    process.stdout.write(
      `${table([
        ['step (inside the freeze)', 'median ms', 'min', 'max', `slowest run (${slowest.freezeMs})`],
        ...steps.map((s) => [s.step, fmt(s.median), fmt(s.min), fmt(s.max), fmt(s.slowest)]),
      ])}\n`,
    );
  }
  if (values.json) process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

if (process.argv[1] && resolve(process.argv[1]) === import.meta.filename) await main(process.argv.slice(2));
