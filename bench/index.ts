// `ferry bench SUITE`: the benchmark suites. Long-running; never part of `make test`.
import { networkBench } from './network-gap.ts';

export const SUITES: Record<
  string,
  (o: { ferryArgv: string[]; json?: boolean; runs?: number }) => Promise<unknown>
> = {
  network: (o) =>
    networkBench({
      runs: o.runs ?? 5,
      sizesMiB: [0, 256],
      ferryArgv: o.ferryArgv,
      ...(o.json ? { json: true } : {}),
    }),
};
