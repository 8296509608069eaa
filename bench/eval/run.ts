// Runs one evaluation suite: the machine before and after, the suite's measurements, then the text on stdout (or
// the result as JSON for the CLI to print), the SVGs into docs/evaluation/ and the suite's section of
// docs/evaluation.md. A --quick run (one run, small sizes: the smoke test) leaves docs/ alone.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeSection } from './doc.ts';
import { commandLine, endLoad, machineFacts } from './machine.ts';
import type { EvalResult, SuiteOutput } from './model.ts';
import { renderMarkdown, renderText } from './render.ts';
import { drawPlot } from './svg.ts';

export interface EvalContext {
  /** Runs of every measurement (1 with --quick). */
  runs: number;
  /** Small sizes and one run: the suite shows it works, not what it measures. */
  quick: boolean;
  ferryArgv: string[];
  /** Progress for the operator, on stderr (stdout carries the tables or the JSON). */
  log: (message: string) => void;
}

export interface EvalSuite {
  /** The suite's name on the command line and in its markers. */
  name: string;
  /** The work it reproduces, as a heading. */
  work: string;
  measure(ctx: EvalContext): Promise<SuiteOutput>;
}

export interface EvalRunOptions {
  ferryArgv: string[];
  runs: number;
  quick?: boolean;
  json?: boolean;
  /** The docs/ folder to write into; none: write nothing. */
  docs?: string;
}

export async function runEval(suite: EvalSuite, o: EvalRunOptions): Promise<EvalResult> {
  const quick = o.quick ?? false;
  const runs = quick ? 1 : o.runs;
  const machine = await machineFacts();
  const started = performance.now();
  const log = (m: string) => process.stderr.write(`[${suite.name}] ${m}\n`);
  const out = await suite.measure({ runs, quick, ferryArgv: o.ferryArgv, log });
  endLoad(machine);
  const result: EvalResult = {
    suite: suite.name,
    work: suite.work,
    date: `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`,
    command: commandLine(),
    runs,
    quick,
    machine,
    tables: out.tables,
    plots: [],
    notes: out.notes ?? [],
    durationMs: Math.round(performance.now() - started),
  };
  if (o.docs && !quick) {
    await mkdir(join(o.docs, 'evaluation'), { recursive: true });
    const titles = new Map<string, string>();
    for (const p of out.plots) {
      const rel = `evaluation/${suite.name}-${p.id}.svg`;
      await writeFile(join(o.docs, rel), drawPlot(p));
      result.plots.push(rel);
      titles.set(rel, p.title);
    }
    await writeSection(join(o.docs, 'evaluation.md'), suite.name, renderMarkdown(result, titles));
  }
  if (!o.json) process.stdout.write(renderText(result));
  return result;
}
