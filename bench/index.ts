// `ferry bench SUITE`: the benchmark suites. Long-running; never part of `make test`.
import { networkBench } from './network-gap.ts';
import { strategyBench } from './strategies.ts';

/** Repetitions of every measurement unless `--runs` says otherwise. */
export const DEFAULT_RUNS = 5;

export const SUITES: Record<
  string,
  (o: { ferryArgv: string[]; json?: boolean; runs?: number }) => Promise<unknown>
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
};
