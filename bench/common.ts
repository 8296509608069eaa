// Shared benchmark plumbing: a testbed, probe clients, medians and ratios. Benchmarks print; they never assert.
import { readFileSync } from 'node:fs';
import { type BackgroundProbe, startProbeProcess } from '../src/probe/launch.ts';
import { ProcessRunner } from '../src/runtime/exec.ts';

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

/** The machine's CPU time so far, in ticks: all of it, and what the hypervisor took for others (`steal`). */
export function cpuTicks(stat = readFileSync('/proc/stat', 'utf8')): { total: number; steal: number } {
  const f = (stat.split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is counted in user already)
  const total = f.slice(0, 8).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
  return { total, steal: f[7] ?? 0 };
}

/**
 * The share of the machine's CPU time a hypervisor gave to other guests between two readings, in per cent: on a
 * virtual machine whose host is busy every time measured is longer by about that much, and more in bursts.
 */
export function stolenPercent(from: { total: number; steal: number }, to = cpuTicks()): number {
  const total = to.total - from.total;
  return total > 0 ? (100 * (to.steal - from.steal)) / total : 0;
}

/** Where a guest kernel with free page reporting counts the memory it has handed back to its hypervisor. */
export const PAGE_REPORTING_KIB = '/sys/module/page_reporting/parameters/reported_kib';

/**
 * KiB of freed memory the guest kernel has reported to its hypervisor so far (free page reporting), or undefined
 * where it does not (no such counter). The hypervisor drops what is reported; the next touch of such a page faults
 * on the host too. On the test machine that made first touches of memory 4-5 times slower (6 GiB in 9-15 s against
 * 1 GiB in 0.45 s when the pages were still backed), and a freed GiB is reported within seconds: every restore
 * allocates the container's memory afresh, so a benchmark's times grow with what was reported meanwhile.
 */
export function pageReportedKib(read = () => readFileSync(PAGE_REPORTING_KIB, 'utf8')): number | undefined {
  return numberFrom(read);
}

/** A number a kernel file holds, or undefined where there is no such file (or no number in it). */
function numberFrom(read: () => string): number | undefined {
  try {
    const text = read().trim();
    const n = Number(text);
    return text !== '' && Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The host's conntrack table size (buckets), or undefined without conntrack: every CRIU dump walks it twice, so a
 * freeze measured here carries that walk (docs/install.md).
 */
export function conntrackBuckets(
  read = () => readFileSync('/proc/sys/net/netfilter/nf_conntrack_buckets', 'utf8'),
): number | undefined {
  return numberFrom(read);
}

/** A probe client in the testbed's client namespace (through the CLI, as a user runs it). */
export function probe(
  ferryArgv: string[],
  clusterFile: string,
  kind: string,
  target: string,
  replyTimeoutMs = 60_000,
): BackgroundProbe {
  // a long cold freeze is a long gap, not a lost reply: wait a minute before calling a request lost
  return startProbeProcess(ferryArgv, clusterFile, kind, target, { intervalMs: 2, replyTimeoutMs });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Waits until the probe's connection to `target` is established in the client namespace: on a loaded machine a
 * probe process may take seconds to start, and a migration before it connects measures nothing.
 */
export async function probeConnected(clientNetns: string, target: string, timeoutMs = 60_000): Promise<void> {
  const runner = new ProcessRunner();
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const r = await runner.run(
      ['ip', 'netns', 'exec', clientNetns, 'ss', '-tnH', 'state', 'established', 'dst', target],
      {
        allowFail: true,
      },
    );
    if (r.stdout.trim()) return;
    await sleep(100);
  }
  throw new Error(`the probe did not connect to ${target} within ${timeoutMs} ms`);
}

/** Bytes the client's connection to `target` has received (ss's bytes_received), or undefined with none open. */
async function bytesReceived(runner: ProcessRunner, clientNetns: string, target: string) {
  const r = await runner.run(
    ['ip', 'netns', 'exec', clientNetns, 'ss', '-tniH', 'state', 'established', 'dst', target],
    { allowFail: true },
  );
  const m = /bytes_received:(\d+)/.exec(r.stdout);
  return m ? Number(m[1]) : undefined;
}

/**
 * Waits until the probe's connection to `target` receives replies again (its received bytes grow), at most
 * `timeoutMs`: after a migration the client may be in TCP's retransmission backoff for a while, and a probe
 * stopped before it comes back reports its requests unanswered. Returns early when no connection is open.
 */
export async function probeReplying(clientNetns: string, target: string, timeoutMs: number): Promise<void> {
  const runner = new ProcessRunner();
  const deadline = performance.now() + timeoutMs;
  const first = await bytesReceived(runner, clientNetns, target);
  if (first === undefined) return;
  while (performance.now() < deadline) {
    await sleep(50);
    const now = await bytesReceived(runner, clientNetns, target);
    if (now === undefined || now > first) return;
  }
}
