// The dashboard's pure logic, apart from the DOM so that Node's test runner checks it: process trees from flat
// lists, the filter, live progress from migration events, and the figures the views print.
import type { ProcessInfo, ProgressEvent } from '../api/dashboard.ts';
import type { MigrationPhase, MigrationRecord, MigrationReport } from '../api/types.ts';

export interface ProcessNode {
  p: ProcessInfo;
  children: ProcessNode[];
}

/** The forest of a container's processes: a process whose parent is not in the list is a root (its init). */
export function buildTree(list: ProcessInfo[]): ProcessNode[] {
  const nodes = new Map(list.map((p) => [p.pid, { p, children: [] as ProcessNode[] }]));
  const roots: ProcessNode[] = [];
  for (const n of nodes.values()) {
    const parent = nodes.get(n.p.ppid);
    if (parent && parent !== n) parent.children.push(n);
    else roots.push(n);
  }
  return roots;
}

/** Whether a process matches the filter: its name, command line, or pid (host or in-container) as typed. */
export function processMatches(p: ProcessInfo, q: string): boolean {
  const t = q.trim().toLowerCase();
  if (!t) return true;
  if (/^\d+$/.test(t)) return String(p.pid) === t || String(p.nsPid ?? '') === t;
  return p.comm.toLowerCase().includes(t) || p.cmdline.toLowerCase().includes(t);
}

/** The pids to show under a filter: every match and its ancestors (so the match can be reached by expanding). */
export function visiblePids(list: ProcessInfo[], q: string): Set<number> {
  const byPid = new Map(list.map((p) => [p.pid, p]));
  const out = new Set<number>();
  for (const p of list) {
    if (!processMatches(p, q)) continue;
    let cur: ProcessInfo | undefined = p;
    while (cur && !out.has(cur.pid)) {
      out.add(cur.pid);
      cur = byPid.get(cur.ppid);
    }
  }
  return out;
}

/** A container is shown under a filter when its name matches or any of its processes does. */
export function containerMatches(name: string, list: ProcessInfo[] | undefined, q: string): boolean {
  const t = q.trim().toLowerCase();
  if (!t) return true;
  if (name.toLowerCase().includes(t)) return true;
  return (list ?? []).some((p) => processMatches(p, t));
}

/** One migration's progress, folded from its events. */
export interface Progress {
  id: string;
  container: string;
  phase?: MigrationPhase;
  bytes: number;
  total?: number;
  /** Bytes per second: the source's figure, or measured over the last two progress events. */
  rate?: number;
  /** Pre-copy: the round the last update was about. */
  round?: number;
  /** Post-copy: memory pages still on the source (0 once the last has arrived), of how many. */
  pagesRemaining?: number;
  pagesTotal?: number;
  /** Phases that ended, with their duration. */
  done: { name: MigrationPhase; ms: number }[];
  failedPhase?: MigrationPhase;
  lastAt?: number;
}

export function foldProgress(
  prev: Progress | undefined,
  e: { id: string; container: string; event: ProgressEvent; at: number },
): Progress {
  const p: Progress = prev
    ? { ...prev, done: [...prev.done] }
    : { id: e.id, container: e.container, bytes: 0, done: [] };
  const ev = e.event;
  if (ev.type === 'phase') {
    if (ev.state === 'start') {
      p.phase = ev.phase;
      p.bytes = 0;
      delete p.total;
      delete p.rate;
      delete p.round;
    } else if (ev.state === 'end') p.done.push({ name: ev.phase, ms: ev.ms ?? 0 });
    else p.failedPhase = ev.phase;
  } else if (ev.type === 'progress') {
    if (ev.rate !== undefined) p.rate = ev.rate;
    else if (p.lastAt !== undefined && e.at > p.lastAt && ev.phase === p.phase && ev.bytes >= p.bytes)
      p.rate = ((ev.bytes - p.bytes) * 1000) / (e.at - p.lastAt);
    p.phase = ev.phase;
    p.bytes = ev.bytes;
    if (ev.total !== undefined) p.total = ev.total;
    if (ev.round !== undefined) p.round = ev.round;
    if (ev.pagesRemaining !== undefined) p.pagesRemaining = ev.pagesRemaining;
    if (ev.pagesTotal !== undefined) p.pagesTotal = ev.pagesTotal;
  }
  p.lastAt = e.at;
  return p;
}

/** What a finished migration record says, for the result and the history. */
export interface Outcome {
  ok: boolean;
  freezeMs?: number;
  totalMs?: number;
  strategy?: string;
  memoryBytes?: number;
  phases: { name: string; ms: number }[];
  error?: { code: string; phase: string; message: string };
  /** After a failure: whether the container still runs on its source. */
  sourceRunning?: boolean;
}

export function outcomeOf(m: MigrationRecord): Outcome {
  const r = m.report as Partial<MigrationReport> | undefined;
  const out: Outcome = { ok: m.status === 'done', phases: r?.phases ?? [] };
  if (m.freezeMs !== undefined) out.freezeMs = m.freezeMs;
  else if (r?.freezeMs !== undefined) out.freezeMs = r.freezeMs;
  if (r?.totalMs !== undefined) out.totalMs = r.totalMs;
  else if (m.startedAt !== undefined && m.finishedAt !== undefined) out.totalMs = m.finishedAt - m.startedAt;
  if (r?.strategy) out.strategy = r.strategy;
  if (r?.memoryBytes !== undefined) out.memoryBytes = r.memoryBytes;
  if (m.status === 'failed') {
    if (r?.error)
      out.error = { code: r.error.code, phase: r.error.phase ?? 'plan', message: r.error.message };
    else {
      // refused before the agent's stream started: the record holds "CODE: message"
      const x = /^(FERRY_E_[A-Z_]+): (.*)$/s.exec(m.error ?? '');
      out.error = x
        ? { code: x[1] ?? '', phase: 'input', message: x[2] ?? '' }
        : { code: 'FERRY_E_INTERNAL', phase: 'input', message: m.error ?? 'failed' };
    }
    if (r?.rollback) out.sourceRunning = r.rollback.sourceRunning;
  }
  return out;
}

export function formatBytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
}

export function formatMs(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '–';
  return ms < 10_000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

export function formatAgo(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

/** /proc's state letters in words. */
export function stateText(state: string): string {
  const words: Record<string, string> = {
    R: 'running',
    S: 'sleeping',
    D: 'disk sleep',
    Z: 'zombie',
    T: 'stopped',
    t: 'traced',
    X: 'dead',
    I: 'idle',
  };
  return words[state] ?? state;
}

/** A host's memory in use: the sum of its containers' (what the agents report), against its capacity. */
export function memoryPercent(used: number, capacity: number): number {
  return capacity > 0 ? Math.min(100, (used / capacity) * 100) : 0;
}

/** Points of the freeze-time chart: one series per strategy over memory size (MiB), from finished migrations. */
export function freezeSeries(history: MigrationRecord[]): {
  strategies: string[];
  xs: number[];
  ys: (number | null)[][];
} {
  const pts: { s: string; x: number; y: number }[] = [];
  for (const m of history) {
    if (m.status !== 'done') continue;
    const o = outcomeOf(m);
    if (o.freezeMs === undefined || o.memoryBytes === undefined || !o.strategy) continue;
    pts.push({ s: o.strategy, x: o.memoryBytes / 2 ** 20, y: o.freezeMs });
  }
  const strategies = [...new Set(pts.map((p) => p.s))].sort();
  pts.sort((a, b) => a.x - b.x);
  // uPlot wants one ascending x axis shared by every series: each point gets its own x, the others a gap
  const xs = pts.map((p) => p.x);
  const ys = strategies.map((s) => pts.map((p) => (p.s === s ? p.y : null)));
  return { strategies, xs, ys };
}
