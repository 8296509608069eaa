// The heartbeat's delta encoding: between periodic full reports an agent sends only the containers whose load
// moved beyond the deltas (the controller merges them into its picture).
import type { ContainerStat } from './types.ts';

export interface DiffOptions {
  cpuDeltaPercent: number;
  memoryDeltaBytes: number;
}

/**
 * What to send: the containers whose CPU or memory moved beyond the deltas, or whose status or address changed,
 * since the last report, plus the names of those that disappeared.
 */
export function statDiff(
  last: Map<string, ContainerStat>,
  now: ContainerStat[],
  o: DiffOptions,
): { changed: ContainerStat[]; removed: string[] } {
  const changed: ContainerStat[] = [];
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
