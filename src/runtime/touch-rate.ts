// How fast a running container touches its memory, measured without freezing it and without soft-dirty
// tracking: the kernel's accessed bits. Writing 1 to /proc/PID/clear_refs clears them; after a short window,
// `Referenced:` in /proc/PID/smaps is the memory touched since. A write is an access, so this is an upper
// bound on the dirty rate (a program that reads a lot but writes little looks busier than it is); only writable
// mappings count, since nothing else can be dirtied. It is the
// estimate `auto` plans pre-copy with on a kernel like this one (this kernel has no soft-dirty tracking: docs/background.md).
import { readFile, writeFile } from 'node:fs/promises';

export interface TouchRate {
  /** How fast the touched set grows (bytes/s), summed over the container's processes. */
  bytesPerSec: number;
  /** The set touched at once (re-touched, not growing), extrapolated to a window of zero. */
  hotBytes: number;
  /** Bytes touched during the window. */
  bytes: number;
  windowMs: number;
}

/** Sums `Referenced:` over the writable mappings of a /proc/PID/smaps text; undefined when it has none. */
export function writableReferencedBytes(smaps: string): number | undefined {
  let writable = false;
  let total: number | undefined;
  for (const line of smaps.split('\n')) {
    const vma = /^[0-9a-f]+-[0-9a-f]+ (\S{4}) /.exec(line);
    if (vma) {
      writable = vma[1]![1] === 'w';
      continue;
    }
    const m = /^Referenced:\s+(\d+) kB$/.exec(line);
    if (m) total = (total ?? 0) + (writable ? Number(m[1]) * 1024 : 0);
  }
  return total;
}

export interface TouchProbeIo {
  clear(pid: number): Promise<void>;
  smaps(pid: number): Promise<string>;
  sleep(ms: number): Promise<void>;
}

const procIo: TouchProbeIo = {
  clear: (pid) => writeFile(`/proc/${pid}/clear_refs`, '1'),
  smaps: (pid) => readFile(`/proc/${pid}/smaps`, 'utf8'),
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
};

/**
 * Two looks at the accessed bits, a quarter and all of `windowMs` after clearing them: what was touched by the
 * first look is the hot set, what was added between the looks is the growth (a program cycling through a small
 * buffer has a large hot set and little growth: pre-copy converges for it; one sweeping all its memory grows).
 * Undefined when no process could be measured (they exited, or /proc lacks smaps).
 */
export async function measureTouchRate(
  pids: number[],
  windowMs = 400,
  io: TouchProbeIo = procIo,
): Promise<TouchRate | undefined> {
  const cleared: number[] = [];
  for (const pid of pids) {
    try {
      await io.clear(pid);
      cleared.push(pid);
    } catch {
      // exited meanwhile, or a kernel thread
    }
  }
  if (cleared.length === 0) return undefined;
  const t0 = performance.now();
  const look = async (): Promise<number | undefined> => {
    let bytes = 0;
    let measured = 0;
    for (const pid of cleared) {
      try {
        const b = writableReferencedBytes(await io.smaps(pid));
        if (b === undefined) continue;
        bytes += b;
        measured++;
      } catch {
        // exited
      }
    }
    return measured ? bytes : undefined;
  };
  await io.sleep(windowMs / 4);
  const first = await look();
  const t1 = performance.now();
  await io.sleep(windowMs - (t1 - t0));
  const bytes = await look();
  const t2 = performance.now();
  if (first === undefined || bytes === undefined) return undefined;
  const growth = Math.max(0, bytes - first) / Math.max(0.001, (t2 - t1) / 1000);
  return {
    bytesPerSec: Math.round(growth),
    hotBytes: Math.max(0, Math.round(first - growth * ((t1 - t0) / 1000))),
    bytes,
    windowMs: Math.round(t2 - t0),
  };
}
