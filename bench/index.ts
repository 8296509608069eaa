// `ferry bench SUITE`: the benchmark suites. Long-running; `make test` runs only the evaluation suites' `--quick` smoke.
import { agentlessBench } from './agentless.ts';
import { archiveBench } from './archive.ts';
import { runEval } from './eval/run.ts';
import { EVAL_SUITES } from './eval/suites.ts';
import { networkBench } from './network-gap.ts';
import { soakBench } from './soak.ts';
import { strategyBench } from './strategies.ts';
import { switchoverBench } from './switchover.ts';
import { zdtmBench } from './zdtm.ts';

/**
 * The published evaluations reproduced side by side (docs/evaluation.md), in the page's order: `ferry bench
 * evaluation` runs them all. Each is a suite of its own too.
 */
export const EVALUATION = EVAL_SUITES.map((s) => s.name);

/** What `ferry bench all` runs; the zdtm conformance suite is run on its own (`ferry bench zdtm`). */
export const IN_ALL = ['strategies', 'network', 'switchover', 'soak', ...EVALUATION];

/** Names that stand for several suites on the command line. */
export const GROUPS: Record<string, string[]> = { all: IN_ALL, evaluation: EVALUATION };

/** Repetitions of every measurement unless `--runs` says otherwise. */
export const DEFAULT_RUNS = 5;

/** archive: MiB of values in Redis unless `--size` says otherwise (`--quick`: 16). */
export const DEFAULT_ARCHIVE_MIB = 1024;

export const SUITES: Record<
  string,
  (o: {
    ferryArgv: string[];
    json?: boolean;
    runs?: number;
    strategies?: string[];
    tests?: string[];
    /** switchover: one run of the empty container only (a smoke test). */
    quick?: boolean;
    /** switchover: a 4 GiB container too. */
    big?: boolean;
    /** archive: MiB of values in Redis. */
    sizeMiB?: number;
  }) => Promise<unknown>
> = {
  strategies: (o) =>
    strategyBench({
      runs: o.runs ?? DEFAULT_RUNS,
      sizesMiB: [64, 256, 1024, 4096],
      only: { 4096: ['auto', 'postcopy'] },
      strategies: ['auto', 'cold', 'precopy', 'postcopy', 'hand'],
      rate: '1gbit',
      ferryArgv: o.ferryArgv,
      out: new URL('../docs', import.meta.url).pathname,
      ...(o.json ? { json: true } : {}),
    }),
  network: (o) =>
    networkBench({
      runs: o.runs ?? DEFAULT_RUNS,
      sizesMiB: [0, 256],
      ferryArgv: o.ferryArgv,
      ...(o.json ? { json: true } : {}),
    }),
  // --quick: one run of an empty container, ferry cold and the recipe, nothing written (the smoke make test runs)
  switchover: (o) =>
    switchoverBench({
      runs: o.quick ? 1 : (o.runs ?? DEFAULT_RUNS),
      sizesMiB: o.quick ? [0] : [0, 64, 1024, ...(o.big ? [4096] : [])],
      strategies: o.quick ? ['cold'] : ['cold', 'auto'],
      podmanMiB: o.quick ? [] : [64, 1024],
      shapedMiB: o.quick ? [] : [64, 1024, ...(o.big ? [4096] : [])],
      ...(o.quick ? {} : { nginx: 'auto', docs: new URL('../docs', import.meta.url).pathname }),
      command: `ferry bench switchover${o.quick ? ' --quick' : ''}${o.runs ? ` --runs ${o.runs}` : ''}${o.big ? ' --big' : ''}`,
      ferryArgv: o.ferryArgv,
      ...(o.json ? { json: true } : {}),
    }),
  soak: (o) =>
    soakBench({
      ferryArgv: o.ferryArgv,
      docs: new URL('../docs', import.meta.url).pathname,
      ...(o.json ? { json: true } : {}),
    }),
  // Podman 5 beside ferry (scripts/setup.sh podman); not in `all`, which needs nothing beyond ferry's own setup
  archive: (o) =>
    archiveBench({
      runs: o.quick ? 1 : (o.runs ?? DEFAULT_RUNS),
      sizeMiB: o.sizeMiB ?? (o.quick ? 16 : DEFAULT_ARCHIVE_MIB),
      ferryArgv: o.ferryArgv,
      // a smoke run leaves the page alone
      ...(o.quick ? {} : { docs: new URL('../docs', import.meta.url).pathname }),
      ...(o.json ? { json: true } : {}),
    }),
  // agentless (ssh://) against agents, same size, same link, same run; not in `all`
  agentless: (o) =>
    agentlessBench({
      runs: o.quick ? 1 : (o.runs ?? DEFAULT_RUNS),
      sizeMiB: o.sizeMiB ?? (o.quick ? 64 : DEFAULT_ARCHIVE_MIB),
      rate: '1gbit',
      ferryArgv: o.ferryArgv,
      ...(o.quick ? {} : { docs: new URL('../docs', import.meta.url).pathname }),
      ...(o.json ? { json: true } : {}),
    }),
  zdtm: (o) =>
    zdtmBench({
      ferryArgv: o.ferryArgv,
      ...(o.strategies ? { strategies: o.strategies } : {}),
      ...(o.tests ? { tests: o.tests } : {}),
      ...(o.json ? { json: true } : {}),
    }),
  ...Object.fromEntries(
    EVAL_SUITES.map((suite) => [
      suite.name,
      (o: { ferryArgv: string[]; json?: boolean; runs?: number; quick?: boolean }) =>
        runEval(suite, {
          ferryArgv: o.ferryArgv,
          runs: o.runs ?? DEFAULT_RUNS,
          docs: new URL('../docs', import.meta.url).pathname,
          ...(o.quick ? { quick: true } : {}),
          ...(o.json ? { json: true } : {}),
        }),
    ]),
  ),
};
