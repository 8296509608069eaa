// Benchmark: client-seen gap and freeze per strategy and memory size, side by side in one run, with
// the floor (an empty container moved by hand) and the hand recipe for ratios. Writes docs/benchmarks.md + SVG.
import { readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { ClusterClients } from '../src/api/cluster-clients.ts';
import type { MigrationOptions } from '../src/api/types.ts';
import { table } from '../src/core/table.ts';
import { ProcessRunner } from '../src/runtime/exec.ts';
import { testbedDown, testbedUp } from '../src/testbed/testbed.ts';
import { ballastServerArgs, writerWithServerArgs } from '../src/workloads/servers.ts';
import { agentlessSection } from './agentless.ts';
import { archiveSection } from './archive.ts';
import { fmt, median, probe, sleep, waitForPort } from './common.ts';
import { drawPlot } from './eval/svg.ts';
import { handCleanup, handMigrate, handRemove, handStart } from './hand-recipe.ts';
import { switchoverSection } from './switchover-report.ts';

export interface StrategyBenchOptions {
  runs: number;
  sizesMiB: number[];
  /** Sizes run only with some strategies (a 4 GiB container: auto and post-copy). */
  only?: Record<number, string[]>;
  strategies: string[];
  rate: string;
  ferryArgv: string[];
  json?: boolean;
  out?: string;
}

interface Sample {
  gapMs: number;
  freezeMs: number;
  totalMs: number;
  lastPageMs?: number;
  /** Post-copy: the window's rate, lazy bytes over restore-to-last-page (bytes/s). */
  windowRate?: number;
  switchoverBytes?: number;
  lastRoundBytes?: number;
  changedPages?: number;
  ok: boolean;
}

/**
 * How long the probe's connection runs before a migration starts, for every row alike (floor included): the
 * clients operators care about hold long-lived connections, whose retransmission timers have settled.
 */
const PROBE_WARMUP_MS = 3000;

/** The write-heavy container of the P5 figure. */
const WRITER_MIB = 256;

function rateBytesPerSec(rate: string): number {
  const m = /^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$/.exec(rate);
  if (!m) return Number.NaN;
  const mult = { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9 }[m[2] as 'bit'];
  return (Number(m[1]) * mult) / 8;
}

export async function strategyBench(o: StrategyBenchOptions): Promise<unknown> {
  const runner = new ProcessRunner();
  const deps = { runner, ferryArgv: o.ferryArgv };
  const log = (m: string) => process.stderr.write(`${m}\n`);
  await testbedDown('bstr', deps).catch(() => {});
  const tb = await testbedUp({ name: 'bstr', hosts: ['a', 'b'], rate: o.rate }, deps);
  const ctx = await ClusterClients.load(tb.clusterFile);
  const samples = new Map<string, Sample[]>(); // key: `${strategy}/${mib}`
  const add = (k: string, s: Sample) => samples.set(k, [...(samples.get(k) ?? []), s]);
  let n = 0;
  try {
    for (let run = 0; run < o.runs; run++) {
      // the floor: an empty container, by hand, same run
      {
        const ip = `${tb.subnet}.${200 + (n % 40)}`;
        const hc = await handStart(runner, tb, 'a', `fl${run}`, ip, ballastServerArgs(0));
        await waitForPort(ip, 7000);
        const p = probe(o.ferryArgv, tb.clusterFile, 'tcp', `${ip}:7000`);
        await sleep(PROBE_WARMUP_MS);
        const t0 = performance.now();
        await handMigrate(runner, tb, hc, 'b');
        const total = performance.now() - t0;
        await sleep(1500);
        const r = await p.stop();
        add('floor/0', {
          gapMs: r.maxGapMs,
          freezeMs: Number.NaN,
          totalMs: total,
          ok: r.resets === 0 && r.errors === 0,
        });
        await handRemove(runner, tb, hc);
        n++;
      }
      // P5: content-delta pre-copy of a write-heavy container (the self-checking memory writer, 256 MiB)
      if (o.strategies.includes('precopy')) {
        const name = `w${run}`;
        const ip = `${tb.subnet}.${50 + (n % 40)}`;
        await ctx
          .client('a')
          .create({ name, command: writerWithServerArgs(WRITER_MIB, 7000), net: 'own', ip });
        await waitForPort(ip, 7000, 60_000);
        await sleep(2000);
        const rep = await ctx.client('a').migrate(name, { to: ctx.host('b'), strategy: 'precopy' });
        if (rep.precopy?.changedPages)
          add(`precopy-writer/${WRITER_MIB}`, {
            gapMs: Number.NaN,
            freezeMs: rep.freezeMs,
            totalMs: rep.totalMs,
            switchoverBytes: rep.precopy.switchoverBytes,
            changedPages: rep.precopy.changedPages,
            ok: rep.ok,
          });
        await ctx
          .client(rep.ok ? 'b' : 'a')
          .remove(name)
          .catch(() => {});
        log(
          `run ${run + 1}/${o.runs} precopy writer ${WRITER_MIB} MiB: switchover ${rep.precopy?.switchoverBytes} bytes for ${rep.precopy?.changedPages} changed pages`,
        );
        n++;
      }
      for (const mib of o.sizesMiB) {
        for (const strategy of o.strategies) {
          if (o.only?.[mib] && !o.only[mib].includes(strategy)) continue;
          const name = `s${run}${strategy.slice(0, 2)}${mib}`;
          const ip = `${tb.subnet}.${50 + (n % 40)}`;
          if (strategy === 'hand') {
            const hc = await handStart(runner, tb, 'a', name, ip, ballastServerArgs(mib));
            await waitForPort(ip, 7000, 60_000);
            const p = probe(o.ferryArgv, tb.clusterFile, 'tcp', `${ip}:7000`);
            await sleep(PROBE_WARMUP_MS);
            const t0 = performance.now();
            let ok = true;
            await handMigrate(runner, tb, hc, 'b').catch(() => {
              ok = false;
            });
            const total = performance.now() - t0;
            await sleep(Math.max(1500, 2 * total + 2000));
            const r = await p.stop();
            add(`hand/${mib}`, {
              gapMs: r.maxGapMs,
              freezeMs: Number.NaN,
              totalMs: total,
              ok: ok && r.resets === 0 && r.errors === 0,
            });
            await handRemove(runner, tb, hc);
          } else {
            const info = await ctx
              .client('a')
              .create({ name, command: ballastServerArgs(mib), net: 'own', ip });
            await waitForPort(info.ip!, 7000, 180_000);
            const p = probe(o.ferryArgv, tb.clusterFile, 'tcp', `${ip}:7000`);
            await sleep(PROBE_WARMUP_MS);
            const rep = await ctx
              .client('a')
              .migrate(name, { to: ctx.host('b'), strategy: strategy as MigrationOptions['strategy'] });
            // after a long freeze the client's TCP retransmits on a backed-off timer: give it time to come back
            await sleep(Math.max(1500, 2 * rep.freezeMs + 2000));
            const r = await p.stop();
            const s: Sample = {
              gapMs: r.maxGapMs,
              freezeMs: rep.freezeMs,
              totalMs: rep.totalMs,
              ok: rep.ok && r.resets === 0 && r.errors === 0,
            };
            if (rep.postcopy) s.lastPageMs = rep.postcopy.lastPageMs;
            if (rep.postcopy?.rate !== undefined) s.windowRate = rep.postcopy.rate;
            if (rep.precopy) {
              s.switchoverBytes = rep.precopy.switchoverBytes;
              s.lastRoundBytes = rep.precopy.roundBytes.at(-1) ?? 0;
              if (rep.precopy.changedPages !== undefined) s.changedPages = rep.precopy.changedPages;
            }
            add(`${strategy}/${mib}`, s);
            await ctx
              .client('b')
              .remove(name)
              .catch(() => {});
          }
          n++;
          const last = samples.get(`${strategy}/${mib}`)?.at(-1);
          log(
            `run ${run + 1}/${o.runs} ${strategy} ${mib} MiB: gap ${fmt(last?.gapMs ?? Number.NaN)} ms, freeze ${fmt(last?.freezeMs ?? Number.NaN)} ms${last?.ok ? '' : ' FAILED'}`,
          );
        }
      }
    }
  } finally {
    ctx.close();
    await handCleanup(tb);
    await testbedDown('bstr', deps);
  }
  const med = (k: string, f: (s: Sample) => number | undefined) =>
    median(
      (samples.get(k) ?? [])
        .filter((s) => s.ok)
        .map(f)
        .filter((x): x is number => x !== undefined && Number.isFinite(x)),
    );
  const floor = med('floor/0', (s) => s.gapMs);
  const rows = [
    [
      'strategy',
      'memory',
      'gap ms',
      'freeze ms',
      'total ms',
      'last page ms',
      'window MB/s',
      'gap / floor',
      'ok runs',
    ],
  ];
  for (const strategy of o.strategies) {
    for (const mib of o.sizesMiB) {
      const k = `${strategy}/${mib}`;
      const list = samples.get(k) ?? [];
      if (list.length === 0) continue;
      rows.push([
        strategy,
        `${mib} MiB`,
        fmt(med(k, (s) => s.gapMs)),
        fmt(med(k, (s) => s.freezeMs)),
        fmt(med(k, (s) => s.totalMs)),
        fmt(med(k, (s) => s.lastPageMs)),
        fmt(med(k, (s) => (s.windowRate === undefined ? undefined : s.windowRate / 1e6))),
        fmt(med(k, (s) => s.gapMs) / floor, 2),
        `${list.filter((s) => s.ok).length}/${list.length}`,
      ]);
    }
  }
  const smallest = Math.min(...o.sizesMiB);
  // the largest size each figure's strategy ran at
  const top = (strategy: string) =>
    Math.max(...o.sizesMiB.filter((m) => (samples.get(`${strategy}/${m}`) ?? []).length > 0));
  const largest = top('cold');
  const largestAuto = top('auto');
  const largestPost = top('postcopy');
  const linkRate = rateBytesPerSec(o.rate);
  const ratios = {
    P2_auto_gap_over_floor: med(`auto/${largestAuto}`, (s) => s.gapMs) / floor,
    P3_postcopy_gap_largest_over_smallest:
      med(`postcopy/${largestPost}`, (s) => s.gapMs) / med(`postcopy/${smallest}`, (s) => s.gapMs),
    P3_postcopy_gap_cold_largest_over_smallest:
      med(`postcopy/${largest}`, (s) => s.gapMs) / med(`postcopy/${smallest}`, (s) => s.gapMs),
    P4_cold_total_over_transfer_time:
      med(`cold/${largest}`, (s) => s.totalMs) / (((largest << 20) / linkRate) * 1000),
    P5_precopy_switchover_bytes: med(`precopy/${largest}`, (s) => s.switchoverBytes),
    P5_precopy_switchover_over_changed: med(`precopy-writer/${WRITER_MIB}`, (s) =>
      s.switchoverBytes !== undefined && s.changedPages
        ? s.switchoverBytes / (s.changedPages * 4096)
        : undefined,
    ),
    P5_idle_switchover_over_changed: med(`precopy/${largest}`, (s) =>
      s.switchoverBytes !== undefined && s.changedPages
        ? s.switchoverBytes / (s.changedPages * 4096)
        : undefined,
    ),
    cold_gap_over_hand: med(`cold/${largest}`, (s) => s.gapMs) / med(`hand/${largest}`, (s) => s.gapMs),
  };
  const text = [
    `client-seen gap per strategy (TCP probe every 2 ms, own network namespace, link ${o.rate}, medians of ${o.runs} interleaved runs)`,
    `floor (empty container by hand): ${fmt(floor)} ms`,
    table(rows),
    '',
    table([
      ['figure', 'value', 'goal'],
      [`P2 auto gap at ${largestAuto} MiB / floor`, fmt(ratios.P2_auto_gap_over_floor, 2), '<= 1.2'],
      [
        `P3 postcopy gap ${largestPost} MiB / ${smallest} MiB`,
        fmt(ratios.P3_postcopy_gap_largest_over_smallest, 2),
        '<= 1.2',
      ],
      [
        `P3 postcopy gap ${largest} MiB / ${smallest} MiB`,
        fmt(ratios.P3_postcopy_gap_cold_largest_over_smallest, 2),
        '<= 1.2',
      ],
      [
        `P4 cold total / (memory / link rate) at ${largest} MiB`,
        fmt(ratios.P4_cold_total_over_transfer_time, 2),
        '<= 1.3',
      ],
      [
        `P5 pre-copy bytes at switchover / (pages changed since the last round x 4 KiB), ${WRITER_MIB} MiB writer`,
        fmt(ratios.P5_precopy_switchover_over_changed, 2),
        '<= 1.5',
      ],
      [
        `P5 the same for the idle ${largest} MiB container (bytes at switchover: ${fmt(ratios.P5_precopy_switchover_bytes)})`,
        fmt(ratios.P5_idle_switchover_over_changed, 2),
        '<= 1.5',
      ],
      [`cold gap / hand recipe gap at ${largest} MiB`, fmt(ratios.cold_gap_over_hand, 2), ''],
    ]),
  ].join('\n');
  if (!o.json) process.stdout.write(`\n${text}\n`);
  if (o.out) await writeReport(o, text, samples);
  return { ratios, samples: Object.fromEntries(samples) };
}

async function writeReport(
  o: StrategyBenchOptions,
  text: string,
  samples: Map<string, Sample[]>,
): Promise<void> {
  const date = new Date().toISOString().slice(0, 10);
  const svg = plot(o, samples);
  await writeFile(`${o.out}/benchmarks-gap.svg`, svg);
  const md = [
    '# Benchmarks',
    '',
    `Machine: ${hostname()}, 2 cores, kernel ${(await import('node:os')).release()}, CRIU 4.2.1, runc 1.1.5. Date: ${date}.`,
    `Command: \`ferry bench strategies --runs ${o.runs}\` (also part of \`make bench\`). Every figure is measured in the`,
    'same run, interleaved; the gap is what the probe client saw on one TCP connection (how: docs/background.md).',
    '',
    '```',
    text,
    '```',
    '',
    '![client-seen gap vs memory per strategy](benchmarks-gap.svg)',
    '',
    'What the figures mean, what limits them and what was measured beside this run: [benchmarks-notes.md](benchmarks-notes.md).',
    '',
  ].join('\n');
  // the archive benchmark's section is its own: kept when this page is rewritten
  const old = await readFile(`${o.out}/benchmarks.md`, 'utf8').catch(() => '');
  // the sections other suites rewrite stay as they are
  const kept = [switchoverSection(old), archiveSection(old), agentlessSection(old)]
    .filter(Boolean)
    .join('\n');
  await writeFile(`${o.out}/benchmarks.md`, kept ? `${md}\n${kept}` : md);
}

function plot(o: StrategyBenchOptions, samples: Map<string, Sample[]>): string {
  // logarithmic: gaps range from a few hundred milliseconds to tens of seconds
  return drawPlot({
    id: 'gap',
    title: 'client-seen gap per strategy',
    kind: 'line',
    log: true,
    xLabel: 'container memory (MiB)',
    yLabel: 'client-seen gap (ms)',
    x: o.sizesMiB.map(String),
    series: o.strategies.map((s) => ({
      name: s,
      values: o.sizesMiB.map((m) =>
        median((samples.get(`${s}/${m}`) ?? []).filter((x) => x.ok).map((x) => x.gapMs)),
      ),
    })),
  });
}
