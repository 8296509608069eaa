// What a testbed's agents hold at one moment, counted from outside them: each agent's open file descriptors,
// threads, mounts it sees and resident memory; each host's cgroups, images and firewall rules; the testbed's network
// namespaces. Two counts taken at the same point of a repeated cycle must be equal (memory within a bound): what
// grows is a leak (the soak, bench/soak.ts).
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { hierarchies } from '../runtime/cgroups.ts';
import type { Runner } from '../runtime/exec.ts';
import type { TestbedState } from './testbed.ts';

export interface HostFootprint {
  host: string;
  agentPid: number;
  fds: number;
  threads: number;
  /**
   * Lines of the agent's /proc/PID/mountinfo that are the testbed's (below its directory, or its network
   * namespaces): the machine's other mounts come and go with whatever else runs on it.
   */
  mounts: number;
  rssBytes: number;
  /** Directories below the host's cgroup parent, in every hierarchy. */
  cgroups: number;
  /** Files and directories below the host's images, incoming, checkpoint, restore, upload and journal directories, and their bytes. */
  stateEntries: number;
  stateBytes: number;
  /** Files and directories anywhere in the host's state directory (its containers' bundles and records included). */
  hostFiles: number;
  /** iptables and nftables rules in the host's network namespace. */
  rules: number;
}

export interface TestbedFootprint {
  hosts: HostFootprint[];
  /** The testbed's network namespaces (hosts, client, containers). */
  netns: number;
  /** Firewall rules in the containers' network namespaces, all together. */
  containerRules: number;
}

/** The kinds of thing counted, for tables and comparisons. */
export const COUNTED = [
  'fds',
  'threads',
  'mounts',
  'cgroups',
  'stateEntries',
  'stateBytes',
  'hostFiles',
  'rules',
] as const satisfies readonly (keyof HostFootprint)[];

async function text(path: string): Promise<string> {
  return readFile(path, 'utf8').catch(() => '');
}

async function tree(dir: string): Promise<{ entries: number; bytes: number }> {
  let entries = 0;
  let bytes = 0;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return { entries, bytes };
  }
  for (const n of names) {
    const p = join(dir, n);
    const st = await stat(p).catch(() => undefined);
    if (!st) continue;
    entries++;
    if (st.isDirectory()) {
      const sub = await tree(p);
      entries += sub.entries;
      bytes += sub.bytes;
    } else bytes += st.size;
  }
  return { entries, bytes };
}

async function subdirs(dir: string): Promise<number> {
  let n = 0;
  const names = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of names)
    if (e.isDirectory()) {
      n++;
      n += await subdirs(join(dir, e.name));
    }
  return n;
}

/** Rules in one network namespace: iptables-save's rule lines and nft's ruleset lines (no counters, no comments). */
async function rulesIn(runner: Runner, netns: string): Promise<number> {
  const inNs = (argv: string[]) => ['nsenter', `--net=/run/netns/${netns}`, '--', ...argv];
  let n = 0;
  for (const ipt of ['iptables-save', 'ip6tables-save']) {
    const r = await runner.run(inNs([ipt]), { allowFail: true });
    n += r.stdout.split('\n').filter((l) => l.startsWith('-A ')).length;
  }
  const nft = await runner.run(inNs(['nft', 'list', 'ruleset']), { allowFail: true });
  n += nft.stdout.split('\n').filter((l) => l.trim() !== '' && !l.trim().startsWith('#')).length;
  return n;
}

/** Each agent's resident memory in bytes, by host. */
export async function agentRss(tb: TestbedState): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const h of tb.hosts) {
    const pid = Number((await text(join(tb.dir, 'hosts', h.name, 'agent.pid'))).trim());
    const kib = /^VmRSS:\s*(\d+)/m.exec(await text(`/proc/${pid}/status`))?.[1];
    out[h.name] = kib === undefined ? Number.NaN : Number(kib) * 1024;
  }
  return out;
}

/** Counts everything a testbed's agents hold now. */
export async function testbedFootprint(tb: TestbedState, runner: Runner): Promise<TestbedFootprint> {
  const hosts: HostFootprint[] = [];
  const levels = await hierarchies();
  for (const h of tb.hosts) {
    const hd = join(tb.dir, 'hosts', h.name);
    const pid = Number((await text(join(hd, 'agent.pid'))).trim());
    const status = await text(`/proc/${pid}/status`);
    const field = (k: string) => Number(new RegExp(`^${k}:\\s*(\\d+)`, 'm').exec(status)?.[1] ?? Number.NaN);
    let cgroups = 0;
    for (const root of levels) cgroups += await subdirs(join(root, h.cgroupParent));
    let stateEntries = 0;
    let stateBytes = 0;
    for (const d of ['images', 'incoming', 'checkpoints', 'restores', 'uploads', 'journal']) {
      const t = await tree(join(hd, d));
      stateEntries += t.entries;
      stateBytes += t.bytes;
    }
    hosts.push({
      host: h.name,
      agentPid: pid,
      fds: (await readdir(`/proc/${pid}/fd`).catch(() => [])).length,
      threads: field('Threads'),
      mounts: (await text(`/proc/${pid}/mountinfo`))
        .split('\n')
        .filter((l) => l.includes(`${tb.dir}/`) || l.includes(`/run/netns/${tb.prefix}-`)).length,
      rssBytes: field('VmRSS') * 1024,
      cgroups,
      stateEntries,
      stateBytes,
      hostFiles: (await tree(hd)).entries,
      rules: await rulesIn(runner, h.netns),
    });
  }
  const own = (await readdir('/run/netns').catch(() => [])).filter((n) => n.startsWith(`${tb.prefix}-`));
  const known = new Set([...tb.hosts.map((h) => h.netns), tb.client.netns]);
  let containerRules = 0;
  for (const ns of own) if (!known.has(ns)) containerRules += await rulesIn(runner, ns);
  return { hosts, netns: own.length, containerRules };
}

/**
 * What grew between two counts: no count may grow, the agents' memory may grow by `rssSlackBytes`. A count that
 * falls is no leak (a keep-alive connection to a peer that was open at the first count and closed since).
 */
export function footprintGrowth(
  before: TestbedFootprint,
  after: TestbedFootprint,
  rssSlackBytes: number,
): string[] {
  const out: string[] = [];
  if (after.netns > before.netns) out.push(`network namespaces ${before.netns} -> ${after.netns}`);
  if (after.containerRules > before.containerRules)
    out.push(`rules in container namespaces ${before.containerRules} -> ${after.containerRules}`);
  for (const a of after.hosts) {
    const b = before.hosts.find((x) => x.host === a.host);
    if (!b) continue;
    if (a.agentPid !== b.agentPid)
      out.push(`${a.host}: the agent restarted (pid ${b.agentPid} -> ${a.agentPid})`);
    for (const k of COUNTED) if (a[k] > b[k]) out.push(`${a.host}: ${k} ${b[k]} -> ${a[k]}`);
    if (a.rssBytes - b.rssBytes > rssSlackBytes)
      out.push(`${a.host}: agent RSS grew by ${((a.rssBytes - b.rssBytes) / 2 ** 20).toFixed(1)} MiB`);
  }
  return out;
}
