// Mounts ferry makes: tmpfs staging directories for checkpoint images.
import { statfs } from 'node:fs/promises';
import type { Runner } from './exec.ts';

const TMPFS_MAGIC = 0x01021994;

export async function isTmpfs(dir: string): Promise<boolean> {
  try {
    return (await statfs(dir)).type === TMPFS_MAGIC;
  } catch {
    return false;
  }
}

export async function mountTmpfs(runner: Runner, dir: string, size = '50%'): Promise<void> {
  await runner.run(['mount', '-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'ferry-images', dir]);
}

export async function umount(runner: Runner, dir: string, lazy = true): Promise<void> {
  await runner.run(['umount', ...(lazy ? ['-l'] : []), dir], { allowFail: true });
}

/** Mount points at or below `prefix`, deepest first (from /proc/self/mountinfo). */
export async function mountsUnder(prefix: string, mountinfo: string): Promise<string[]> {
  const out: string[] = [];
  for (const line of mountinfo.split('\n')) {
    const mp = line.split(' ')[4];
    if (!mp) continue;
    const path = mp.replace(/\\040/g, ' ');
    if (path === prefix || path.startsWith(`${prefix}/`)) out.push(path);
  }
  return out.sort((a, b) => b.length - a.length);
}
