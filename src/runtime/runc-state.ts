// What runc's own files say about a container, read without starting runc (a process start inside the freeze
// costs tens of milliseconds on a busy host).
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The two answers of `runc state` the freeze waits for, running or paused, read the way runc reads them from its
 * own files in `dir` (its root's directory for the container), without starting runc: state.json's init pid alive
 * with the start time runc recorded (a reused pid is someone else's), no exec.fifo (a container created but not
 * started keeps it), and the freezer of the cgroup runc recorded, FROZEN or THAWED (v1) or `frozen` in
 * cgroup.events agreeing with cgroup.freeze (v2). Undefined for anything else (stopped, created, freezing, unreadable): ask `state`, which
 * also names it.
 */
export async function quickStatusOf(
  dir: string,
  procRoot = '/proc',
): Promise<{ status: 'running' | 'paused'; pid: number } | undefined> {
  try {
    const st = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as {
      init_process_pid?: number;
      init_process_start?: number | string;
      cgroup_paths?: Record<string, string>;
    };
    const pid = st.init_process_pid;
    if (!pid || st.init_process_start === undefined) return undefined;
    const stat = await readFile(join(procRoot, String(pid), 'stat'), 'utf8');
    // fields after the command name, which may hold spaces and parentheses: state is field 3, starttime field 22
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
    if (fields[19] !== String(st.init_process_start)) return undefined;
    if (await exists(join(dir, 'exec.fifo'))) return undefined;
    const frozen = await frozenCgroup(st.cgroup_paths ?? {});
    if (frozen === undefined) return undefined;
    return { status: frozen ? 'paused' : 'running', pid };
  } catch {
    return undefined;
  }
}

/** Whether the cgroup runc recorded is frozen; a v1 freezer wins (a hybrid host's unified `frozen` stays 0). */
async function frozenCgroup(paths: Record<string, string>): Promise<boolean | undefined> {
  const v1 = paths['freezer'];
  if (v1) {
    const state = (await readFile(join(v1, 'freezer.state'), 'utf8').catch(() => '')).trim();
    return state === 'FROZEN' ? true : state === 'THAWED' ? false : undefined;
  }
  const v2 = paths[''];
  if (!v2) return undefined;
  const events = await readFile(join(v2, 'cgroup.events'), 'utf8').catch(() => '');
  const m = /^frozen (\d)$/m.exec(events);
  // asked (cgroup.freeze) and reached (frozen) must agree: between them the cgroup is freezing or thawing, which
  // CRIU passes through when it lets the tasks go after a dump; runc answers that one
  const asked = (await readFile(join(v2, 'cgroup.freeze'), 'utf8').catch(() => '')).trim();
  if (!m || (asked !== '0' && asked !== '1') || asked !== m[1]) return undefined;
  return m[1] === '1';
}

function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/**
 * The container's external descriptors as runc recorded them at its start (`external_descriptors` in state.json:
 * its init's stdio), what a dump writes as descriptors.json; undefined when they cannot be read.
 */
export async function externalDescriptorsOf(dir: string): Promise<string[] | undefined> {
  try {
    const st = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as {
      external_descriptors?: unknown;
    };
    const d = st.external_descriptors;
    return Array.isArray(d) && d.every((x) => typeof x === 'string') ? d : undefined;
  } catch {
    return undefined;
  }
}
