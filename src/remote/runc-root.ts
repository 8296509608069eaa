// A container started by hand with plain `runc run` (not by ferry), found in a runc state root (`--runc-root`,
// default /run/runc): its record is derived from runc's state and its bundle's config.json, so the engine can move
// it as if ferry had started it. Nothing is written to the user's runc root or bundle; the engine reads both.
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { ContainerRecord } from '../api/types.ts';
import { FerryError } from '../core/errors.ts';
import { checkName } from '../core/names.ts';
import { readConfig, validateConfig } from '../runtime/bundle.ts';
import type { RuncLike } from '../runtime/runc.ts';

/** runc's default state root, where `runc run` keeps its containers unless told otherwise. */
export const DEFAULT_RUNC_ROOT = '/run/runc';

export interface AdoptedContainer {
  record: ContainerRecord;
  /** The bundle runc started it from (the user's directory, read, never changed). */
  bundle: string;
  /** Its cgroup (v2 path below /sys/fs/cgroup), from its init's /proc/PID/cgroup. */
  cgroup: string | undefined;
  pid: number;
}

/**
 * The network mode a config.json asks for, as ferry's records name it: a new namespace of its own is `none`
 * (loopback only, moved with the container). A namespace joined by path or the host's own carry addresses ferry
 * did not give and cannot recreate on the other host: refused with the reason.
 */
export function netModeOf(
  config: { linux?: { namespaces?: { type: string; path?: string }[] } },
  name: string,
) {
  const net = (config.linux?.namespaces ?? []).find((n) => n.type === 'network');
  const refuse = (why: string) =>
    new FerryError(
      'FERRY_E_INPUT_ARGS',
      `container ${name} ${why}: ferry cannot give it the same network elsewhere`,
      {
        phase: 'input',
        hint:
          'a container started by hand moves with a network namespace of its own and no path in config.json ' +
          '(runc spec makes one); start it with ferry run for an address on the LAN',
      },
    );
  if (!net) throw refuse("shares the host's network namespace");
  if (net.path) throw refuse(`joins the network namespace ${net.path}`);
  return 'none' as const;
}

/** The cgroup v2 path of a process ("0::/a/b" in /proc/PID/cgroup), undefined on a v1-only host. */
export async function cgroupOf(pid: number, procRoot = '/proc'): Promise<string | undefined> {
  try {
    const text = await readFile(`${procRoot}/${pid}/cgroup`, 'utf8');
    return /^0::(\/.*)$/m.exec(text)?.[1];
  } catch {
    return undefined;
  }
}

/** Finds `name` in runc's root and derives ferry's record of it; refuses what cannot move, changing nothing. */
export async function adoptRuncContainer(
  runc: RuncLike,
  name: string,
  runcRoot: string,
  procRoot = '/proc',
): Promise<AdoptedContainer> {
  checkName(name);
  const st = await runc.state(name);
  if (!st)
    throw new FerryError(
      'FERRY_E_CONTAINER_UNKNOWN',
      `no container named ${name} in the runc root ${runcRoot}`,
      {
        phase: 'input',
        hint: 'runc --root DIR list shows them; give the root it was started with as --runc-root',
      },
    );
  if (st.status !== 'running' || !st.pid)
    throw new FerryError(
      'FERRY_E_CONTAINER_NOT_RUNNING',
      `container ${name} in ${runcRoot} is ${st.status}, not running`,
      { phase: 'input' },
    );
  const config = await readConfig(st.bundle);
  validateConfig(config);
  const net = netModeOf(config, name);
  const record: ContainerRecord = {
    name,
    createdAt: new Date().toISOString(),
    net,
    command: (config.process.args as string[]).slice(0, 256),
    origin: { kind: 'run' },
  };
  return { record, bundle: st.bundle, cgroup: await cgroupOf(st.pid, procRoot), pid: st.pid };
}

/**
 * The directory ferry kept the container in when it arrived by an earlier agentless migration (a temporary agent's
 * state: `DIR/runc` is its runc root, `DIR/containers/NAME/bundle` its bundle): it goes once the container moved on.
 * Undefined for a bundle of the user's, which is never touched.
 */
export function receivedContainerDir(runcRoot: string, name: string, bundle: string): string | undefined {
  const dir = join(dirname(runcRoot), 'containers', name);
  return runcRoot.endsWith('/runc') && bundle === join(dir, 'bundle') ? dir : undefined;
}
