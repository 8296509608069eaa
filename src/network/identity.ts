// A container's network identity on a host: its own namespace wired to the host's bridge (same IP and MAC on
// every host), or a floating address on the host's bridge. One object per host; containers are named.
import { createHash } from 'node:crypto';
import type { Runner } from '../runtime/exec.ts';
import { announce, type StagedAnnouncement, stageAnnouncement } from './arp.ts';
import { Firewall } from './firewall.ts';
import { type HoldStats, TrafficHold } from './hold.ts';
import { IpNet, type Neighbour } from './ip.ts';
import { NetnsLock } from './netns-lock.ts';

export type NetMode = 'none' | 'own' | 'host';

export interface NetIdentity {
  mode: NetMode;
  ip?: string;
  mac?: string;
}

export interface HostNetworkConfig {
  /** The host's LAN bridge (containers attach to it; floating addresses live on it). */
  bridge: string;
  /** Prefix of the container namespaces this host creates (unique per host on a shared machine). */
  netnsPrefix: string;
  prefixLen: number;
}

/** The announcement schedule after a move: now, then a few times over the next half second. */
export const ANNOUNCE_REPEATS_MS = [50, 150, 300, 500];

/** Same MAC on every host: derived from the address. */
export function macFor(ip: string): string {
  return `02:fc:${ip
    .split('.')
    .map((o) => Number(o).toString(16).padStart(2, '0'))
    .join(':')}`;
}

/** What hosts and migrations need of a host's container networking; the real one below, fakes in unit tests. */
export interface NetworkLike {
  netnsPath(name: string): string;
  create(name: string, id: NetIdentity, opts: { attached: boolean; locked: boolean }): Promise<void>;
  attach(name: string, id: NetIdentity): Promise<void>;
  detach(name: string, id: NetIdentity): Promise<void>;
  unlock(name: string, id: NetIdentity): Promise<void>;
  quiesce(name: string, id: NetIdentity): Promise<void>;
  reannounce(name: string, id: NetIdentity): void;
  neighbours(name: string, id: NetIdentity): Promise<Neighbour[]>;
  setNeighbours(name: string, id: NetIdentity, list: Neighbour[]): Promise<void>;
  /** Optional: prepares the unlock ahead of time (the real network; fakes need not). */
  stageUnlock?(name: string, id: NetIdentity): void;
  /** Optional: prepares the source's `quiesce` right before the freeze; `dropQuiesce` when it goes unused. */
  stageQuiesce?(name: string, id: NetIdentity): void;
  dropQuiesce?(name: string, id: NetIdentity): void;
  clearCriuLocks(name: string, id: NetIdentity): Promise<void>;
  destroy(name: string, id: NetIdentity): Promise<void>;
  /**
   * Optional (fakes need not): around the kill of a source copy whose sockets are live (decision 9), nothing it
   * sends as it dies may reach the client. A namespace of its own is cut off already (its link is down and goes
   * with it); a floating address shares the host's stack, so its packets are dropped and its sockets destroyed.
   */
  silence?(name: string, id: NetIdentity): Promise<void>;
  unsilence?(name: string, id: NetIdentity): Promise<void>;
  /** Optional: the commands that cut the identity off the LAN, for a process that outlives this one (dead-man). */
  cutOffArgv?(name: string, id: NetIdentity): string[][];
  /**
   * Optional (fakes need not), a destination's held switchover (decision 11). Right before the source freezes:
   * a hold that queues every packet for the container is installed and primed, and the announcement staged.
   */
  primeHold?(name: string, id: NetIdentity): Promise<void>;
  /** Once the source is locked: the address is announced here, where its packets are held. */
  holdTraffic?(name: string, id: NetIdentity): Promise<void>;
  /** At the commit, after `unlock`: what is held is delivered to the restored container. */
  releaseHold?(name: string, id: NetIdentity): Promise<void>;
  /** After the release: waits for the queue to drain, removes the hold and returns its figures. */
  finishHold?(name: string, id: NetIdentity): Promise<HoldStats | undefined>;
}

/** How long a released hold may take to drain before it is removed anyway (it takes milliseconds). */
const HOLD_DRAIN_MS = 2000;

export class ContainerNetwork implements NetworkLike {
  readonly cfg: HostNetworkConfig;
  private readonly runner: Runner;
  private readonly ip: IpNet;
  private readonly fw: Firewall;
  private readonly lock: NetnsLock;
  private readonly hold: TrafficHold;
  /** Announcements staged by primeHold, by container. */
  private readonly staged = new Map<string, StagedAnnouncement>();

  constructor(runner: Runner, cfg: HostNetworkConfig) {
    this.runner = runner;
    this.cfg = cfg;
    this.ip = new IpNet(runner);
    this.fw = new Firewall(runner);
    this.lock = new NetnsLock(runner);
    this.hold = new TrafficHold(runner);
  }

  netns(name: string): string {
    return `${this.cfg.netnsPrefix}-${name}`;
  }

  /** The ifb device that holds a floating address's packets (as short and stable as hostVeth). */
  holdIfb(name: string): string {
    return `fh${createHash('sha1').update(name).digest('hex').slice(0, 11)}`;
  }

  /** The preference of the bridge's ingress filter that redirects a floating address to its ifb. */
  holdPref(name: string): number {
    return 1000 + (Number.parseInt(createHash('sha1').update(name).digest('hex').slice(0, 6), 16) % 40000);
  }

  netnsPath(name: string): string {
    return `/run/netns/${this.netns(name)}`;
  }

  /** Host side of the container's veth: short (15 chars max) and stable for a name. */
  hostVeth(name: string): string {
    return `fv${createHash('sha1').update(name).digest('hex').slice(0, 11)}`;
  }

  /**
   * Creates the identity. `attached: false` leaves it cut off from the LAN (a migration destination before
   * switchover); `locked` also drops all IP traffic in it until `unlock`.
   */
  async create(name: string, id: NetIdentity, opts: { attached: boolean; locked: boolean }): Promise<void> {
    if (id.mode === 'own') {
      const ns = this.netns(name);
      const veth = this.hostVeth(name);
      await this.ip.delNetns(ns);
      await this.ip.addNetns(ns);
      await this.ip.addVeth(veth, `${veth}i`, ns, 'eth0', id.mac);
      await this.ip.addAddress('eth0', `${id.ip}/${this.cfg.prefixLen}`, ns);
      await this.ip.up('eth0', ns);
      await this.ip.setMaster(veth, this.cfg.bridge);
      if (opts.locked) await this.lock.lock(ns);
      if (opts.attached) await this.attach(name, id);
    } else if (id.mode === 'host') {
      if (opts.locked) await this.fw.dropAddress(id.ip!, name);
      if (opts.attached) await this.attach(name, id);
    }
  }

  async attach(name: string, id: NetIdentity): Promise<void> {
    if (id.mode === 'own') {
      await this.ip.up(this.hostVeth(name));
      announce(this.runner, this.netns(name), 'eth0', id.ip!);
    } else if (id.mode === 'host') {
      if (!(await this.ip.hasAddress(this.cfg.bridge, id.ip!)))
        await this.ip.addAddress(this.cfg.bridge, `${id.ip}/32`);
      announce(this.runner, undefined, this.cfg.bridge, id.ip!);
    }
  }

  /** Cuts the identity off the LAN (the source after its final dump). */
  async detach(name: string, id: NetIdentity): Promise<void> {
    if (id.mode === 'own') await this.ip.down(this.hostVeth(name));
    else if (id.mode === 'host') await this.ip.delAddress(this.cfg.bridge, `${id.ip}/32`);
  }

  /**
   * Right before the final dump: nothing reaches or leaves the container's address until `unlock` (on the
   * destination after restore, or here on rollback). ferry locks instead of CRIU (CRIU runs with
   * `network-lock skip`): the destination is prelocked the same way, and CRIU's own unlock would spawn
   * iptables inside the freeze. Host mode drops everything to the floating address, so a UDP datagram
   * arriving after the dump meets no closed socket and draws no ICMP error.
   */
  async quiesce(name: string, id: NetIdentity): Promise<void> {
    if (id.mode === 'own') await this.lock.lock(this.netns(name));
    else if (id.mode === 'host') await this.fw.dropAddress(id.ip!, name);
  }

  /** Source, right before the freeze: the lock is made ready (firewall.ts stageLock). */
  stageQuiesce(name: string, id: NetIdentity): void {
    if (id.mode === 'own') this.lock.stageLock(this.netns(name));
  }

  dropQuiesce(name: string, id: NetIdentity): void {
    if (id.mode === 'own') this.lock.dropStagedLock(this.netns(name));
  }

  /** Destination, at prepare: the unlock after the restore is made ready now (firewall.ts stageUnlock). */
  stageUnlock(name: string, id: NetIdentity): void {
    if (id.mode === 'own') this.lock.stageUnlock(this.netns(name));
  }

  async unlock(name: string, id: NetIdentity): Promise<void> {
    if (id.mode === 'own') await this.lock.unlock(this.netns(name));
    else if (id.mode === 'host') await this.fw.undropAddress(id.ip!, name);
  }

  /** Announces the address again over the next half second (after a restore). */
  reannounce(name: string, id: NetIdentity): void {
    if (id.mode === 'own') announce(this.runner, this.netns(name), 'eth0', id.ip!, ANNOUNCE_REPEATS_MS);
    else if (id.mode === 'host')
      announce(this.runner, undefined, this.cfg.bridge, id.ip!, ANNOUNCE_REPEATS_MS);
  }

  async neighbours(name: string, id: NetIdentity): Promise<Neighbour[]> {
    if (id.mode !== 'own') return [];
    return this.ip.neighbours('eth0', this.netns(name));
  }

  async setNeighbours(name: string, id: NetIdentity, list: Neighbour[]): Promise<void> {
    if (id.mode !== 'own') return;
    for (const n of list) await this.ip.setNeighbour('eth0', n, this.netns(name));
  }

  /** Removes the lock rules CRIU leaves after a dump (in the namespace, or per connection on the host). */
  async clearCriuLocks(name: string, id: NetIdentity): Promise<void> {
    if (id.mode === 'own') await this.fw.clearCriuNetnsLock(this.netns(name));
    else if (id.mode === 'host') await this.fw.clearCriuConnectionLocks(id.ip!);
  }

  cutOffArgv(name: string, id: NetIdentity): string[][] {
    if (id.mode === 'own') return [['ip', 'link', 'set', 'dev', this.hostVeth(name), 'down']];
    if (id.mode === 'host') return [this.fw.fromRule('-I', id.ip!, name)];
    return [];
  }

  async silence(name: string, id: NetIdentity): Promise<void> {
    if (id.mode === 'host') await this.fw.dropFrom(id.ip!, name);
  }

  async unsilence(name: string, id: NetIdentity): Promise<void> {
    if (id.mode !== 'host') return;
    await this.fw.killSockets(id.ip!);
    await this.fw.undropFrom(id.ip!, name);
  }

  async primeHold(name: string, id: NetIdentity): Promise<void> {
    try {
      if (id.mode === 'own') {
        // up, on the bridge, but what the bridge sends the container waits in the qdisc
        await this.hold.prime(this.hostVeth(name));
        this.stage(name, stageAnnouncement(this.netns(name), 'eth0', id.ip!));
      } else if (id.mode === 'host') {
        await this.hold.redirect(this.cfg.bridge, id.ip!, this.holdIfb(name), this.holdPref(name));
        // the address now, not at the announcement: each millisecond after the source's lock costs packets. A
        // neighbour that asks for it meanwhile may be answered from here too; its packets then wait here as well
        if (!(await this.ip.hasAddress(this.cfg.bridge, id.ip!)))
          await this.ip.addAddress(this.cfg.bridge, `${id.ip}/32`);
        this.stage(name, stageAnnouncement(undefined, this.cfg.bridge, id.ip!));
      }
    } catch (err) {
      await this.dropHold(name, id);
      throw err;
    }
  }

  async holdTraffic(name: string, id: NetIdentity): Promise<void> {
    const staged = this.staged.get(name);
    this.staged.delete(name);
    if (staged) staged.fire();
    else await this.attach(name, id);
  }

  async releaseHold(name: string, id: NetIdentity): Promise<void> {
    if (id.mode === 'own') await this.hold.release(this.hostVeth(name));
    else if (id.mode === 'host') await this.hold.release(this.holdIfb(name));
  }

  async finishHold(name: string, id: NetIdentity): Promise<HoldStats | undefined> {
    if (id.mode === 'own') return this.hold.drainAndRemove(this.hostVeth(name), HOLD_DRAIN_MS);
    if (id.mode !== 'host') return undefined;
    const stats = await this.hold.drainAndRemove(this.holdIfb(name), HOLD_DRAIN_MS);
    await this.hold.unredirect(this.cfg.bridge, this.holdIfb(name), this.holdPref(name));
    return stats;
  }

  /** Removes a hold and drops what it holds (an abort: nothing may reach a copy that will not run). */
  private async dropHold(name: string, id: NetIdentity): Promise<void> {
    this.staged.get(name)?.drop();
    this.staged.delete(name);
    if (id.mode === 'own') {
      await this.hold.remove(this.hostVeth(name));
      await this.ip.down(this.hostVeth(name));
    } else if (id.mode === 'host') {
      await this.hold.unredirect(this.cfg.bridge, this.holdIfb(name), this.holdPref(name));
      await this.ip.delAddress(this.cfg.bridge, `${id.ip}/32`);
    }
  }

  private stage(name: string, a: StagedAnnouncement): void {
    this.staged.get(name)?.drop();
    this.staged.set(name, a);
  }

  async destroy(name: string, id: NetIdentity): Promise<void> {
    this.staged.get(name)?.drop();
    this.staged.delete(name);
    if (id.mode === 'own') {
      this.lock.dropStagedUnlock(this.netns(name));
      this.lock.dropStagedLock(this.netns(name));
      this.hold.unstage(this.hostVeth(name));
      await this.ip.delLink(this.hostVeth(name));
      await this.ip.delNetns(this.netns(name));
    } else if (id.mode === 'host') {
      // the hold first: what it holds is dropped, never delivered to an address about to go
      await this.hold.unredirect(this.cfg.bridge, this.holdIfb(name), this.holdPref(name));
      await this.fw.undropAddress(id.ip!, name);
      await this.fw.undropFrom(id.ip!, name);
      await this.fw.clearCriuConnectionLocks(id.ip!);
      await this.ip.delAddress(this.cfg.bridge, `${id.ip}/32`);
    }
  }

  async leftovers(name: string, id: NetIdentity): Promise<string[]> {
    const out: string[] = [];
    if (id.mode === 'own' && (await this.ip.listNetns()).includes(this.netns(name))) {
      out.push(`netns ${this.netns(name)}`);
      out.push(...(await this.lock.leftovers(this.netns(name))));
    }
    if (id.mode === 'host') {
      if (await this.ip.hasAddress(this.cfg.bridge, id.ip!)) out.push(`address ${id.ip}`);
      out.push(...(await this.fw.leftovers({ address: id.ip! })));
    }
    return out;
  }
}
