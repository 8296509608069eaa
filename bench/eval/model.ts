// The result model every evaluation suite fills in: tables of rows, each row ferry's runs of one measurement beside
// the figure a published work reported for it (when it reported one), with the ratio of the two.
import { median } from '../common.ts';

/** A figure as a published work reported it, in its own unit. */
export interface Published {
  value: number;
  unit: string;
  /** Which work: the suite's name (thesis, talk, runc-blog, docker-paper, ucsd, vm). */
  work: string;
  /** What exactly was measured there, when it differs from the row's label. */
  note?: string;
}

export interface EvalRow {
  what: string;
  unit: string;
  /** One value per run that produced one (failed runs leave theirs out and count in `failed`). */
  samples: number[];
  median: number;
  min: number;
  max: number;
  failed: number;
  published?: Published;
  /** ferry's median over the published value, both in the row's unit: below 1 is less (faster, smaller). */
  ratio?: number;
}

export interface EvalTable {
  id: string;
  title: string;
  rows: EvalRow[];
  /** A sentence under the table: how it was measured, what a reader must know to read it. */
  note?: string;
}

/** A plot as data; svg.ts draws it into docs/evaluation/<suite>-<id>.svg. */
export interface PlotSpec {
  id: string;
  title: string;
  kind: 'line' | 'bar';
  xLabel: string;
  yLabel: string;
  /** Logarithmic y axis (figures spanning decades). */
  log?: boolean;
  /** Categories along x (memory sizes, workloads, ...), evenly spaced. */
  x: string[];
  /** One value per category; NaN where the series has no point there. */
  series: { name: string; values: number[] }[];
}

export interface Machine {
  hostname: string;
  kernel: string;
  cores: number;
  cpu: string;
  memoryBytes: number;
  criu: string;
  runc: string;
  /** 1, 5 and 15 minute load averages when the suite started and when it ended. */
  loadStart: number[];
  loadEnd?: number[];
}

export interface EvalResult {
  suite: string;
  /** The work's title as docs/evaluation.md names it. */
  work: string;
  date: string;
  command: string;
  runs: number;
  quick: boolean;
  machine: Machine;
  tables: EvalTable[];
  /** Paths of the written SVGs, relative to docs/ (none for a --quick run, which leaves docs/ alone). */
  plots: string[];
  notes: string[];
  durationMs: number;
}

/** What a suite's measuring code hands back; the runner adds the machine, command and files. */
export interface SuiteOutput {
  tables: EvalTable[];
  plots: PlotSpec[];
  notes?: string[];
}

/** Multiplier of each unit to its dimension's base (seconds, bytes, plain numbers). */
const UNITS: Record<string, { dim: string; scale: number }> = {
  us: { dim: 't', scale: 1e-6 },
  ms: { dim: 't', scale: 1e-3 },
  s: { dim: 't', scale: 1 },
  B: { dim: 'b', scale: 1 },
  KB: { dim: 'b', scale: 1e3 },
  KiB: { dim: 'b', scale: 1024 },
  MB: { dim: 'b', scale: 1e6 },
  MiB: { dim: 'b', scale: 2 ** 20 },
  GiB: { dim: 'b', scale: 2 ** 30 },
  '×': { dim: 'x', scale: 1 },
  '%': { dim: 'x', scale: 0.01 },
  count: { dim: 'n', scale: 1 },
};

/** `value` in `from` expressed in `to`; NaN when the two units measure different things. */
export function convert(value: number, from: string, to: string): number {
  const a = UNITS[from];
  const b = UNITS[to];
  if (from === to) return value;
  if (!a || !b || a.dim !== b.dim) return Number.NaN;
  return (value * a.scale) / b.scale;
}

/**
 * One row from the runs' values (`undefined` or NaN: a run that failed to produce it). The ratio compares
 * like with like: the published value is converted into the row's unit first.
 */
export function row(
  what: string,
  unit: string,
  values: (number | undefined)[],
  published?: Published,
): EvalRow {
  const samples = values.filter((v): v is number => v !== undefined && Number.isFinite(v));
  const r: EvalRow = {
    what,
    unit,
    samples,
    median: median(samples),
    min: samples.length ? Math.min(...samples) : Number.NaN,
    max: samples.length ? Math.max(...samples) : Number.NaN,
    failed: values.length - samples.length,
  };
  if (published) {
    r.published = published;
    const ratio = r.median / convert(published.value, published.unit, unit);
    if (Number.isFinite(ratio)) r.ratio = ratio;
  }
  return r;
}

/** Values collected per key across runs, in the order the keys were first seen (the tables' row order). */
export class Samples {
  private readonly map = new Map<string, (number | undefined)[]>();

  add(key: string, value: number | undefined): void {
    const list = this.map.get(key);
    if (list) list.push(value);
    else this.map.set(key, [value]);
  }

  get(key: string): (number | undefined)[] {
    return this.map.get(key) ?? [];
  }

  median(key: string): number {
    return median(this.get(key).filter((v): v is number => v !== undefined && Number.isFinite(v)));
  }

  has(key: string): boolean {
    return this.map.has(key);
  }
}
