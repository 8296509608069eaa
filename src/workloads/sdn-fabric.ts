// The switches of the SDN experiment: Open vSwitch with the userspace datapath (`datapath_type=netdev`: no kernel
// module needed), run without systemd from private directories, inside one network namespace that reaches the
// controller's address. Two bridges in a line, two simulated hosts (network namespaces of their own) on each:
//
//   h1, h2 ── s1 ── s2 ── h3, h4
//
// Every name (namespaces, interfaces, bridges, the directory) starts with the fabric's prefix, so fabrics of
// different runs never collide, and `down()` removes all of it even after a failed `up()`.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Runner } from '../runtime/exec.ts';

export interface FabricOptions {
  /** 2-6 characters [a-z0-9]: the start of every name. */
  prefix: string;
  /** The network namespace the switches run in (it must reach `controller`). */
  switchNetns: string;
  /** ADDRESS:PORT of the OpenFlow controller. */
  controller: string;
  /**
   * OVS's inactivity probe (ms): after this long without a message from the controller a bridge sends an echo
   * request, and after as long again without an answer it drops the connection. Default: OVS's own (5 s).
   */
  inactivityProbeMs?: number;
}

export interface SimHost {
  name: string;
  netns: string;
  ip: string;
  mac: string;
  bridge: string;
}

export interface BridgeStatus {
  bridge: string;
  connected: boolean;
  secSinceConnect: number;
}

const SUBNET = '10.213.0';

export class SdnFabric {
  readonly dir: string;
  readonly bridges: string[];
  readonly hosts: SimHost[];
  private readonly db: string;
  private readonly runner: Runner;
  readonly o: FabricOptions;

  constructor(runner: Runner, o: FabricOptions) {
    this.runner = runner;
    this.o = o;
    if (!/^[a-z0-9]{2,6}$/.test(o.prefix))
      throw new Error(`fabric prefix ${o.prefix}: use 2-6 characters [a-z0-9]`);
    this.dir = `/run/ferry-sdn-${o.prefix}`;
    this.db = join(this.dir, 'db.sock');
    this.bridges = [`${o.prefix}s1`, `${o.prefix}s2`];
    this.hosts = [1, 2, 3, 4].map((i) => ({
      name: `h${i}`,
      netns: `${o.prefix}h${i}`,
      ip: `${SUBNET}.${i}`,
      mac: `02:fe:00:00:00:0${i}`,
      bridge: this.bridges[i <= 2 ? 0 : 1]!,
    }));
  }

  private sw(argv: string[], allowFail = false) {
    // OVS's run, db and log directories: the fabric's own (its bridges' OpenFlow sockets land in the run directory)
    const dirs = ['OVS_RUNDIR', 'OVS_DBDIR', 'OVS_LOGDIR'].map((v) => `${v}=${this.dir}`);
    return this.runner.run(['ip', 'netns', 'exec', this.o.switchNetns, 'env', ...dirs, ...argv], {
      allowFail,
      timeoutMs: 30_000,
    });
  }

  vsctl(...args: string[]) {
    return this.sw(['ovs-vsctl', `--db=unix:${this.db}`, '--timeout=20', ...args]);
  }

  ofctl(...args: string[]) {
    const [cmd, ...rest] = args;
    // a bridge is reached through its socket in the fabric's run directory
    const target = rest.map((a, i) =>
      i === 0 && this.bridges.includes(a) ? `unix:${join(this.dir, `${a}.mgmt`)}` : a,
    );
    return this.sw(['ovs-ofctl', '-O', 'OpenFlow13', cmd!, ...target]);
  }

  /** ovs-vswitchd's log: its rconn lines say when a bridge connects to or loses its controller. */
  get vswitchdLog(): string {
    return join(this.dir, 'ovs-vswitchd.log');
  }

  async up(): Promise<void> {
    await this.down();
    await mkdir(this.dir, { recursive: true });
    const d = this.dir;
    await this.runner.run([
      'ovsdb-tool',
      'create',
      join(d, 'conf.db'),
      '/usr/share/openvswitch/vswitch.ovsschema',
    ]);
    await this.sw([
      'ovsdb-server',
      join(d, 'conf.db'),
      `--remote=punix:${this.db}`,
      `--pidfile=${join(d, 'ovsdb-server.pid')}`,
      `--unixctl=${join(d, 'ovsdb-server.ctl')}`,
      `--log-file=${join(d, 'ovsdb-server.log')}`,
      '--detach',
      '--no-chdir',
    ]);
    await this.vsctl('--no-wait', 'init');
    await this.sw([
      'ovs-vswitchd',
      `unix:${this.db}`,
      `--pidfile=${join(d, 'ovs-vswitchd.pid')}`,
      `--unixctl=${join(d, 'ovs-vswitchd.ctl')}`,
      `--log-file=${this.vswitchdLog}`,
      '--detach',
      '--no-chdir',
    ]);
    for (const [i, br] of this.bridges.entries()) {
      // secure: a bridge that lost its controller keeps its flows and never falls back to acting alone
      await this.vsctl(
        'add-br',
        br,
        '--',
        'set',
        'bridge',
        br,
        'datapath_type=netdev',
        'fail_mode=secure',
        'protocols=OpenFlow13',
        `other-config:datapath-id=00000000000000${String(i + 1).padStart(2, '0')}`,
      );
    }
    // the link between the bridges
    const [l1, l2] = [`${this.o.prefix}l1`, `${this.o.prefix}l2`];
    await this.sw(['ip', 'link', 'add', l1, 'type', 'veth', 'peer', 'name', l2]);
    for (const l of [l1, l2]) await this.sw(['ip', 'link', 'set', l, 'up']);
    await this.vsctl('add-port', this.bridges[0]!, l1);
    await this.vsctl('add-port', this.bridges[1]!, l2);
    for (const h of this.hosts) {
      const outer = `${this.o.prefix}${h.name}`;
      await this.runner.run(['ip', 'netns', 'add', h.netns]);
      await this.sw(['ip', 'link', 'add', outer, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.netns]);
      await this.sw(['ip', 'link', 'set', outer, 'up']);
      const inNs = (...argv: string[]) => this.runner.run(['ip', 'netns', 'exec', h.netns, ...argv]);
      await inNs('ip', 'link', 'set', 'eth0', 'address', h.mac);
      await inNs('ip', 'addr', 'add', `${h.ip}/24`, 'brd', '+', 'dev', 'eth0');
      await inNs('ip', 'link', 'set', 'lo', 'up');
      await inNs('ip', 'link', 'set', 'eth0', 'up');
      // the userspace datapath hands veth frames on as they are: with checksum offload the kernel never fills in
      // UDP/TCP checksums and the receiver drops them
      await inNs('ethtool', '-K', 'eth0', 'tx', 'off');
      await this.vsctl('add-port', h.bridge, outer);
    }
    for (const br of this.bridges) {
      await this.vsctl('set-controller', br, `tcp:${this.o.controller}`);
      if (this.o.inactivityProbeMs !== undefined)
        await this.vsctl('set', 'controller', br, `inactivity_probe=${this.o.inactivityProbeMs}`);
    }
  }

  /** Waits until every bridge is connected to the controller. */
  async waitConnected(timeoutMs = 60_000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const st = await this.status().catch(() => []);
      if (st.length === this.bridges.length && st.every((s) => s.connected)) return;
      if (performance.now() > deadline)
        throw new Error(`the switches did not connect to ${this.o.controller} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Each bridge's controller connection as OVS reports it (`is_connected`, `sec_since_connect`). */
  async status(): Promise<BridgeStatus[]> {
    const out: BridgeStatus[] = [];
    const r = await this.vsctl('--format=json', '--columns=_uuid,is_connected,status', 'list', 'controller');
    const ctl = JSON.parse(r.stdout) as { data: unknown[][] };
    const byUuid = new Map<string, BridgeStatus>();
    for (const row of ctl.data) {
      const uuid = (row[0] as [string, string])[1];
      const connected = row[1] === true;
      const pairs = (row[2] as [string, [string, string][]])[1];
      const since = Number(pairs.find(([k]) => k === 'sec_since_connect')?.[1] ?? Number.NaN);
      byUuid.set(uuid, { bridge: '', connected, secSinceConnect: since });
    }
    for (const br of this.bridges) {
      const c = await this.vsctl('get', 'bridge', br, 'controller');
      const uuid = c.stdout.trim().replace(/[[\]]/g, '');
      const s = byUuid.get(uuid);
      if (s) out.push({ ...s, bridge: br });
    }
    return out;
  }

  /**
   * How many times each bridge has (re)started a connection to its controller, from ovs-vswitchd's log (rconn's
   * "connecting..." lines). A count that stays the same across a migration is a connection that was never lost.
   */
  async connectAttempts(): Promise<Record<string, number>> {
    const text = await readFile(this.vswitchdLog, 'utf8').catch(() => '');
    const out: Record<string, number> = {};
    for (const br of this.bridges) {
      out[br] = text
        .split('\n')
        .filter((l) => l.includes(`${br}<->tcp:`) && /connecting\.\.\./.test(l)).length;
    }
    return out;
  }

  /** rconn's lines about lost connections (for a report that says why). */
  async disconnectLines(): Promise<string[]> {
    const text = await readFile(this.vswitchdLog, 'utf8').catch(() => '');
    return text
      .split('\n')
      .filter((l) => /<->tcp:.*(disconnect|closed|dropped|timed out|no response)/.test(l));
  }

  /** Number of flows on `bridge` that send frames to `mac` (installed by the controller). */
  async flowsTo(bridge: string, mac: string): Promise<number> {
    const r = await this.ofctl('dump-flows', bridge, `dl_dst=${mac}`);
    return r.stdout.split('\n').filter((l) => l.includes('actions=')).length;
  }

  /**
   * Deletes the flows to `mac` on every bridge (and the neighbour entries of the hosts in `flush`): the next frame
   * to it is a packet-in again.
   */
  async forget(mac: string, flush: string[] = []): Promise<void> {
    // not strict: every flow at least as specific as "to this address" (the table-miss entry is not)
    for (const br of this.bridges) await this.ofctl('del-flows', br, `dl_dst=${mac}`);
    for (const netns of flush)
      await this.runner.run(['ip', 'netns', 'exec', netns, 'ip', 'neigh', 'flush', 'dev', 'eth0'], {
        allowFail: true,
      });
  }

  /** Stops OVS and removes the hosts, the links and the directory; safe to call on a fabric that is partly up. */
  async down(): Promise<void> {
    for (const name of ['ovs-vswitchd', 'ovsdb-server']) {
      const pid = Number((await readFile(join(this.dir, `${name}.pid`), 'utf8').catch(() => '')).trim());
      if (pid > 0) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          // already gone
        }
        for (let i = 0; i < 50; i++) {
          try {
            process.kill(pid, 0);
          } catch {
            break;
          }
          await new Promise((r) => setTimeout(r, 100));
        }
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
    for (const h of this.hosts) {
      await this.runner.run(['ip', 'netns', 'del', h.netns], { allowFail: true });
      await this.sw(['ip', 'link', 'del', `${this.o.prefix}${h.name}`], true);
    }
    await this.sw(['ip', 'link', 'del', `${this.o.prefix}l1`], true);
    // the userspace datapath's bridge ports are tap devices in the switches' namespace
    for (const br of this.bridges) await this.sw(['ip', 'link', 'del', br], true);
    await this.sw(['ip', 'link', 'del', 'ovs-netdev'], true);
    await rm(this.dir, { recursive: true, force: true });
  }
}
