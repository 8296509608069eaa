// The container frozen the way `runc pause` freezes it, without starting runc: the pause opens the freeze, and a
// runc process start there cost 16–60 ms on this project's test machine while the lock beside it took less. runc
// keeps no record of a pause (its `paused` is read from the freezer), so `runc resume`, `runc state` and CRIU see
// the same container either way.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { quickStatusOf } from './runc-state.ts';

/** v1 freezer: how many times the state is written before giving up (the kernel may stay FREEZING for a while). */
const V1_TRIES = 1000;
/** v2: how long the kernel may take to report the cgroup frozen. */
const V2_WAIT_MS = 2000;

/**
 * Freezes the running container whose runc directory is `dir` through the cgroup runc recorded in its state.json
 * (a v1 freezer wins, as runc's own manager on a hybrid host). False, with the cgroup thawed again, when it cannot
 * tell the container runs or the freezer does not freeze: then `runc pause` is asked, which says why.
 */
export async function freezeRecorded(dir: string): Promise<boolean> {
  if ((await quickStatusOf(dir))?.status !== 'running') return false;
  let paths: Record<string, string>;
  try {
    const st = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as {
      cgroup_paths?: Record<string, string>;
    };
    paths = st.cgroup_paths ?? {};
  } catch {
    return false;
  }
  const v1 = paths['freezer'];
  if (v1) return freezeV1(join(v1, 'freezer.state'));
  const v2 = paths[''];
  return v2 ? freezeV2(v2) : false;
}

/**
 * cgroup v1: FROZEN is written until it reads back FROZEN. A v1 freezer can stay FREEZING while tasks keep
 * appearing (a fork in flight); runc's answer, kept here, is to write again, and now and then to thaw and wait
 * 10 ms before trying once more.
 */
export async function freezeV1(file: string): Promise<boolean> {
  try {
    for (let i = 0; i < V1_TRIES; i++) {
      if (i % 50 === 49) {
        await writeFile(file, 'THAWED');
        await new Promise((r) => setTimeout(r, 10));
      }
      await writeFile(file, 'FROZEN');
      const state = (await readFile(file, 'utf8')).trim();
      if (state === 'FROZEN') return true;
      if (state !== 'FREEZING') break;
    }
  } catch {
    // no freezer to write: runc is asked
  }
  await writeFile(file, 'THAWED').catch(() => {});
  return false;
}

/** cgroup v2: `cgroup.freeze` set, then `frozen 1` awaited in `cgroup.events`. */
export async function freezeV2(cgroup: string, waitMs = V2_WAIT_MS): Promise<boolean> {
  try {
    await writeFile(join(cgroup, 'cgroup.freeze'), '1');
    const deadline = performance.now() + waitMs;
    while (performance.now() < deadline) {
      const events = await readFile(join(cgroup, 'cgroup.events'), 'utf8');
      if (/^frozen 1$/m.test(events)) return true;
      await new Promise((r) => setTimeout(r, 1));
    }
  } catch {
    // no cgroup to write: runc is asked
  }
  await writeFile(join(cgroup, 'cgroup.freeze'), '0').catch(() => {});
  return false;
}
