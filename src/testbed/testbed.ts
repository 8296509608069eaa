// Simulated hosts on one machine (docs/background.md, the testbed): a LAN bridge, a network namespace and an agent per host,
// a client namespace. Everything carries the testbed's prefix; `down` removes all of it, also after a crash.
// Over 400 lines: up and down are one inventory of the same prefixed objects; split, the two would drift apart.

import { mkdir, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAgentConfig } from '../agent/config.ts';
import { AgentClient } from '../api/client.ts';
import { parseControllerConfig } from '../cluster/config.ts';
import {
  type ClusterFile,
  clearCurrentCluster,
  setCurrentCluster,
  stateRoot,
  writeClusterFile,
} from '../core/cluster-file.ts';
import { FerryError } from '../core/errors.ts';
import { IpNet } from '../network/ip.ts';
import type { BundlePolicy } from '../runtime/bundle-policy.ts';
import { removeCgroups } from '../runtime/cgroups.ts';
import { alive, readPid, startDaemon, stopProcess, writePid } from '../runtime/daemon.ts';
import { ProcessRunner, type Runner } from '../runtime/exec.ts';
import { mountsUnder, mountTmpfs, umount } from '../runtime/mounts.ts';
import { ClusterCA, tlsClientOptions } from '../runtime/pki.ts';
import { Runc } from '../runtime/runc.ts';
import { setCongestionControl, testbedCongestionControl } from './congestion.ts';
import {
  AGENT_PORT,
  ANY_TESTBED_LINK,
  ANY_TESTBED_NETNS,
  checkTestbedName,
  HOST_BRIDGE,
  type HostLayout,
  pickSubnet,
  type TestbedLayout,
  testbedLayout,
} from './layout.ts';
import { acquireMachineLock } from './machine-lock.ts';
import { startTestbedSsh, stopTestbedSsh, type TestbedSsh } from './ssh.ts';

export interface TestbedState extends TestbedLayout {
  dir: string;
  clusterFile: string;
  createdAt: string;
  rate?: string;
  rates?: Record<string, string>;
  /** The default cluster's file right after this testbed came up (this one's, or the one that stayed). */
  defaultCluster?: string;
  /** With `--ssh`: an sshd on every host, and the client's config (ssh.ts). */
  ssh?: TestbedSsh;
  /** The extra environment each host's agent was brought up with: `testbed agent start` starts it so again. */
  agentEnv?: Record<string, NodeJS.ProcessEnv>;
  /** The TCP congestion control its namespaces were set to, when not the machine's default (congestion.ts). */
  congestionControl?: string;
}

export interface TestbedDeps {
  /** Default: real child processes (the CLI passes none). */
  runner?: Runner;
  env?: NodeJS.ProcessEnv;
  /** argv that starts the ferry CLI (node + flags + main script). */
  ferryArgv: string[];
  log?: (msg: string) => void;
}

export interface UpOptions {
  name: string;
  hosts: string[];
  /** Bandwidth of every host's link (tc tbf), unless `rates` names the host. */
  rate?: string;
  rates?: Record<string, string>;
  /**
   * Exceptions to the agents' bundle policy (runtime/bundle-policy.ts), as an operator would write them into each
   * agent's config: test suites whose bundles bind host directories or keep runc's default capabilities need them.
   */
  bundlePolicy?: Partial<BundlePolicy>;
  /** Also run a controller (in the root namespace, on the LAN bridge's address) with every agent reporting to it. */
  controller?: {
    heartbeatMs?: number;
    heartbeatTimeoutMs?: number;
    rebalanceIntervalMs?: number;
    targetPercent?: number;
    cooldownMs?: number;
    /** What each simulated host declares (they all share this machine). */
    capacity?: { cores: number; memoryBytes: number };
  };
  /** Extra environment per host agent, e.g. FERRY_FAULTS for fault-injection tests. */
  agentEnv?: Record<string, NodeJS.ProcessEnv>;
  /** The TCP congestion control of the hosts and the client (default: a stock one, congestion.ts). */
  congestionControl?: string;
  /** Make this testbed the default cluster even if another one is (by default only when none is). */
  makeDefault?: boolean;
  /** Also run an OpenSSH server on every host, with keys and a client config of the testbed's own (ssh.ts). */
  ssh?: boolean;
}

export function testbedDir(name: string, env: NodeJS.ProcessEnv = process.env): string {
  return join(stateRoot(env), 'testbeds', checkTestbedName(name));
}

export async function loadTestbed(
  name: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<TestbedState | undefined> {
  try {
    return JSON.parse(await readFile(join(testbedDir(name, env), 'testbed.json'), 'utf8')) as TestbedState;
  } catch {
    return undefined;
  }
}

export async function listTestbeds(env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  try {
    return (await readdir(join(stateRoot(env), 'testbeds'))).filter((n) => /^[a-z0-9]{1,6}$/.test(n));
  } catch {
    return [];
  }
}

function hostDir(tb: TestbedState, h: HostLayout): string {
  return join(tb.dir, 'hosts', h.name);
}

/** Where testbeds coming up at once take turns to pick their subnet (machine-wide, like the subnets). */
const SUBNET_LOCK = '/run/ferry-testbed-subnet.lock';

export async function testbedUp(opts: UpOptions, deps: TestbedDeps): Promise<TestbedState> {
  // Two testbeds coming up at once would both see the same subnet free: one picks it and puts its address on the
  // bridge before the next one looks.
  const unlock = await acquireMachineLock(SUBNET_LOCK);
  try {
    return await bringUp(opts, deps, unlock);
  } finally {
    await unlock();
  }
}

async function bringUp(
  opts: UpOptions,
  deps: TestbedDeps,
  unlock: () => Promise<void>,
): Promise<TestbedState> {
  const env = deps.env ?? process.env;
  const log = deps.log ?? (() => {});
  const runner = deps.runner ?? new ProcessRunner();
  const ip = new IpNet(runner);
  const dir = testbedDir(opts.name, env);
  if (await loadTestbed(opts.name, env)) {
    throw new FerryError('FERRY_E_TESTBED', `testbed ${opts.name} is already up`, {
      phase: 'testbed',
      hint: `ferry testbed down${opts.name === 'tb' ? '' : ` --name ${opts.name}`} first`,
    });
  }
  // Two testbeds coming up at once would both see the same subnet free: picking it and putting its address on
  // the bridge happen under a lock every testbed on this machine shares.
  const subnet = pickSubnet(await ip.ipv4Networks());
  const layout = testbedLayout(opts.name, opts.hosts, subnet);
  const congestionControl = await testbedCongestionControl(opts.congestionControl);
  const tb: TestbedState = {
    ...layout,
    dir,
    clusterFile: join(dir, 'cluster.json'),
    createdAt: new Date().toISOString(),
    ...(opts.rate ? { rate: opts.rate } : {}),
    ...(opts.rates ? { rates: opts.rates } : {}),
    ...(opts.agentEnv ? { agentEnv: opts.agentEnv } : {}),
    ...(congestionControl ? { congestionControl } : {}),
  };
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // written first: a crash from here on is still cleaned up by `down`
  await writeFile(join(dir, 'testbed.json'), JSON.stringify(tb, null, 2));
  try {
    log(`LAN ${subnet}.0/24 on bridge ${tb.bridge}`);
    await ip.delLink(tb.bridge);
    await ip.addBridge(tb.bridge, tb.bridgeMac);
    await ip.addAddress(tb.bridge, `${tb.bridgeAddress}/24`);
    await unlock(); // the subnet now shows as taken
    await ip.up(tb.bridge);
    const ns = [...tb.hosts.map((h) => ({ ...h })), { ...tb.client, name: 'client', index: -1 }];
    for (const n of ns) {
      const isHost = n.index >= 0;
      await ip.delNetns(n.netns);
      await ip.addNetns(n.netns);
      if (congestionControl) await setCongestionControl(runner, n.netns, congestionControl);
      await ip.addVeth(n.vethOuter, n.vethInner, n.netns, 'eth0', isHost ? undefined : n.mac);
      await ip.setMaster(n.vethOuter, tb.bridge);
      await ip.up(n.vethOuter);
      if (isHost) {
        // a host bridges its containers onto the LAN: eth0 is its uplink, br0 carries its address
        await ip.addBridge(HOST_BRIDGE, n.mac, n.netns);
        await ip.setMaster('eth0', HOST_BRIDGE, n.netns);
        await ip.addAddress(HOST_BRIDGE, `${n.address}/24`, n.netns);
        await ip.up(HOST_BRIDGE, n.netns);
      } else {
        await ip.addAddress('eth0', `${n.address}/24`, n.netns);
      }
      await ip.up('eth0', n.netns);
      const rate = (isHost ? opts.rates?.[n.name] : undefined) ?? opts.rate;
      if (rate) {
        await ip.shape(n.vethOuter, rate);
        await ip.shape('eth0', rate, n.netns);
      }
    }
    log('certificates');
    const ca = new ClusterCA(join(dir, 'pki'));
    await ca.ensure();
    const hostCerts = new Map<string, { cert: string; key: string; ca: string }>();
    for (const h of tb.hosts)
      hostCerts.set(h.name, await ca.issue(h.name, { role: 'agent', ips: [h.address] }));
    const cli = await ca.issue('cli', { role: 'client' });
    const controller = opts.controller
      ? { name: 'controller', address: tb.bridgeAddress, port: CONTROLLER_PORT }
      : undefined;
    if (controller && opts.controller) {
      const certs = await ca.issue('controller', { role: 'controller', ips: [tb.bridgeAddress] });
      const cdir = join(dir, 'controller');
      await mkdir(cdir, { recursive: true, mode: 0o700 });
      const c = opts.controller;
      await writeConfig(
        join(cdir, 'controller.json'),
        {
          name: 'controller',
          // the root namespace is shared by every testbed: its own address, not 0.0.0.0
          listen: { address: tb.bridgeAddress, port: CONTROLLER_PORT },
          tls: certs,
          store: { kind: 'sqlite', path: join(cdir, 'state.db') },
          heartbeatTimeoutMs: c.heartbeatTimeoutMs ?? 120_000,
          rebalanceIntervalMs: c.rebalanceIntervalMs ?? 60_000,
          ...(c.targetPercent ? { targetPercent: c.targetPercent } : {}),
          ...(c.cooldownMs !== undefined ? { cooldownMs: c.cooldownMs } : {}),
          dashboard: { port: DASHBOARD_PORT },
        },
        parseControllerConfig,
      );
      await startController(tb, deps);
    }
    const cluster: ClusterFile = {
      name: tb.name,
      testbed: tb.name,
      tls: cli,
      hosts: tb.hosts.map((h) => ({ name: h.name, address: h.address, port: AGENT_PORT })),
      client: { netns: tb.client.netns, address: tb.client.address },
      lan: { subnet: tb.subnet, prefixLen: 24 },
      ...(controller ? { controller } : {}),
    };
    for (const h of tb.hosts) {
      const hd = hostDir(tb, h);
      await mkdir(join(hd, 'images'), { recursive: true, mode: 0o700 });
      await mountTmpfs(runner, join(hd, 'images'));
      const certs = hostCerts.get(h.name)!;
      await writeConfig(
        join(hd, 'agent.json'),
        {
          host: h.name,
          // as an operator's agent: on every address of its (network namespace's) host, telling its peers the one
          // they reach it at
          listen: { address: '0.0.0.0', port: AGENT_PORT },
          advertise: h.address,
          stateDir: hd,
          imagesDir: join(hd, 'images'),
          cgroupParent: h.cgroupParent,
          network: { bridge: HOST_BRIDGE, netnsPrefix: `${h.netns}-c`, prefixLen: 24 },
          // the other hosts: the only agents it takes migrations from and sends them to
          peers: cluster.hosts.filter((x) => x.name !== h.name),
          reservedAddresses: [tb.bridgeAddress, tb.client.address, ...tb.hosts.map((p) => p.address)],
          ...(controller ? { controller } : {}),
          ...(opts.bundlePolicy ? { bundlePolicy: opts.bundlePolicy } : {}),
          ...(opts.controller
            ? {
                heartbeat: {
                  intervalMs: opts.controller.heartbeatMs ?? 3000,
                  fullEvery: 10,
                  cpuDeltaPercent: 5,
                  memoryDeltaBytes: 16 << 20,
                },
                capacity: opts.controller.capacity ?? { cores: 1, memoryBytes: 4 * 2 ** 30 },
              }
            : {}),
          tls: certs,
        },
        (raw, source) => parseAgentConfig(raw, {}, source),
      );
    }
    await Promise.all(tb.hosts.map((h) => startAgent(tb, h, deps, opts.agentEnv?.[h.name])));
    if (opts.ssh) {
      log('ssh servers');
      tb.ssh = await startTestbedSsh(tb, runner, env);
      await writeFile(join(dir, 'testbed.json'), JSON.stringify(tb, null, 2));
    }
    await writeClusterFile(tb.clusterFile, cluster);
    tb.defaultCluster = await setCurrentCluster(tb.clusterFile, env, { force: opts.makeDefault === true });
    log(`testbed ${tb.name} up: ${tb.hosts.map((h) => `${h.name}=${h.address}`).join(' ')}`);
    return tb;
  } catch (err) {
    await testbedDown(tb.name, deps).catch(() => {});
    throw err instanceof FerryError
      ? err
      : new FerryError('FERRY_E_TESTBED', `testbed up failed: ${(err as Error).message}`, {
          cause: err,
          phase: 'testbed',
        });
  }
}

const CONTROLLER_PORT = 7480;
/** The controller's dashboard (`ferry dashboard` prints its login URL). */
const DASHBOARD_PORT = 7481;

/**
 * Writes a daemon's config file after checking it against the daemon's own schema, so that the testbed never
 * runs its agents and controller on a file an operator's daemon would refuse.
 */
async function writeConfig(
  file: string,
  config: object,
  check: (raw: unknown, source: string) => unknown,
): Promise<void> {
  check(config, file);
  await writeFile(file, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
}

/** Starts (or restarts) the testbed's controller and waits until it answers. */
export async function startController(
  tb: TestbedState,
  deps: TestbedDeps,
  extraEnv?: NodeJS.ProcessEnv,
): Promise<number> {
  const cdir = join(tb.dir, 'controller');
  await stopController(tb);
  const argv = [...deps.ferryArgv, 'controller', '--config', join(cdir, 'controller.json')];
  const pid = startDaemon(argv, join(cdir, 'controller.log'), {
    ...(deps.env ?? process.env),
    ...(extraEnv ?? {}),
  });
  await writePid(join(cdir, 'controller.pid'), pid);
  return waitHealthy(
    tb,
    { name: 'controller', address: tb.bridgeAddress, port: CONTROLLER_PORT },
    pid,
    join(cdir, 'controller.log'),
  );
}

export async function stopController(
  tb: TestbedState,
  signal: 'SIGKILL' | 'SIGTERM' = 'SIGTERM',
): Promise<void> {
  const pid = await readPid(join(tb.dir, 'controller', 'controller.pid'));
  if (!pid || !alive(pid)) return;
  if (signal === 'SIGKILL') {
    process.kill(pid, 'SIGKILL');
    while (alive(pid)) await new Promise((r) => setTimeout(r, 20));
  } else await stopProcess(pid);
}

function agentPidFile(tb: TestbedState, h: HostLayout): string {
  return join(hostDir(tb, h), 'agent.pid');
}

/** Starts (or restarts) the agent of one host inside its network namespace, and waits until it answers. */
export async function startAgent(
  tb: TestbedState,
  h: HostLayout,
  deps: TestbedDeps,
  extraEnv?: NodeJS.ProcessEnv,
): Promise<number> {
  const hd = hostDir(tb, h);
  const old = await readPid(agentPidFile(tb, h));
  if (old && alive(old)) await stopProcess(old);
  // nsenter --net switches only the network namespace; `ip netns exec` would remount /sys and break runc
  const argv = [
    'nsenter',
    `--net=/run/netns/${h.netns}`,
    '--',
    ...deps.ferryArgv,
    'agent',
    '--config',
    join(hd, 'agent.json'),
  ];
  const env = { ...(deps.env ?? process.env), ...(extraEnv ?? {}) };
  const pid = startDaemon(argv, join(hd, 'agent.log'), env);
  await writePid(agentPidFile(tb, h), pid);
  return waitHealthy(tb, { name: h.name, address: h.address, port: AGENT_PORT }, pid, join(hd, 'agent.log'));
}

/** Waits until a daemon of the testbed answers on its API (with the CLI's certificate); says why when it dies. */
async function waitHealthy(
  tb: TestbedState,
  ep: { name: string; address: string; port: number },
  pid: number,
  logFile: string,
): Promise<number> {
  const pki = join(tb.dir, 'pki');
  const client = new AgentClient(
    ep,
    tlsClientOptions({ ca: join(pki, 'ca.crt'), cert: join(pki, 'cli.crt'), key: join(pki, 'cli.key') }),
    { timeoutMs: 2000 },
  );
  try {
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        await client.health();
        return pid;
      } catch (err) {
        if (!alive(pid) || Date.now() > deadline) {
          let logTail = '';
          try {
            logTail = (await readFile(logFile, 'utf8')).trim().split('\n').slice(-5).join('\n');
          } catch {
            // no log
          }
          throw new FerryError(
            'FERRY_E_TESTBED',
            `${ep.name} did not start: ${(err as Error).message}\n${logTail}`,
            {
              phase: 'testbed',
            },
          );
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } finally {
    client.close();
  }
}

export async function stopAgent(
  tb: TestbedState,
  h: HostLayout,
  signal: 'SIGKILL' | 'SIGTERM' = 'SIGTERM',
): Promise<void> {
  const pid = await readPid(agentPidFile(tb, h));
  if (!pid) return;
  if (signal === 'SIGKILL') {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
    while (alive(pid)) await new Promise((r) => setTimeout(r, 20));
  } else {
    await stopProcess(pid);
  }
}

/**
 * `ferry testbed agent kill|start|restart HOST`: kill is a SIGKILL of the agent alone (its runc, CRIU and dead-man
 * switches left running, as a crash leaves them); start brings it up with the environment it first had, as a
 * supervisor would; restart is both. Returns the new agent's pid (start, restart).
 */
export async function controlAgent(
  name: string,
  action: 'kill' | 'start' | 'restart',
  host: string,
  deps: TestbedDeps,
): Promise<{ pid?: number }> {
  const tb = await loadTestbed(name, deps.env);
  if (!tb)
    throw new FerryError('FERRY_E_TESTBED', `no testbed named ${name} is up`, {
      phase: 'input',
      hint: 'ferry testbed up first (or --name NAME)',
    });
  const h = tb.hosts.find((x) => x.name === host);
  if (!h)
    throw new FerryError('FERRY_E_HOST_UNKNOWN', `testbed ${name} has no host ${host}`, {
      phase: 'input',
      hint: `its hosts: ${tb.hosts.map((x) => x.name).join(', ')}`,
    });
  if (action !== 'start') await stopAgent(tb, h, 'SIGKILL');
  if (action === 'kill') return {};
  const pid = await readPid(agentPidFile(tb, h));
  if (action === 'start' && pid && alive(pid)) return { pid };
  return { pid: await startAgent(tb, h, deps, tb.agentEnv?.[h.name]) };
}

async function agentPidsOf(dir: string): Promise<number[]> {
  // any agent started with a config under this testbed's directory, even if its pid file is gone
  const pids: number[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const cmd = (await readFile(`/proc/${e}/cmdline`, 'utf8')).split('\0');
      const i = cmd.indexOf('--config');
      if (cmd.includes('agent') && i >= 0 && cmd[i + 1]?.startsWith(`${dir}/`)) pids.push(Number(e));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

/**
 * Kills whatever still runs with a path of this testbed on its command line (runc, CRIU's lazy-pages daemon), with
 * its whole process group (runc's CRIU has no such path, but shares runc's group).
 */
async function killProcessesUnder(dir: string): Promise<void> {
  const own = process.pid;
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === own) continue;
    try {
      const cmd = await readFile(`/proc/${e}/cmdline`, 'utf8');
      if (!cmd.includes(`${dir}/`)) continue;
      const stat = await readFile(`/proc/${e}/stat`, 'utf8');
      const pgid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
      const ownPgid = Number((await readFile('/proc/self/stat', 'utf8')).split(') ')[1]?.split(' ')[2]);
      if (pgid > 1 && pgid !== ownPgid) process.kill(-pgid, 'SIGKILL');
      process.kill(Number(e), 'SIGKILL');
    } catch {
      // exited meanwhile
    }
  }
}

/**
 * Kills every process still in one of `names`' network namespaces: a simulated host going down takes what runs
 * on it along, also what nothing else names (an SSH session whose connection sshd had not yet forked when its
 * sessions were listed; without it, such a session outlives its namespace, its peer gone without a word).
 */
async function killProcessesInNetns(names: string[]): Promise<void> {
  const inodes = new Set<string>();
  for (const ns of names) {
    try {
      inodes.add(String((await stat(`/run/netns/${ns}`)).ino));
    } catch {
      // gone
    }
  }
  if (inodes.size === 0) return;
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      const ino = /^net:\[(\d+)\]$/.exec(await readlink(`/proc/${e}/ns/net`))?.[1];
      if (ino && inodes.has(ino)) process.kill(Number(e), 'SIGKILL');
    } catch {
      // exited meanwhile, or a kernel thread
    }
  }
}

/** Removes one testbed (by name), or with `all` every testbed and every object with a testbed prefix. */
export async function testbedDown(name: string | 'all', deps: TestbedDeps): Promise<string[]> {
  const env = deps.env ?? process.env;
  const runner = deps.runner ?? new ProcessRunner();
  const ip = new IpNet(runner);
  const names = name === 'all' ? await listTestbeds(env) : [checkTestbedName(name)];
  const removed: string[] = [];
  for (const n of names) {
    const dir = testbedDir(n, env);
    const tb = await loadTestbed(n, env);
    const prefix = `fy${n}`;
    for (const pid of await agentPidsOf(dir)) await stopProcess(pid, 2000);
    let hostNames: string[] = [];
    try {
      hostNames = await readdir(join(dir, 'hosts'));
    } catch {
      // none
    }
    await stopTestbedSsh(dir, hostNames);
    await killProcessesUnder(dir);
    // containers: runc knows them per host root
    const hostDirs = hostNames.map((h) => join(dir, 'hosts', h));
    for (const hd of hostDirs) {
      const runc = new Runc(runner, { root: join(hd, 'runc') });
      for (const c of await runc.list()) await runc.destroy(c.id);
    }
    await removeCgroups((base) => base.startsWith(`${prefix}-`));
    let mountinfo = '';
    try {
      mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
    } catch {
      // no procfs?
    }
    for (const m of await mountsUnder(dir, mountinfo)) await umount(runner, m);
    const namespaces = (await ip.listNetns()).filter((ns) => ns.startsWith(`${prefix}-`));
    await killProcessesInNetns(namespaces);
    for (const ns of namespaces) await ip.delNetns(ns);
    for (const l of await ip.listLinks())
      if (l === `${prefix}br` || new RegExp(`^${prefix}(h\\d+|i\\d+|c|ci)$`).test(l)) await ip.delLink(l);
    await rm(dir, { recursive: true, force: true });
    if (tb) await clearCurrentCluster(tb.clusterFile, env);
    removed.push(n);
  }
  if (name === 'all') {
    // leftovers of testbeds whose state directory is gone
    await removeCgroups((base) => ANY_TESTBED_NETNS.test(base));
    for (const ns of await ip.listNetns()) if (ANY_TESTBED_NETNS.test(ns)) await ip.delNetns(ns);
    for (const l of await ip.listLinks()) if (ANY_TESTBED_LINK.test(l)) await ip.delLink(l);
  }
  return removed;
}
