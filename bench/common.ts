// Shared benchmark plumbing: a testbed, probe clients, medians and ratios. Benchmarks print; they never assert.
import type { ProbeSummary } from '../src/probe/cli.ts';
import { startBackground } from '../src/runtime/exec.ts';

export { waitForPort } from '../src/network/port.ts';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return Number.NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '-';
}

/** A probe client in the testbed's client namespace (through the CLI, as a user runs it). */
export function probe(
  ferryArgv: string[],
  clusterFile: string,
  kind: string,
  target: string,
): { stop(): Promise<ProbeSummary> } {
  const p = startBackground([
    ...ferryArgv,
    '--cluster',
    clusterFile,
    'probe',
    kind,
    target,
    '--interval',
    '2',
    // a long cold freeze is a long gap, not a lost reply: wait a minute before calling a request lost
    '--reply-timeout',
    '60000',
    '--json',
  ]);
  return {
    async stop() {
      const out = await p.stop('SIGINT');
      try {
        return JSON.parse(out.stdout.trim().split('\n').pop() ?? '') as ProbeSummary;
      } catch {
        throw new Error(`probe printed no result: ${out.stderr}`);
      }
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
