// Holds a container's incoming packets through a switchover instead of dropping them (decision 11). A tbf qdisc at
// 8 bit/s whose bucket was emptied by one full-size frame (primed) passes nothing and queues everything; a
// `tc qdisc change` to 10 Gbit/s and one frame to wake the queue deliver what it holds, in order, within
// milliseconds. This kernel has no netem, no plug qdisc and no nftables queue; tbf and ifb are what it has.
// Own namespace: the qdisc sits on the host side of the container's veth (the egress toward the container).
// Floating address: the bridge's ingress redirects the address's packets to an ifb device that carries the qdisc.
import { FerryError } from '../core/errors.ts';
import { type CommandSession, type Runner, startSession } from '../runtime/exec.ts';

/** Bytes a hold queues at most; past it packets are dropped (the client retransmits them). */
export const HOLD_LIMIT_BYTES = 16 * 1024 * 1024;
/** How long prime() waits for its frame to be counted by the qdisc. */
const PRIME_WAIT_MS = 2000;
const ETHERNET_HEADER = 14;
/** IPv4 and ICMP headers: a ping of `mtu - 28` data bytes fills one frame. */
const PING_HEADERS = 28;

export interface HoldStats {
  /** Packets and bytes the qdisc passed (the priming frame included). */
  packets: number;
  bytes: number;
  dropped: number;
  /** What it holds now. */
  backlogPackets: number;
  backlogBytes: number;
}

/** Reads `tc -s qdisc show dev D root` output; undefined when no tbf is there. */
export function parseTbfStats(out: string): HoldStats | undefined {
  if (!/qdisc tbf /.test(out)) return undefined;
  const sent = /Sent (\d+) bytes (\d+) pkt \(dropped (\d+)/.exec(out);
  const backlog = /backlog (\d+)b (\d+)p/.exec(out);
  return {
    bytes: Number(sent?.[1] ?? 0),
    packets: Number(sent?.[2] ?? 0),
    dropped: Number(sent?.[3] ?? 0),
    backlogBytes: Number(backlog?.[1] ?? 0),
    backlogPackets: Number(backlog?.[2] ?? 0),
  };
}

/** One broadcast ping out of `dev` only: no neighbour to resolve, and a container ignores broadcast echoes. */
function pingArgv(dev: string, dataBytes: number): string[] {
  return ['busybox', 'ping', '-c', '1', '-W', '1', '-s', String(dataBytes), '-I', dev, '255.255.255.255'];
}

/** A command that waits for one line on its stdin, then runs (the spawn is paid ahead of time). */
export function stagedArgv(argv: string[]): string[] {
  return ['sh', '-c', 'read x && exec "$@"', 'sh', ...argv];
}

/** The qdiscs of the holds on this host, by device. */
export class TrafficHold {
  private readonly runner: Runner;
  /** The release, spawned at prime: a `tc -batch -` that changes the rate, and a ping that wakes the queue. */
  private readonly staged = new Map<string, { change: CommandSession; kick: CommandSession }>();

  constructor(runner: Runner) {
    this.runner = runner;
  }

  /**
   * Installs the hold on `dev`'s egress, brings `dev` up and primes the bucket. A frame that went out before the
   * priming frame leaves that frame at the head of the queue, where it waits for the bucket to refill (at one byte
   * per second): either way nothing passes for longer than any freeze.
   */
  async prime(dev: string): Promise<void> {
    const frame = (await this.mtu(dev)) + ETHERNET_HEADER;
    await this.tc(['qdisc', 'replace', 'dev', dev, 'root', 'tbf', ...holdParams(frame)]);
    await this.runner.run(['ip', 'link', 'set', 'dev', dev, 'up'], {
      label: 'ip link',
      errorCode: 'FERRY_E_EXEC',
    });
    const ping = startSession(pingArgv(dev, frame - ETHERNET_HEADER - PING_HEADERS));
    try {
      const deadline = performance.now() + PRIME_WAIT_MS;
      for (;;) {
        const s = await this.stats(dev);
        if (s && s.bytes + s.backlogBytes >= frame) break;
        if (performance.now() > deadline)
          throw new FerryError(
            'FERRY_E_EXEC',
            `the hold on ${dev} could not be primed: no frame went through it`,
          );
        await new Promise((r) => setTimeout(r, 5));
      }
    } finally {
      ping.kill();
    }
    this.stage(dev);
  }

  /** Delivers what is held, now: the rate goes up and one frame wakes the queue (tbf waits for its timer otherwise). */
  async release(dev: string): Promise<void> {
    const staged = this.staged.get(dev);
    this.staged.delete(dev);
    const change = ['qdisc', 'change', 'dev', dev, 'root', 'tbf', ...releaseParams()];
    const r = staged ? await staged.change.finish(`${change.join(' ')}\n`) : undefined;
    if (!r || r.code !== 0 || r.stderr.trim() !== '') await this.tc(change);
    if (staged) void staged.kick.finish('go\n').catch(() => {});
    else void this.runner.run(pingArgv(dev, 0), { allowFail: true, timeoutMs: 1500 }).catch(() => {});
  }

  /** Removes the qdisc, dropping whatever it still holds (a release first delivers it); returns its last figures. */
  async remove(dev: string): Promise<HoldStats | undefined> {
    this.unstage(dev);
    const s = await this.stats(dev);
    await this.runner.run(['tc', 'qdisc', 'del', 'dev', dev, 'root'], { allowFail: true });
    return s;
  }

  /** After a release: waits (up to `waitMs`) until the queue is empty, then removes the qdisc. */
  async drainAndRemove(dev: string, waitMs: number): Promise<HoldStats | undefined> {
    const deadline = performance.now() + waitMs;
    for (;;) {
      const s = await this.stats(dev);
      if (!s || s.backlogPackets === 0 || performance.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.remove(dev);
  }

  async stats(dev: string): Promise<HoldStats | undefined> {
    const r = await this.runner.run(['tc', '-s', 'qdisc', 'show', 'dev', dev, 'root'], { allowFail: true });
    return r.code === 0 ? parseTbfStats(r.stdout) : undefined;
  }

  /** Drops the staged release (the device is going away). */
  unstage(dev: string): void {
    const s = this.staged.get(dev);
    s?.change.kill();
    s?.kick.kill();
    this.staged.delete(dev);
  }

  /** Floating address: the bridge's ingress sends `address`'s packets through `ifb`, whose qdisc holds them. */
  async redirect(bridge: string, address: string, ifb: string, pref: number): Promise<void> {
    await this.runner.run(['ip', 'link', 'del', ifb], { allowFail: true });
    await this.runner.run(['ip', 'link', 'add', ifb, 'type', 'ifb'], {
      label: 'ip link add ifb',
      errorCode: 'FERRY_E_EXEC',
    });
    await this.prime(ifb);
    // (clsact may be there already, for another address: then only the filter is new)
    await this.runner.run(['tc', 'qdisc', 'add', 'dev', bridge, 'clsact'], { allowFail: true });
    await this.tc(redirectFilter('add', bridge, pref, address, ifb));
  }

  /** Undoes redirect(): the filter, then the ifb device (what it still holds is dropped). */
  async unredirect(bridge: string, ifb: string, pref: number): Promise<void> {
    this.unstage(ifb);
    // no ifb, no filter of this hold (the preference might be another address's)
    const link = await this.runner.run(['ip', '-o', 'link', 'show', 'dev', ifb], { allowFail: true });
    if (link.code !== 0) return;
    await this.runner.run(['tc', 'filter', 'del', 'dev', bridge, 'ingress', 'pref', String(pref)], {
      allowFail: true,
    });
    await this.runner.run(['ip', 'link', 'del', ifb], { allowFail: true });
  }

  private stage(dev: string): void {
    this.unstage(dev);
    this.staged.set(dev, {
      change: startSession(['tc', '-force', '-batch', '-']),
      kick: startSession(stagedArgv(pingArgv(dev, 0))),
    });
  }

  private async mtu(dev: string): Promise<number> {
    const r = await this.runner.run(['ip', '-o', 'link', 'show', 'dev', dev], {
      label: 'ip link show',
      errorCode: 'FERRY_E_EXEC',
    });
    const mtu = Number(/\bmtu (\d+)/.exec(r.stdout)?.[1]);
    return Number.isFinite(mtu) && mtu > 0 ? mtu : 1500;
  }

  private async tc(args: string[]): Promise<void> {
    await this.runner.run(['tc', ...args], { label: `tc ${args[0]} ${args[1]}`, errorCode: 'FERRY_E_EXEC' });
  }
}

/**
 * 8 bit/s with a bucket of exactly one full frame (a smaller bucket would drop full frames: tbf drops what exceeds
 * it), so the priming frame empties it; the limit is what the queue may hold.
 */
function holdParams(frame: number): string[] {
  return ['rate', '8bit', 'burst', String(frame), 'limit', String(HOLD_LIMIT_BYTES)];
}

function releaseParams(): string[] {
  return ['rate', '10gbit', 'burst', '4mb', 'limit', String(HOLD_LIMIT_BYTES)];
}

function redirectFilter(op: string, bridge: string, pref: number, address: string, ifb: string): string[] {
  return [
    'filter',
    op,
    'dev',
    bridge,
    'ingress',
    'pref',
    String(pref),
    'protocol',
    'ip',
    'u32',
    'match',
    'ip',
    'dst',
    `${address}/32`,
    'action',
    'mirred',
    'egress',
    'redirect',
    'dev',
    ifb,
  ];
}
