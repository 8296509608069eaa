// Per-container load as agents report it: CPU % from cgroup usage deltas, memory in use and limit, and the
// "statistic diffs" between periodic full reports (only what changed beyond a delta).
import type { ContainerStat } from './store.ts';
export interface ContainerSample {
  name: string;
  status: string;
  cpuNs: number;
  memoryBytes: number;
  memoryLimit?: number;
  ip?: string;
}

/** What an agent reports per container: the store's ContainerStat. */
export type ContainerStatReport = ContainerStat;

/** CPU % of one core between two samples (cgroup CPU time over wall time). */
export function cpuPercent(prevNs: number | undefined, nowNs: number, wallMs: number): number {
  if (prevNs === undefined || wallMs <= 0 || nowNs < prevNs) return 0;
  return Math.round(((nowNs - prevNs) / (wallMs * 1e6)) * 1000) / 10;
}

export interface DiffOptions {
  cpuDeltaPercent: number;
  memoryDeltaBytes: number;
}

/**
 * What to send: everything on a full report; otherwise the containers whose CPU or memory moved beyond the
 * deltas, or whose status changed, plus the names of those that disappeared.
 */
export function statDiff(
  last: Map<string, ContainerStatReport>,
  now: ContainerStatReport[],
  o: DiffOptions,
): { changed: ContainerStatReport[]; removed: string[] } {
  const changed: ContainerStatReport[] = [];
  const seen = new Set<string>();
  for (const s of now) {
    seen.add(s.name);
    const p = last.get(s.name);
    if (
      !p ||
      p.status !== s.status ||
      p.ip !== s.ip ||
      Math.abs(p.cpuPercent - s.cpuPercent) > o.cpuDeltaPercent ||
      Math.abs(p.memoryBytes - s.memoryBytes) > o.memoryDeltaBytes
    ) {
      changed.push(s);
    }
  }
  const removed = [...last.keys()].filter((n) => !seen.has(n));
  return { changed, removed };
}
