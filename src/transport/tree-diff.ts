// What changed in a directory tree between two looks: the bundle goes to the destination before the freeze, and
// after the final dump only what changed since (a writable rootfs, whose open files must have the size CRIU
// recorded) is sent again. Entries are compared by type, size, modification and change time, inode and link count,
// mode and owner (files; the change time moves with any xattr, mode or owner change), target (symlinks), mode,
// owner, change time and device number (FIFOs, sockets, devices) or mode and owner (directories, which are
// always sent again).
import { lstatSync, readdirSync, readlinkSync, type Stats } from 'node:fs';
import { join } from 'node:path';

export type TreeSnapshot = Map<string, string>;

function signature(st: Stats, target?: string): string {
  const owner = `${st.mode & 0o7777}:${st.uid}:${st.gid}`;
  if (st.isDirectory()) return `d:${owner}`;
  if (st.isSymbolicLink()) return `l:${target}`;
  if (st.isFile()) return `f:${owner}:${st.size}:${st.mtimeMs}:${st.ctimeMs}:${st.ino}:${st.nlink}`;
  return `x:${owner}:${st.mode >>> 12}:${st.rdev}:${st.ctimeMs}:${st.ino}`; // FIFOs, sockets, devices
}

/**
 * How long the walk runs before it lets the event loop turn. The walk is synchronous in between: the final one runs
 * inside the freeze, and a `readdir`/`lstat` through libuv's thread pool per entry made it about 12 times slower
 * (6847 entries: 580-680 ms against 50-55 ms on the test machine), where a container with a full Debian root file
 * system has 15-25 thousand.
 */
const YIELD_EVERY_MS = 20;

/** Every entry under `root`, by path relative to it ('/'-separated). */
export async function snapshotTree(root: string): Promise<TreeSnapshot> {
  const out: TreeSnapshot = new Map();
  await walk(root, '', out, { since: performance.now() });
  return out;
}

async function walk(root: string, rel: string, out: TreeSnapshot, turn: { since: number }): Promise<void> {
  let names: string[];
  try {
    names = readdirSync(join(root, rel));
  } catch {
    return;
  }
  for (const name of names.sort()) {
    if (performance.now() - turn.since > YIELD_EVERY_MS) {
      await new Promise((r) => setImmediate(r));
      turn.since = performance.now();
    }
    const path = rel ? `${rel}/${name}` : name;
    let st: Stats;
    try {
      st = lstatSync(join(root, path));
    } catch {
      continue; // vanished
    }
    let target: string | undefined;
    if (st.isSymbolicLink()) {
      try {
        target = readlinkSync(join(root, path));
      } catch {
        target = '';
      }
    }
    out.set(path, signature(st, target));
    if (st.isDirectory()) await walk(root, path, out, turn);
  }
}

/**
 * From the tree as it was sent to the tree as it is: what the receiver must remove first (gone, changed files
 * and symlinks, entries whose type changed; nothing below a removed directory), and which entries it holds
 * already (to leave out of the update). Directories are always sent again (the receiver merges them).
 */
export function treeChanges(
  before: TreeSnapshot,
  after: TreeSnapshot,
): { removals: string[]; unchanged: Set<string> } {
  const removals: string[] = [];
  const unchanged = new Set<string>();
  let removedDir: string | undefined;
  for (const [path, was] of [...before].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (removedDir !== undefined && path.startsWith(`${removedDir}/`)) continue;
    const now = after.get(path);
    if (now === was) {
      if (!was.startsWith('d:')) unchanged.add(path);
      continue;
    }
    // a directory whose mode changed stays (the update sets the mode); anything else goes
    if (now !== undefined && was.startsWith('d:') && now.startsWith('d:')) continue;
    removals.push(path);
    if (was.startsWith('d:')) removedDir = path;
  }
  return { removals, unchanged };
}
