// Shared benchmark plumbing: a testbed, probe clients, medians and ratios. Benchmarks print; they never assert.
import { type BackgroundProbe, startProbeProcess } from '../src/probe/launch.ts';

export { waitForServer as waitForPort } from '../src/probe/launch.ts';

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
): BackgroundProbe {
  // a long cold freeze is a long gap, not a lost reply: wait a minute before calling a request lost
  return startProbeProcess(ferryArgv, clusterFile, kind, target, { intervalMs: 2, replyTimeoutMs: 60_000 });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
