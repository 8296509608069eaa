// Benchmark: the client-seen gap of ferry's migration vs the same migration by hand (hand-recipe.ts),
// for a tiny container and one holding 256 MiB, own network namespace, measured side by side and interleaved.

import { ClusterClients } from '../src/api/cluster-clients.ts';
import { table } from '../src/core/table.ts';
import { ProcessRunner } from '../src/runtime/exec.ts';
import { testbedDown, testbedUp } from '../src/testbed/testbed.ts';
import { LINE_COUNTER_PY, pythonArgs } from '../src/workloads/servers.ts';
import { fmt, median, probe, sleep, waitForPort } from './common.ts';
import { handCleanup, handMigrate, handRemove, handStart } from './hand-recipe.ts';

export interface NetworkBenchOptions {
  runs: number;
  sizesMiB: number[];
  ferryArgv: string[];
  json?: boolean;
}

function server(mib: number): string[] {
  const ballast = mib ? `import os\n_b = bytearray(os.urandom(${mib} << 20))\n` : '';
  return pythonArgs(`${ballast}${LINE_COUNTER_PY}`, 7000);
}

export async function networkBench(o: NetworkBenchOptions): Promise<unknown> {
  const runner = new ProcessRunner();
  const deps = { runner, ferryArgv: o.ferryArgv };
  const log = (m: string) => process.stderr.write(`${m}\n`);
  await testbedDown('bnet', deps).catch(() => {});
  const tb = await testbedUp({ name: 'bnet', hosts: ['a', 'b'] }, deps);
  const ctx = await ClusterClients.load(tb.clusterFile);
  const results: Record<
    string,
    { ferry: number[]; hand: number[]; ferryFreeze: number[]; failures: string[] }
  > = {};
  try {
    for (const mib of o.sizesMiB)
      results[String(mib)] = { ferry: [], hand: [], ferryFreeze: [], failures: [] };
    let n = 0;
    for (let run = 0; run < o.runs; run++) {
      for (const mib of o.sizesMiB) {
        const r = results[String(mib)]!;
        // interleaved: ferry, then by hand, same size, same machine state
        const name = `f${run}m${mib}`;
        const info = await ctx
          .client('a')
          .create({ name, command: server(mib), net: 'own', ip: `${tb.subnet}.${60 + (n % 30)}` });
        await waitForPort(info.ip!, 7000);
        let p = probe(o.ferryArgv, tb.clusterFile, 'tcp', `${info.ip}:7000`);
        await sleep(500);
        const rep = await ctx.client('a').migrate(name, { to: ctx.host('b'), strategy: 'cold' });
        await sleep(1500);
        let res = await p.stop();
        if (!rep.ok || res.resets || res.errors)
          r.failures.push(
            `ferry ${mib} MiB: ${rep.error?.message ?? `resets ${res.resets} errors ${res.errors}`}`,
          );
        else {
          r.ferry.push(res.maxGapMs);
          r.ferryFreeze.push(rep.freezeMs);
        }
        await ctx
          .client('b')
          .remove(name)
          .catch(() => {});
        const hip = `${tb.subnet}.${120 + (n % 30)}`;
        const hc = await handStart(runner, tb, 'a', `h${run}m${mib}`, hip, server(mib));
        await waitForPort(hip, 7000);
        p = probe(o.ferryArgv, tb.clusterFile, 'tcp', `${hip}:7000`);
        await sleep(500);
        let handErr = '';
        await handMigrate(runner, tb, hc, 'b').catch((e: Error) => {
          handErr = e.message;
        });
        await sleep(1500);
        res = await p.stop();
        if (handErr || res.resets || res.errors)
          r.failures.push(`hand ${mib} MiB: ${handErr || `resets ${res.resets} errors ${res.errors}`}`);
        else r.hand.push(res.maxGapMs);
        await handRemove(runner, tb, hc);
        n++;
        log(
          `run ${run + 1}/${o.runs} ${mib} MiB: ferry ${fmt(r.ferry.at(-1) ?? Number.NaN)} ms, hand ${fmt(r.hand.at(-1) ?? Number.NaN)} ms`,
        );
      }
    }
  } finally {
    ctx.close();
    await handCleanup(tb);
    await testbedDown('bnet', deps);
  }
  const rows = [
    [
      'memory',
      'ferry gap ms (median)',
      'hand gap ms (median)',
      'ratio ferry/hand',
      'ferry freeze ms',
      'runs',
      'failures',
    ],
  ];
  const out: Record<string, unknown> = {};
  for (const [mib, r] of Object.entries(results)) {
    const f = median(r.ferry);
    const h = median(r.hand);
    rows.push([
      `${mib} MiB`,
      fmt(f),
      fmt(h),
      fmt(f / h, 2),
      fmt(median(r.ferryFreeze)),
      String(o.runs),
      String(r.failures.length),
    ]);
    out[mib] = {
      ferryGapMs: r.ferry,
      handGapMs: r.hand,
      ferryFreezeMs: r.ferryFreeze,
      ratio: f / h,
      failures: r.failures,
    };
  }
  if (!o.json) {
    process.stdout.write(
      `\nclient-seen gap, own network namespace, TCP probe every 2 ms (goal: ratio <= 1.0)\n${table(rows)}\n`,
    );
    for (const r of Object.values(results))
      for (const f of r.failures) process.stdout.write(`failure: ${f}\n`);
  }
  return out;
}
