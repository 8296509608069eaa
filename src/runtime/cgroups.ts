// Cgroup housekeeping: find and remove the cgroups a testbed or host created (v1, v2 and hybrid layouts).
import { readdir, readFile, rmdir } from 'node:fs/promises';
import { join } from 'node:path';

const CGROUP_ROOT = '/sys/fs/cgroup';

/** Hierarchy roots: each v1 controller mount, the unified mount, or the root itself on pure v2. */
export async function hierarchies(root = CGROUP_ROOT): Promise<string[]> {
  const out: string[] = [];
  try {
    await readFile(join(root, 'cgroup.procs'));
    return [root];
  } catch {
    // not pure v2
  }
  for (const e of await readdir(root, { withFileTypes: true })) {
    if (e.isDirectory()) out.push(join(root, e.name));
  }
  return out;
}

async function subdirs(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true }))
      .filter((e) => e.isDirectory())
      .map((e) => join(dir, e.name));
  } catch {
    return [];
  }
}

async function killAndRemove(dir: string): Promise<void> {
  for (const d of await subdirs(dir)) await killAndRemove(d);
  for (let attempt = 0; attempt < 40; attempt++) {
    let pids: number[] = [];
    try {
      pids = (await readFile(join(dir, 'cgroup.procs'), 'utf8')).split('\n').filter(Boolean).map(Number);
    } catch {
      return;
    }
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    try {
      await rmdir(dir);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Kills every process in, and removes, each top-level cgroup whose name matches. */
export async function removeCgroups(match: (name: string) => boolean, root = CGROUP_ROOT): Promise<string[]> {
  const removed: string[] = [];
  for (const h of await hierarchies(root)) {
    for (const d of await subdirs(h)) {
      const base = d.slice(h.length + 1);
      if (match(base)) {
        await killAndRemove(d);
        removed.push(d);
      }
    }
  }
  return removed;
}

/** Memory in use by a cgroup (v1 memory controller or v2), in bytes; undefined when it cannot be read. */
export async function memoryUsage(cgroupsPath: string, root = CGROUP_ROOT): Promise<number | undefined> {
  for (const file of [
    join(root, 'memory', cgroupsPath, 'memory.usage_in_bytes'),
    join(root, 'unified', cgroupsPath, 'memory.current'),
    join(root, cgroupsPath, 'memory.current'),
  ]) {
    try {
      const n = Number.parseInt(await readFile(file, 'utf8'), 10);
      if (Number.isFinite(n)) return n;
    } catch {
      // not this layout
    }
  }
  return undefined;
}

/** CPU % of one core between two samples of cpuUsageNs (cgroup CPU time over wall time). */
export function cpuPercent(prevNs: number | undefined, nowNs: number, wallMs: number): number {
  if (prevNs === undefined || wallMs <= 0 || nowNs < prevNs) return 0;
  return Math.round(((nowNs - prevNs) / (wallMs * 1e6)) * 1000) / 10;
}

/** CPU time a cgroup has used, in nanoseconds (v1 cpuacct or v2 cpu.stat); undefined when it cannot be read. */
export async function cpuUsageNs(cgroupsPath: string, root = CGROUP_ROOT): Promise<number | undefined> {
  for (const dir of ['cpuacct', 'cpu,cpuacct']) {
    try {
      const n = Number.parseInt(await readFile(join(root, dir, cgroupsPath, 'cpuacct.usage'), 'utf8'), 10);
      if (Number.isFinite(n)) return n;
    } catch {
      // not this layout
    }
  }
  for (const base of [join(root, 'unified'), root]) {
    try {
      const stat = await readFile(join(base, cgroupsPath, 'cpu.stat'), 'utf8');
      const m = /usage_usec (\d+)/.exec(stat);
      if (m?.[1]) return Number(m[1]) * 1000;
    } catch {
      // not this layout
    }
  }
  return undefined;
}

/** The memory limit of a cgroup in bytes; undefined when unlimited or unreadable. */
export async function memoryLimit(cgroupsPath: string, root = CGROUP_ROOT): Promise<number | undefined> {
  for (const file of [
    join(root, 'memory', cgroupsPath, 'memory.limit_in_bytes'),
    join(root, 'unified', cgroupsPath, 'memory.max'),
    join(root, cgroupsPath, 'memory.max'),
  ]) {
    try {
      const text = (await readFile(file, 'utf8')).trim();
      if (text === 'max') return undefined;
      const n = Number(text);
      if (Number.isFinite(n) && n < 2 ** 62) return n;
      return undefined;
    } catch {
      // not this layout
    }
  }
  return undefined;
}

/** The processes in a cgroup (any layout); empty when it cannot be read. */
export async function cgroupPids(cgroupsPath: string, root = CGROUP_ROOT): Promise<number[]> {
  for (const dir of ['pids', 'memory', 'freezer', 'unified', '']) {
    try {
      const text = await readFile(join(root, dir, cgroupsPath, 'cgroup.procs'), 'utf8');
      return text
        .split('\n')
        .map((l) => Number.parseInt(l, 10))
        .filter((n) => Number.isInteger(n) && n > 0);
    } catch {
      // not this layout
    }
  }
  return [];
}
