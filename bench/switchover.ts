// Benchmark: the switchover as a client sees it. For each size, ferry (cold: the same work as the recipe; and
// auto, what a user gets) against the best recipe by hand (hand-recipe.ts handSwitchover: destination pre-staged,
// images written straight into its directory), side by side, interleaved, medians: the client's gap, the freeze,
// and gap ÷ freeze, which is 1 when the client pays for the freeze and nothing more (decision 11).

import { ClusterClients } from '../src/api/cluster-clients.ts';
import type { MigrationOptions } from '../src/api/types.ts';
import { table } from '../src/core/table.ts';
import { ProcessRunner } from '../src/runtime/exec.ts';
import { testbedDown, testbedUp } from '../src/testbed/testbed.ts';
import { LINE_COUNTER_PY, pythonArgs } from '../src/workloads/servers.ts';
import { fmt, median, probe, probeConnected, sleep, waitForPort } from './common.ts';
import { handCleanup, handRemove, handStart, handSwitchover } from './hand-recipe.ts';

export interface SwitchoverBenchOptions {
  runs: number;
  sizesMiB: number[];
  /** ferry's strategies measured beside the recipe. */
  strategies: string[];
  ferryArgv: string[];
  json?: boolean;
}

/** The goals this benchmark checks: a client pays for the freeze, and no more than by hand. */
export const GOALS = { gapPerFreeze: 1.2, gapPerHandGap: 1.0 };

/**
 * A request is lost only past the freeze's ceiling (the engine's default, 120 s): a held request is answered
 * late, however long the freeze (a loaded machine has shown 70 s for a cold 1 GiB move).
 */
const REPLY_TIMEOUT_MS = 180_000;

/** Long-lived connections (their retransmission timers settled), as in the strategies benchmark. */
const PROBE_WARMUP_MS = 3000;

interface Sample {
  gapMs: number;
  freezeMs: number;
  ok: boolean;
  /** Why a run failed. */
  note?: string;
}

function server(mib: number): string[] {
  // random memory (no zero pages to skip), filled in 16 MiB steps
  const ballast = mib
    ? `import os\n_b = bytearray(${mib} << 20)\nfor _i in range(0, ${mib} << 20, 1 << 24): _b[_i:_i + (1 << 24)] = os.urandom(1 << 24)\n`
    : '';
  return pythonArgs(`${ballast}${LINE_COUNTER_PY}`, 7000);
}

export async function switchoverBench(o: SwitchoverBenchOptions): Promise<unknown> {
  const runner = new ProcessRunner();
  const deps = { runner, ferryArgv: o.ferryArgv };
  const log = (m: string) => process.stderr.write(`${m}\n`);
  await testbedDown('bswi', deps).catch(() => {});
  const tb = await testbedUp({ name: 'bswi', hosts: ['a', 'b'] }, deps);
  const ctx = await ClusterClients.load(tb.clusterFile);
  const samples = new Map<string, Sample[]>(); // key: `${who}/${mib}`
  const add = (k: string, s: Sample) => samples.set(k, [...(samples.get(k) ?? []), s]);
  let n = 0;
  try {
    for (let run = 0; run < o.runs; run++) {
      for (const mib of o.sizesMiB) {
        // interleaved: each of ferry's strategies, then the recipe, same size, same machine state
        for (const who of [...o.strategies, 'hand']) {
          const name = `w${run}${who.slice(0, 2)}${mib}`;
          const ip = `${tb.subnet}.${50 + (n++ % 150)}`;
          let s: Sample = { gapMs: Number.NaN, freezeMs: Number.NaN, ok: false };
          try {
            if (who === 'hand') {
              const hc = await handStart(runner, tb, 'a', name, ip, server(mib));
              await waitForPort(ip, 7000, 180_000);
              const p = probe(o.ferryArgv, tb.clusterFile, 'tcp', `${ip}:7000`, REPLY_TIMEOUT_MS);
              await probeConnected(tb.client.netns, `${ip}:7000`);
              await sleep(PROBE_WARMUP_MS);
              let freezeMs = Number.NaN;
              let ok = true;
              await handSwitchover(runner, tb, hc, 'b').then(
                (r) => {
                  freezeMs = r.freezeMs;
                },
                (e: Error) => {
                  ok = false;
                  log(`hand ${mib} MiB failed: ${e.message}`);
                },
              );
              // a client in retransmission backoff comes back late: give it time
              await sleep(Math.max(1500, 2 * (Number.isFinite(freezeMs) ? freezeMs : 0) + 2000));
              const r = await p.stop();
              s = { gapMs: r.maxGapMs, freezeMs, ok: ok && r.resets === 0 && r.errors === 0 };
              if (!s.ok) s.note = ok ? `probe: ${r.resets} resets, ${r.errors} errors` : 'the recipe failed';
              await handRemove(runner, tb, hc);
            } else {
              await ctx.client('a').create({ name, command: server(mib), net: 'own', ip });
              await waitForPort(ip, 7000, 180_000);
              const p = probe(o.ferryArgv, tb.clusterFile, 'tcp', `${ip}:7000`, REPLY_TIMEOUT_MS);
              await probeConnected(tb.client.netns, `${ip}:7000`);
              await sleep(PROBE_WARMUP_MS);
              const rep = await ctx
                .client('a')
                .migrate(name, { to: ctx.host('b'), strategy: who as MigrationOptions['strategy'] });
              await sleep(Math.max(1500, 2 * rep.freezeMs + 2000));
              const r = await p.stop();
              s = {
                gapMs: r.maxGapMs,
                freezeMs: rep.freezeMs,
                ok: rep.ok && r.resets === 0 && r.errors === 0,
              };
              if (rep.error) s.note = `${rep.error.code}: ${rep.error.message}`;
              else if (!s.ok) s.note = `probe: ${r.resets} resets, ${r.errors} errors`;
              await ctx
                .client(rep.ok ? 'b' : 'a')
                .remove(name)
                .catch(() => {});
            }
          } catch (err) {
            // one failed measurement (a lost testbed agent, a probe that never connected) is a failed run, not
            // the end of the benchmark
            s.note = (err as Error).message;
          }
          add(`${who}/${mib}`, s);
          log(
            `run ${run + 1}/${o.runs} ${who} ${mib} MiB: gap ${fmt(s.gapMs)} ms, freeze ${fmt(s.freezeMs)} ms${s.ok ? '' : ` FAILED: ${s.note ?? ''}`}`,
          );
        }
      }
    }
  } finally {
    ctx.close();
    await handCleanup(tb);
    await testbedDown('bswi', deps);
  }
  return report(o, samples);
}

function report(o: SwitchoverBenchOptions, samples: Map<string, Sample[]>): unknown {
  const ok = (k: string) => (samples.get(k) ?? []).filter((s) => s.ok);
  const med = (k: string, f: (s: Sample) => number) => median(ok(k).map(f).filter(Number.isFinite));
  const rows = [['who', 'memory', 'gap ms', 'freeze ms', 'gap / freeze', 'gap / hand gap', 'ok runs']];
  const goals = [['figure', 'value', 'goal', 'met']];
  const out: Record<string, unknown> = {};
  for (const mib of o.sizesMiB) {
    const handGap = med(`hand/${mib}`, (s) => s.gapMs);
    for (const who of [...o.strategies, 'hand']) {
      const k = `${who}/${mib}`;
      const gap = med(k, (s) => s.gapMs);
      const freeze = med(k, (s) => s.freezeMs);
      // per run, then the median: a ratio of medians would pair one run's gap with another's freeze
      const perFreeze = med(k, (s) => s.gapMs / s.freezeMs);
      const perHand = gap / handGap;
      const size = mib ? `${mib} MiB` : 'empty';
      rows.push([
        who,
        size,
        fmt(gap),
        fmt(freeze),
        fmt(perFreeze, 2),
        who === 'hand' ? '-' : fmt(perHand, 2),
        `${ok(k).length}/${samples.get(k)?.length ?? 0}`,
      ]);
      out[k] = {
        samples: samples.get(k) ?? [],
        gapMs: gap,
        freezeMs: freeze,
        gapPerFreeze: perFreeze,
        gapPerHandGap: perHand,
      };
      if (who === 'hand') continue;
      goals.push([
        `ferry ${who} ${size}: gap / freeze`,
        fmt(perFreeze, 2),
        `<= ${GOALS.gapPerFreeze}`,
        met(perFreeze <= GOALS.gapPerFreeze),
      ]);
      goals.push([
        `ferry ${who} ${size}: gap / hand gap`,
        fmt(perHand, 2),
        `<= ${GOALS.gapPerHandGap}`,
        met(perHand <= GOALS.gapPerHandGap),
      ]);
    }
  }
  if (!o.json) {
    for (const [k, list] of samples)
      for (const s of list) if (!s.ok) process.stdout.write(`failure: ${k}: ${s.note ?? 'unknown'}\n`);
    process.stdout.write(
      `\nswitchover as the client sees it (TCP probe every 2 ms, own network namespace, unshaped link, medians of ${o.runs} interleaved runs)\n${table(rows)}\n\n${table(goals)}\n`,
    );
  }
  return out;
}

function met(yes: boolean): string {
  return yes ? 'yes' : 'no';
}
