// The cluster controller's decision logic: greedy rebalancing, initial placement and draining.
// Pure: no I/O and no clock (`now` is passed in); every decision works on a copy, inputs are never mutated.

import type { Move, PlanResult } from '../api/types.ts';
import { FerryError } from '../core/errors.ts';

export interface ContainerLoad {
  name: string;
  /** % of ONE core, like top: 150 = 1.5 cores. */
  cpuPercent: number;
  memoryBytes: number;
  /** false: never move it (e.g. its host cannot migrate it). */
  migratable: boolean;
  /** ms epoch of its last migration. */
  lastMovedAt?: number;
}

export interface HostLoad {
  name: string;
  up: boolean;
  capacity: { cores: number; memoryBytes: number };
  containers: ContainerLoad[];
}

export type { Move, PlanResult };

export interface RebalanceOptions {
  /** 1..100 */
  targetPercent: number;
  now: number;
  /** A container moved less than cooldownMs ago is not moved (no ping-pong). */
  cooldownMs: number;
  /** At most this many moves per cycle. */
  batchLimit: number;
}

/** Load of a host in % of its CPU capacity: sum of its containers' cpuPercent / (cores * 100) * 100. */
export function hostLoadPercent(h: HostLoad): number {
  let sum = 0;
  for (const c of h.containers) sum += c.cpuPercent;
  return sum / h.capacity.cores;
}

// Float tolerance for the comparisons (sums such as 0.1 + 0.2).
const EPS = 1e-9;

interface WorkContainer {
  name: string;
  cpu: number;
  mem: number;
  migratable: boolean;
  lastMovedAt: number | undefined;
  moved: boolean;
}

interface WorkHost {
  name: string;
  up: boolean;
  cores: number;
  memCap: number;
  cpu: number; // sum of cpuPercent (%-of-one-core units)
  mem: number; // sum of memoryBytes
  containers: WorkContainer[];
  names: Set<string>;
}

function bad(message: string): FerryError {
  return new FerryError('FERRY_E_INPUT_ARGS', message, { phase: 'input' });
}

function isNonNegative(n: unknown): n is number {
  return typeof n === 'number' && Number.isFinite(n) && n >= 0;
}

function checkNonNegative(n: unknown, what: string): void {
  if (!isNonNegative(n)) throw bad(`${what} must be a non-negative number, got ${String(n)}`);
}

function checkName(n: unknown, what: string): asserts n is string {
  if (typeof n !== 'string' || n === '') throw bad(`${what} must be a non-empty string`);
}

/** Validates the hosts and builds the working copy. */
function workCopy(hosts: HostLoad[]): WorkHost[] {
  if (!Array.isArray(hosts)) throw bad('hosts must be an array');
  const seen = new Set<string>();
  const out: WorkHost[] = [];
  for (const h of hosts) {
    checkName(h?.name, 'host name');
    if (seen.has(h.name)) throw bad(`duplicate host name ${h.name}`);
    seen.add(h.name);
    const cores = h.capacity?.cores;
    if (typeof cores !== 'number' || !Number.isFinite(cores) || cores <= 0) {
      throw bad(`host ${h.name}: capacity.cores must be a positive number, got ${String(cores)}`);
    }
    checkNonNegative(h.capacity.memoryBytes, `host ${h.name}: capacity.memoryBytes`);
    if (!Array.isArray(h.containers)) throw bad(`host ${h.name}: containers must be an array`);
    const w: WorkHost = {
      name: h.name,
      up: h.up === true,
      cores,
      memCap: h.capacity.memoryBytes,
      cpu: 0,
      mem: 0,
      containers: [],
      names: new Set(),
    };
    for (const c of h.containers) {
      checkName(c?.name, `host ${h.name}: container name`);
      if (w.names.has(c.name)) throw bad(`host ${h.name}: duplicate container name ${c.name}`);
      checkNonNegative(c.cpuPercent, `container ${c.name} on ${h.name}: cpuPercent`);
      checkNonNegative(c.memoryBytes, `container ${c.name} on ${h.name}: memoryBytes`);
      if (c.lastMovedAt !== undefined)
        checkNonNegative(c.lastMovedAt, `container ${c.name} on ${h.name}: lastMovedAt`);
      w.names.add(c.name);
      w.containers.push({
        name: c.name,
        cpu: c.cpuPercent,
        mem: c.memoryBytes,
        migratable: c.migratable !== false,
        lastMovedAt: c.lastMovedAt,
        moved: false,
      });
      w.cpu += c.cpuPercent;
      w.mem += c.memoryBytes;
    }
    out.push(w);
  }
  return out;
}

const pct = (h: WorkHost, extraCpu = 0): number => (h.cpu + extraCpu) / h.cores;
const round = (n: number): number => Math.round(n * 100) / 100;
const fmt = (n: number): string => `${round(n)}%`;
const byName = (a: { name: string }, b: { name: string }): number =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
/** Decreasing CPU, ties by name. */
const byCpuDesc = (a: WorkContainer, b: WorkContainer): number => b.cpu - a.cpu || byName(a, b);

/** The names of the containers a host holds, sorted. */
function namesOn(h: WorkHost): string[] {
  return h.containers.map((c) => c.name).sort();
}

function loads(hosts: WorkHost[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const h of hosts) out[h.name] = round(pct(h));
  return out;
}

/** Capacity rule: CPU after ≤ 100 % of its cores, memory after ≤ its memory; no name clash on the receiver. */
function fits(h: WorkHost, cpu: number, mem: number, name: string): boolean {
  return h.cpu + cpu <= h.cores * 100 + EPS && h.mem + mem <= h.memCap && !h.names.has(name);
}

/**
 * The note for a container no other host can take. A host that lists a container of the same name is named: a
 * host's last heartbeat can still list one that has just moved away, and no host takes a second of a name.
 */
function noRoom(c: WorkContainer, from: string, others: WorkHost[]): string {
  const named = others.filter((h) => h.names.has(c.name)).map((h) => h.name);
  const note = `${c.name} (${fmt(c.cpu)} CPU) on ${from}: no other up host has the CPU and memory for it`;
  return named.length ? `${note} (${named.join(', ')} already lists a container named ${c.name})` : note;
}

function apply(c: WorkContainer, from: WorkHost, to: WorkHost): void {
  from.containers = from.containers.filter((x) => x !== c);
  from.names.delete(c.name);
  from.cpu -= c.cpu;
  from.mem -= c.mem;
  to.containers.push(c);
  to.names.add(c.name);
  to.cpu += c.cpu;
  to.mem += c.mem;
  c.moved = true;
}

/** The receiver with the most remaining CPU capacity (cores*100 − load) that fits; ties by name. */
function mostRoom(candidates: WorkHost[], cpu: number, mem: number, name: string): WorkHost | undefined {
  let best: WorkHost | undefined;
  for (const h of candidates) {
    if (!fits(h, cpu, mem, name)) continue;
    if (best === undefined) {
      best = h;
      continue;
    }
    const room = h.cores * 100 - h.cpu;
    const bestRoom = best.cores * 100 - best.cpu;
    if (room > bestRoom + EPS || (Math.abs(room - bestRoom) <= EPS && h.name < best.name)) best = h;
  }
  return best;
}

/**
 * Greedy rebalance towards targetPercent: up hosts above target (most loaded first) shed containers in
 * decreasing CPU order to the up host that ends least loaded, provided it stays within capacity and ends
 * strictly below the source's current load; a source stops once at or below target. Receivers pushed above
 * target are processed afterwards. Skips non-migratable containers, containers in cooldown, containers
 * already moved in this plan; at most batchLimit moves.
 */
export function rebalance(hosts: HostLoad[], o: RebalanceOptions): PlanResult {
  const T = o?.targetPercent;
  if (typeof T !== 'number' || !Number.isFinite(T) || T < 1 || T > 100) {
    throw bad(`targetPercent must be between 1 and 100, got ${String(T)}`);
  }
  checkNonNegative(o.now, 'now');
  checkNonNegative(o.cooldownMs, 'cooldownMs');
  if (!Number.isInteger(o.batchLimit) || o.batchLimit < 0) {
    throw bad(`batchLimit must be a non-negative integer, got ${String(o.batchLimit)}`);
  }
  const work = workCopy(hosts);
  const before = loads(work);
  const up = work.filter((h) => h.up);
  const moves: Move[] = [];
  const skipped = new Map<WorkContainer, string>();
  const above = (): WorkHost[] =>
    up.filter((h) => pct(h) > T + EPS).sort((a, b) => pct(b) - pct(a) || byName(a, b));

  /** Sheds what it can off `src`; returns how many containers it moved. */
  const shed = (src: WorkHost): number => {
    let moved = 0;
    for (const c of [...src.containers].sort(byCpuDesc)) {
      if (pct(src) <= T + EPS || moves.length >= o.batchLimit) break;
      if (c.moved) continue; // never twice in one plan
      if (!c.migratable) {
        skipped.set(c, `${c.name} on ${src.name}: not migratable, left in place`);
        continue;
      }
      if (c.lastMovedAt !== undefined && o.now - c.lastMovedAt < o.cooldownMs) {
        skipped.set(
          c,
          `${c.name} on ${src.name}: in cooldown (moved ${Math.max(0, o.now - c.lastMovedAt)} ms ago, cooldown ${o.cooldownMs} ms)`,
        );
        continue;
      }
      const srcPct = pct(src);
      let best: WorkHost | undefined;
      let anyRoom = false;
      for (const h of up) {
        if (h === src || !fits(h, c.cpu, c.mem, c.name)) continue;
        anyRoom = true;
        const after = pct(h, c.cpu);
        if (!(after < srcPct - EPS)) continue;
        if (best === undefined) {
          best = h;
          continue;
        }
        const bestAfter = pct(best, c.cpu);
        if (after < bestAfter - EPS || (Math.abs(after - bestAfter) <= EPS && h.name < best.name)) best = h;
      }
      if (best === undefined) {
        skipped.set(
          c,
          anyRoom
            ? `${c.name} (${fmt(c.cpu)} CPU) on ${src.name}: no receiver would stay below ${src.name}'s load of ${fmt(srcPct)}`
            : noRoom(
                c,
                src.name,
                up.filter((h) => h !== src),
              ),
        );
        continue;
      }
      const fromPct = pct(best);
      apply(c, src, best);
      skipped.delete(c);
      moved++;
      moves.push({
        container: c.name,
        from: src.name,
        to: best.name,
        cpuPercent: c.cpu,
        memoryBytes: c.mem,
        reason: `${src.name} at ${fmt(srcPct)} is above target ${fmt(T)}; ${best.name} goes from ${fmt(fromPct)} to ${fmt(pct(best))}`,
      });
    }
    return moved;
  };

  // Most loaded first; after any host sheds something the order is recomputed (a receiver may now be above
  // target, a former source may now receive). Ends when no host above target can shed, or at the batch limit.
  for (;;) {
    if (moves.length >= o.batchLimit) break;
    let progress = false;
    for (const src of above()) {
      if (shed(src) > 0) {
        progress = true;
        break;
      }
    }
    if (!progress) break;
  }

  const notes: string[] = [];
  for (const h of work) if (!h.up) notes.push(`${h.name} is down: neither a source nor a receiver`);
  notes.push(...skipped.values());
  const still = above();
  for (const h of still) notes.push(`${h.name} stays above target ${fmt(T)} at ${fmt(pct(h))}`);
  if (still.length > 0 && moves.length >= o.batchLimit) {
    notes.push(`batch limit of ${o.batchLimit} move(s) reached`);
  }
  return { moves, before, after: loads(work), notes };
}

/**
 * Initial placement: containers in decreasing CPU order (ties by name), each on the up host with the most
 * remaining CPU capacity (cores*100 − load, in %-of-one-core units) that fits its CPU and memory (ties by
 * name); remaining capacity is updated as it goes. A host already running a container of that name is not
 * chosen for it.
 */
export function place(
  containers: { name: string; cpuPercent: number; memoryBytes: number }[],
  hosts: HostLoad[],
): { placements: Record<string, string>; unplaced: string[] } {
  if (!Array.isArray(containers)) throw bad('containers must be an array');
  const seen = new Set<string>();
  const todo: WorkContainer[] = [];
  for (const c of containers) {
    checkName(c?.name, 'container name');
    if (seen.has(c.name)) throw bad(`duplicate container name ${c.name}`);
    seen.add(c.name);
    checkNonNegative(c.cpuPercent, `container ${c.name}: cpuPercent`);
    checkNonNegative(c.memoryBytes, `container ${c.name}: memoryBytes`);
    todo.push({
      name: c.name,
      cpu: c.cpuPercent,
      mem: c.memoryBytes,
      migratable: true,
      lastMovedAt: undefined,
      moved: false,
    });
  }
  const up = workCopy(hosts).filter((h) => h.up);
  const placements: Record<string, string> = {};
  const unplaced: string[] = [];
  for (const c of todo.sort(byCpuDesc)) {
    const h = mostRoom(up, c.cpu, c.mem, c.name);
    if (h === undefined) {
      unplaced.push(c.name);
      continue;
    }
    h.cpu += c.cpu;
    h.mem += c.mem;
    h.names.add(c.name);
    placements[c.name] = h.name;
  }
  return { placements, unplaced };
}

/**
 * Moves every container off `host`, in decreasing CPU order, each to the up host (other than `host`) with
 * the most remaining CPU capacity that fits its CPU and memory. Cooldown does not apply (the host must be
 * emptied); non-migratable containers and containers that fit nowhere are noted, not moved. A host that is
 * down cannot be live-migrated from: nothing is moved, a note says so. `o.now` is only validated.
 */
export function drain(host: string, hosts: HostLoad[], o: { now?: number } = {}): PlanResult {
  checkName(host, 'host to drain');
  if (o?.now !== undefined) checkNonNegative(o.now, 'now');
  const work = workCopy(hosts);
  const src = work.find((h) => h.name === host);
  if (src === undefined) throw bad(`unknown host to drain: ${host}`);
  const before = loads(work);
  const moves: Move[] = [];
  const notes: string[] = [];
  if (!src.up) {
    notes.push(`${host} is down: its containers cannot be live-migrated, nothing moved`);
    return { moves, before, after: loads(work), notes, remaining: namesOn(src) };
  }
  const receivers = work.filter((h) => h.up && h !== src);
  for (const c of [...src.containers].sort(byCpuDesc)) {
    if (!c.migratable) {
      notes.push(`${c.name} on ${host}: not migratable, left in place`);
      continue;
    }
    const to = mostRoom(receivers, c.cpu, c.mem, c.name);
    if (to === undefined) {
      notes.push(noRoom(c, host, receivers));
      continue;
    }
    const fromPct = pct(to);
    apply(c, src, to);
    moves.push({
      container: c.name,
      from: host,
      to: to.name,
      cpuPercent: c.cpu,
      memoryBytes: c.mem,
      reason: `draining ${host}; ${to.name} has the most spare CPU and goes from ${fmt(fromPct)} to ${fmt(pct(to))}`,
    });
  }
  if (src.containers.length > 0)
    notes.push(`${host} is not empty: ${src.containers.length} container(s) remain`);
  return { moves, before, after: loads(work), notes, remaining: namesOn(src) };
}
