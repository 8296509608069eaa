// A container started by hand with plain `runc run` (not by ferry), found in a runc state root (`--runc-root`,
// default /run/runc): its record is derived from runc's state and its bundle's config.json, so the engine can move
// it as if ferry had started it. Nothing is written to the user's runc root or bundle; the engine reads both.
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { ContainerRecord } from '../api/types.ts';
import { FerryError } from '../core/errors.ts';
import { checkName } from '../core/names.ts';
import { readConfig, validateConfig } from '../runtime/bundle.ts';
import type { Runner } from '../runtime/exec.ts';
import type { RuncLike } from '../runtime/runc.ts';

/** runc's default state root, where `runc run` keeps its containers unless told otherwise. */
export const DEFAULT_RUNC_ROOT = '/run/runc';

export interface AdoptedContainer {
  record: ContainerRecord;
  /** Its network namespace's prefix and the LAN's prefix length (`own` only), for this host's network layer. */
  network?: { netnsPrefix: string; prefixLen: number };
  /** The bundle runc started it from (the user's directory, read, never changed). */
  bundle: string;
  /** Its cgroup (v2 path below /sys/fs/cgroup), from its init's /proc/PID/cgroup. */
  cgroup: string | undefined;
  pid: number;
}

/** What a config.json's network namespace is: a new one of its own, or one joined by its path. */
export type NetShape = { mode: 'none' } | { mode: 'own'; netns: string; prefix: string };

/**
 * The network a config.json asks for, as ferry's records name it: a new namespace of its own is `none` (loopback
 * only, moved with the container); a namespace joined by path is `own` when it is wired the way ferry wires one
 * (named PREFIX-NAME, its eth0 on a veth whose host side ferry names): the same address and MAC are made again on
 * the other host. The host's own network carries nothing ferry can recreate: refused with the reason.
 */
export function netModeOf(
  config: { linux?: { namespaces?: { type: string; path?: string }[] } },
  name: string,
): NetShape {
  const net = (config.linux?.namespaces ?? []).find((n) => n.type === 'network');
  if (!net) throw cannotMove(name, "shares the host's network namespace");
  if (!net.path) return { mode: 'none' };
  const m = /^\/run\/netns\/([A-Za-z0-9_.-]+)$/.exec(net.path);
  const netns = m?.[1];
  if (!netns || !netns.endsWith(`-${name}`) || netns.length === name.length + 1)
    throw cannotMove(
      name,
      `joins the network namespace ${net.path}, not one named /run/netns/PREFIX-${name}`,
    );
  return { mode: 'own', netns, prefix: netns.slice(0, -(name.length + 1)) };
}

function cannotMove(name: string, why: string): FerryError {
  return new FerryError(
    'FERRY_E_INPUT_ARGS',
    `container ${name} ${why}: ferry cannot give it the same network elsewhere`,
    {
      phase: 'input',
      hint:
        'a container started by hand moves with a network namespace of its own and no path in config.json ' +
        '(runc spec makes one), or in a namespace ferry made (ferry run --net own)',
    },
  );
}

/** The address of a namespace's eth0 and its MAC (`ip -j addr`), and whether the host side of its veth is here. */
export interface NetInspector {
  eth0(netns: string): Promise<{ ip: string; prefixLen: number; mac: string } | undefined>;
  linkExists(link: string): Promise<boolean>;
}

export function ipInspector(runner: Runner): NetInspector {
  return {
    async eth0(netns) {
      const r = await runner.run(['ip', '-n', netns, '-j', 'addr', 'show', 'dev', 'eth0'], {
        allowFail: true,
      });
      if (r.code !== 0) return undefined;
      const [link] = JSON.parse(r.stdout || '[]') as {
        address?: string;
        addr_info?: { family: string; local: string; prefixlen: number }[];
      }[];
      const inet = link?.addr_info?.find((a) => a.family === 'inet');
      return link?.address && inet
        ? { ip: inet.local, prefixLen: inet.prefixlen, mac: link.address }
        : undefined;
    },
    async linkExists(link) {
      return (await runner.run(['ip', 'link', 'show', 'dev', link], { allowFail: true })).code === 0;
    },
  };
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
  deps: { procRoot?: string; net?: NetInspector; hostVeth?: (name: string) => string } = {},
): Promise<AdoptedContainer> {
  const procRoot = deps.procRoot ?? '/proc';
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
      {
        phase: 'input',
        ...(st.status === 'paused'
          ? {
              hint:
                'a migration whose ferry was killed leaves its source paused: once the destination is known not to ' +
                `run it, runc --root ${runcRoot} resume ${name}`,
            }
          : {}),
      },
    );
  const config = await readConfig(st.bundle);
  validateConfig(config);
  const shape = netModeOf(config, name);
  const record: ContainerRecord = {
    name,
    createdAt: new Date().toISOString(),
    net: shape.mode,
    command: (config.process.args as string[]).slice(0, 256),
    origin: { kind: 'run' },
  };
  const out: AdoptedContainer = {
    record,
    bundle: st.bundle,
    cgroup: await cgroupOf(st.pid, procRoot),
    pid: st.pid,
  };
  if (shape.mode === 'own') {
    const eth0 = await deps.net?.eth0(shape.netns);
    const veth = deps.hostVeth?.(name);
    if (!eth0 || !veth || !(await deps.net?.linkExists(veth)))
      throw cannotMove(
        name,
        `joins ${shape.netns}, which has no eth0 with an IPv4 address on a veth ferry made (${veth ?? '?'})`,
      );
    record.ip = eth0.ip;
    record.mac = eth0.mac.toLowerCase();
    out.network = { netnsPrefix: shape.prefix, prefixLen: eth0.prefixLen };
  }
  return out;
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
