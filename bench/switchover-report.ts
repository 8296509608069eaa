// The switchover benchmark's table, goals, plot and page section. Every goal is a ratio against the floor: the best
// recipe by hand moving an EMPTY container, in the same run (its median gap) — the least a switchover costs a
// client on this machine. The goals come from the product's issue; they are printed, met or not, never asserted.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { table } from '../src/core/table.ts';
import { fmt, median } from './common.ts';
import { drawPlot } from './eval/svg.ts';

export interface SwitchoverBenchOptions {
  runs: number;
  sizesMiB: number[];
  /** ferry's strategies measured beside the recipe. */
  strategies: string[];
  /** Sizes Podman is measured at too (Podman 5: `scripts/setup.sh podman`; without it, no Podman rows). */
  podmanMiB: number[];
  /** Sizes whose post-copy window is measured again on links shaped to 1 Gbit/s. */
  shapedMiB: number[];
  /** ferry's strategy moving nginx under load beside the recipe (none: the nginx scenario is left out). */
  nginx?: string;
  ferryArgv: string[];
  /** The folder of benchmarks.md and the plot this run rewrites (none: a smoke run, nothing written). */
  docs?: string;
  /** The command line, as the page names it. */
  command: string;
  json?: boolean;
}

export interface Sample {
  gapMs: number;
  freezeMs: number;
  ok: boolean;
  /** Post-copy: from the end of the restore to the last page (ferry's report). */
  windowMs?: number;
  /** Post-copy: the memory the window moved (the report's `postcopy.bytes`; else the container's memory). */
  memoryBytes?: number;
  /** ferry: the freeze its plan predicted (the report's `predictedFreezeMs`). */
  predictedMs?: number;
  /** Why a run failed. */
  note?: string;
}

export interface NginxSample {
  /** The 99.9th percentile of the latencies of the requests due while the migration ran. */
  p999Ms: number;
  maxMs: number;
  freezeMs: number;
  /** Socket errors and closed connections the load generator saw. */
  errors: number;
  requests: number;
  /** The migration succeeded (a failed one measures no switchover). */
  ok: boolean;
  note?: string;
}

export const GOALS = {
  /** A ferry gap at any size, against the floor's empty gap. */
  gapPerFloor: 1.0,
  /** The slowest run against the median (10 runs). */
  slowestPerMedian: 1.2,
  gapPerFreeze: 1.1,
  /** Post-copy's window against memory ÷ link rate, on a link shaped to 1 Gbit/s. */
  windowPerWire: 1.3,
  /** Post-copy's window, unshaped: memory ÷ window at least this (MB/s). */
  windowMBps: 500,
  /** ferry's gap against Podman's, by size (MiB). */
  perPodman: { 64: 0.2, 1024: 0.03 } as Record<number, number>,
  /** nginx under load: p99.9 latency across a migration against the floor's gap. */
  nginxP999PerFloor: 1.2,
  /** `auto`'s predicted freeze against the measured one: at most this far off, either way. */
  predictedOff: 0.25,
};

/**
 * The 99.9th percentile (nearest rank) of the latencies of the requests due from `from` to `to` (epoch ms): the
 * requests across a migration. `samples`: [due epoch ms, latency ms]. NaN when none was due then.
 */
export function p999During(samples: [number, number][], from: number, to: number): number {
  const during = samples
    .filter(([due]) => due >= from && due <= to)
    .map(([, ms]) => ms)
    .sort((x, y) => x - y);
  return during.length ? during[Math.ceil(0.999 * during.length) - 1]! : Number.NaN;
}

export const SECTION_BEGIN = '<!-- ferry bench switchover: begin (rewritten by the benchmark) -->';
export const SECTION_END = '<!-- ferry bench switchover: end -->';
export const PLOT_FILE = 'benchmarks-switchover.svg';

const size = (mib: number) => (mib === 0 ? 'empty' : mib >= 1024 ? `${mib / 1024} GiB` : `${mib} MiB`);
const yes = (b: boolean) => (b ? 'yes' : 'no');

interface Results {
  samples: Map<string, Sample[]>;
  nginx: Map<string, NginxSample[]>;
  podman: boolean;
  machine: string;
}

export async function switchoverReport(o: SwitchoverBenchOptions, r: Results): Promise<unknown> {
  const ok = (k: string) => (r.samples.get(k) ?? []).filter((s) => s.ok);
  const med = (k: string, f: (s: Sample) => number | undefined) =>
    median(
      ok(k)
        .map(f)
        .filter((v): v is number => v !== undefined && Number.isFinite(v)),
    );
  const floor = med('hand/0', (s) => s.gapMs);
  // the recipe's own freeze: its gap adds what its client waited for its retransmission timer (the recipe drops
  // what arrives during the freeze), which a held switchover does not; so the stricter reading of the floor
  const floorFreeze = med('hand/0', (s) => s.freezeMs);
  const whos = [...o.strategies, 'hand', ...(r.podman ? ['podman'] : [])];
  const rows = [
    [
      'who',
      'memory',
      'gap ms',
      'freeze ms',
      'gap / freeze',
      'gap / floor',
      'slowest / median',
      'post-copy window ms',
      'window MB/s',
      'ok runs',
    ],
  ];
  const goals = [['figure', 'value', 'goal', 'met']];
  const met: { figure: string; value: number; limit: number; met: boolean | null }[] = [];
  const goal = (figure: string, v: number, limit: number, atLeast = false) => {
    const yesNo = Number.isFinite(v) ? (atLeast ? v >= limit : v <= limit) : null;
    met.push({ figure, value: v, limit, met: yesNo });
    goals.push([
      figure,
      // (a figure under 0.1 with three digits: 0.032 against a goal of 0.03 must not print as 0.03)
      fmt(v, Number.isInteger(v) ? 0 : Math.abs(v) < 0.1 ? 3 : 2),
      `${atLeast ? '>=' : '<='} ${limit}`,
      yesNo === null ? 'not measured' : yes(yesNo),
    ]);
  };
  const out: Record<string, unknown> = { floorGapMs: floor, floorFreezeMs: floorFreeze, goals: met };
  for (const mib of o.sizesMiB) {
    for (const who of whos) {
      const k = `${who}/${mib}`;
      if (!r.samples.has(k)) continue;
      const gaps = ok(k).map((s) => s.gapMs);
      const gap = median(gaps);
      const freeze = med(k, (s) => s.freezeMs);
      // per run, then the median: a ratio of medians would pair one run's gap with another's freeze
      const perFreeze = med(k, (s) => s.gapMs / s.freezeMs);
      const slowest = gaps.length ? Math.max(...gaps) / gap : Number.NaN;
      const window = med(k, (s) => s.windowMs);
      const mbps = med(k, (s) =>
        s.windowMs && s.memoryBytes ? s.memoryBytes / 1e6 / (s.windowMs / 1000) : undefined,
      );
      rows.push([
        who,
        size(mib),
        fmt(gap),
        fmt(freeze),
        fmt(perFreeze, 2),
        fmt(gap / floor, 2),
        fmt(slowest, 2),
        fmt(window),
        fmt(mbps),
        `${ok(k).length}/${r.samples.get(k)?.length ?? 0}`,
      ]);
      out[k] = {
        samples: r.samples.get(k),
        gapMs: gap,
        freezeMs: freeze,
        gapPerFreeze: perFreeze,
        slowest,
        window,
      };
      if (who === 'hand' || who === 'podman') continue;
      const f = `ferry ${who} ${size(mib)}`;
      goal(`${f}: gap / floor's empty gap`, gap / floor, GOALS.gapPerFloor);
      goal(`${f}: gap / floor's empty freeze (stricter)`, gap / floorFreeze, GOALS.gapPerFloor);
      goal(`${f}: slowest / median of ${gaps.length} runs`, slowest, GOALS.slowestPerMedian);
      goal(`${f}: gap / freeze`, perFreeze, GOALS.gapPerFreeze);
      // an empty container leaves a few MB lazy: its window is a few round trips, not a rate worth a goal
      if (Number.isFinite(window) && mib > 0)
        goal(`${f}: post-copy MB/s, unshaped`, mbps, GOALS.windowMBps, true);
      // per run: how far the plan's prediction was from the freeze it got
      const off = med(k, (s) => (s.predictedMs ? Math.abs(s.predictedMs / s.freezeMs - 1) : undefined));
      if (who === 'auto' && Number.isFinite(off))
        goal(`${f}: |predicted ÷ measured freeze − 1|`, off, GOALS.predictedOff);
      const podmanLimit = GOALS.perPodman[mib];
      if (r.podman && podmanLimit !== undefined)
        goal(`${f}: gap / Podman's gap`, gap / med(`podman/${mib}`, (s) => s.gapMs), podmanLimit);
    }
  }
  const shaped = [['memory', 'post-copy window ms', 'memory ÷ 1 Gbit/s ms', 'window / wire', 'ok runs']];
  for (const mib of o.shapedMiB) {
    const k = `shaped/${mib}`;
    const window = med(k, (s) => s.windowMs);
    const wire = med(k, (s) => ((s.memoryBytes ?? mib * 2 ** 20) / 125e6) * 1000);
    const perWire = med(
      k,
      (s) => (s.windowMs ?? Number.NaN) / (((s.memoryBytes ?? mib * 2 ** 20) / 125e6) * 1000),
    );
    shaped.push([
      size(mib),
      fmt(window),
      fmt(wire),
      fmt(perWire, 2),
      `${ok(k).length}/${r.samples.get(k)?.length ?? 0}`,
    ]);
    goal(`ferry postcopy ${size(mib)} at 1 Gbit/s: window / (memory ÷ rate)`, perWire, GOALS.windowPerWire);
    out[k] = { samples: r.samples.get(k), windowMs: window, perWire };
  }
  const ng = [
    [
      'who',
      'p99.9 across the move ms',
      'max ms',
      'freeze ms',
      'p99.9 / floor',
      'socket errors',
      'requests',
      'ok runs',
    ],
  ];
  for (const [who, all] of r.nginx) {
    const list = all.filter((s) => s.ok);
    const p999 = median(list.map((s) => s.p999Ms).filter(Number.isFinite));
    const errors = list.reduce((n, s) => n + s.errors, 0);
    ng.push([
      who,
      fmt(p999),
      fmt(median(list.map((s) => s.maxMs).filter(Number.isFinite))),
      fmt(median(list.map((s) => s.freezeMs).filter(Number.isFinite))),
      fmt(p999 / floor, 2),
      String(errors),
      String(list.reduce((n, s) => n + s.requests, 0)),
      `${list.length}/${all.length}`,
    ]);
    out[`nginx/${who}`] = { samples: all, p999Ms: p999, errors };
    if (who === 'hand') continue;
    goal(`nginx ferry ${who}: socket errors`, errors, 0);
    goal(`nginx ferry ${who}: p99.9 / floor's empty gap`, p999 / floor, GOALS.nginxP999PerFloor);
  }
  const failures = [...r.samples, ...r.nginx].flatMap(([k, list]) =>
    (list as { note?: string; ok?: boolean; errors?: number }[])
      .filter((s) => s.note && (!s.ok || s.errors))
      .map((s) => `failure: ${k}: ${s.note}`),
  );
  const text = [
    ...failures,
    ...(failures.length ? [''] : []),
    `switchover as the client sees it (TCP probe every 2 ms, own network namespace, unshaped link, medians of ${o.runs} interleaved runs after one of each not counted; floor: the recipe's empty gap, ${fmt(floor)} ms, its freeze ${fmt(floorFreeze)} ms)`,
    table(rows),
    ...(o.shapedMiB.length
      ? ['', `post-copy on links shaped to 1 Gbit/s (medians of ${o.runs} runs)`, table(shaped)]
      : []),
    ...(r.nginx.size
      ? [
          '',
          `nginx under load (8 keep-alive connections, a request every 10 ms on each, latency from when it was due; medians of ${o.runs} runs)`,
          table(ng),
        ]
      : []),
    '',
    table(goals),
  ].join('\n');
  if (o.docs) await writeDocs(o, r, text, floor);
  if (o.json) return { ...out, machine: r.machine };
  process.stdout.write(`\n${text}\n\n${r.machine}\n`);
  return out;
}

function plot(o: SwitchoverBenchOptions, r: Results, floor: number): string {
  const gap = (who: string, mib: number) =>
    median((r.samples.get(`${who}/${mib}`) ?? []).filter((s) => s.ok).map((s) => s.gapMs));
  const series = [...o.strategies, 'hand', ...(r.podman ? ['podman'] : [])].map((who) => ({
    name: who === 'hand' ? 'floor (recipe by hand)' : who === 'podman' ? 'Podman' : `ferry ${who}`,
    values: o.sizesMiB.map((m) => gap(who, m)),
  }));
  series.push({ name: "goal (floor's empty gap)", values: o.sizesMiB.map(() => floor * GOALS.gapPerFloor) });
  return drawPlot({
    id: 'switchover',
    title: "client's gap against memory size",
    kind: 'line',
    log: true,
    xLabel: 'container memory',
    yLabel: "client's gap (ms)",
    x: o.sizesMiB.map(size),
    series,
  });
}

async function writeDocs(o: SwitchoverBenchOptions, r: Results, text: string, floor: number): Promise<void> {
  const docs = o.docs!;
  await writeFile(join(docs, PLOT_FILE), plot(o, r, floor));
  const body = [
    SECTION_BEGIN,
    "## Switchover: the client's gap against the floor",
    '',
    `\`${o.command}\`, ${new Date().toISOString().slice(0, 10)}. Machine: ${r.machine}. The machine has 2 cores and is`,
    'shared with other work running at the same time: every time here is slower than on an idle machine, by as much',
    'as the machine was busy; the ratios compare runs made side by side, interleaved.',
    '',
    'The floor is the best recipe by hand (`bench/hand-recipe.ts` `handSwitchover`): the destination pre-staged',
    '(bundle, namespace with the same IP and MAC, neighbours, locked), `runc pause`, CRIU writing its images straight',
    "into the destination's directory, the source's carrier cut, the destination attached, restored, unlocked. Every",
    "goal compares against the floor's gap for an EMPTY container; the recipe drops what reaches the container",
    "during its freeze, so its gap holds its client's retransmission wait, and each ferry row is also compared with",
    'the recipe\'s empty FREEZE ("stricter"). Podman runs the same server with',
    '`podman container checkpoint --tcp-established --export` to tmpfs, `podman rm`, `podman container restore',
    '--tcp-established --import`, on one host (its best case: no archive carried anywhere). The post-copy window',
    "runs from the end of the restore to the last page (the migration report's `postcopy.lastPageMs`); MB/s is the",
    "memory it moved (`postcopy.bytes`) over it. nginx runs from Debian's package in a ferry container; the load generator",
    '(`bench/http-load.ts`) counts each request from when it was due, so a stall counts for every request it held up.',
    '',
    '```',
    text,
    '```',
    '',
    `![client's gap against memory size](${PLOT_FILE})`,
    SECTION_END,
    '',
  ].join('\n');
  const file = join(docs, 'benchmarks.md');
  const old = await readFile(file, 'utf8').catch(() => '');
  await writeFile(file, replaceSwitchoverSection(old, body));
}

/** `doc` with its switchover section replaced by `body` (or appended); the rest of the page is left alone. */
export function replaceSwitchoverSection(doc: string, body: string): string {
  const start = doc.indexOf(SECTION_BEGIN);
  const end = doc.indexOf(SECTION_END);
  if (start === -1 || end === -1) return doc.trim() ? `${doc.trimEnd()}\n\n${body}` : body;
  return `${doc.slice(0, start)}${body}${doc.slice(end + SECTION_END.length).replace(/^\n/, '')}`;
}

/** The switchover section of `doc` (kept when another suite rewrites the page), if it has one. */
export function switchoverSection(doc: string): string | undefined {
  const start = doc.indexOf(SECTION_BEGIN);
  const end = doc.indexOf(SECTION_END);
  return start === -1 || end === -1 ? undefined : `${doc.slice(start, end + SECTION_END.length)}\n`;
}
