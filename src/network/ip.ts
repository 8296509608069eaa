// Network namespaces, links, addresses and shaping through iproute2. The only place ferry calls `ip`/`tc`.
import type { Runner } from '../runtime/exec.ts';

export interface Neighbour {
  address: string;
  mac: string;
}

export class IpNet {
  private readonly runner: Runner;

  constructor(runner: Runner) {
    this.runner = runner;
  }

  private async ip(args: string[], ns?: string, allowFail = false): Promise<string> {
    const argv = ns ? ['ip', '-n', ns, ...args] : ['ip', ...args];
    const r = await this.runner.run(argv, { allowFail, errorCode: 'FERRY_E_TESTBED', phase: 'testbed' });
    return r.stdout;
  }

  async listNetns(): Promise<string[]> {
    const out = await this.ip(['netns', 'list'], undefined, true);
    return out
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '')
      .filter(Boolean);
  }

  async addNetns(name: string): Promise<void> {
    await this.ip(['netns', 'add', name]);
    await this.ip(['link', 'set', 'lo', 'up'], name);
  }

  async delNetns(name: string): Promise<void> {
    await this.ip(['netns', 'del', name], undefined, true);
  }

  async listLinks(ns?: string): Promise<string[]> {
    const out = await this.ip(['-o', 'link', 'show'], ns, true);
    return out
      .split('\n')
      .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1] ?? '')
      .filter(Boolean);
  }

  async delLink(name: string, ns?: string): Promise<void> {
    await this.ip(['link', 'del', name], ns, true);
  }

  async addBridge(name: string, mac: string, ns?: string): Promise<void> {
    await this.ip(['link', 'add', name, 'address', mac, 'type', 'bridge'], ns);
    await this.ip(['link', 'set', name, 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0'], ns);
  }

  /** A veth pair: `outer` stays here, `inner` moves into `ns` under the name `innerName`. */
  async addVeth(
    outer: string,
    inner: string,
    ns: string,
    innerName: string,
    innerMac?: string,
    outerNs?: string,
  ): Promise<void> {
    await this.delLink(outer, outerNs);
    await this.ip(['link', 'add', outer, 'type', 'veth', 'peer', 'name', inner], outerNs);
    await this.ip(['link', 'set', inner, 'netns', ns], outerNs);
    await this.ip(['link', 'set', inner, 'name', innerName], ns);
    if (innerMac) await this.ip(['link', 'set', innerName, 'address', innerMac], ns);
  }

  async setMaster(link: string, bridge: string, ns?: string): Promise<void> {
    await this.ip(['link', 'set', link, 'master', bridge], ns);
  }

  async up(link: string, ns?: string): Promise<void> {
    await this.ip(['link', 'set', link, 'up'], ns);
  }

  async down(link: string, ns?: string): Promise<void> {
    await this.ip(['link', 'set', link, 'down'], ns, true);
  }

  async linkExists(link: string, ns?: string): Promise<boolean> {
    return (await this.listLinks(ns)).includes(link);
  }

  async delAddress(link: string, cidr: string, ns?: string): Promise<void> {
    await this.ip(['addr', 'del', cidr, 'dev', link], ns, true);
  }

  async hasAddress(link: string, address: string, ns?: string): Promise<boolean> {
    const out = await this.ip(['-4', '-o', 'addr', 'show', 'dev', link], ns, true);
    return out.includes(`inet ${address}/`);
  }

  /** Resolved IPv4 neighbours on a link (what a container's ARP cache knows). */
  async neighbours(link: string, ns?: string): Promise<Neighbour[]> {
    const out = await this.ip(['-4', '-j', 'neigh', 'show', 'dev', link], ns, true);
    if (!out.trim()) return [];
    const rows = JSON.parse(out) as { dst: string; lladdr?: string; state?: string[] }[];
    return rows
      .filter((r) => r.lladdr && !(r.state ?? []).some((s) => s === 'FAILED' || s === 'INCOMPLETE'))
      .map((r) => ({ address: r.dst, mac: r.lladdr! }));
  }

  async setNeighbour(link: string, n: Neighbour, ns?: string): Promise<void> {
    await this.ip(['neigh', 'replace', n.address, 'lladdr', n.mac, 'dev', link, 'nud', 'stale'], ns, true);
  }

  async addAddress(link: string, cidr: string, ns?: string): Promise<void> {
    await this.ip(['addr', 'add', cidr, 'dev', link], ns);
  }

  async addDefaultRoute(gateway: string, ns: string): Promise<void> {
    await this.ip(['route', 'add', 'default', 'via', gateway], ns, true);
  }

  /** IPv4 networks in use here, as "a.b.c.d/len" strings. */
  async ipv4Networks(ns?: string): Promise<string[]> {
    const out = await this.ip(['-4', '-o', 'addr', 'show'], ns, true);
    const routes = await this.ip(['-4', 'route', 'show'], ns, true);
    const nets: string[] = [];
    for (const l of out.split('\n')) {
      const m = /inet (\d+\.\d+\.\d+\.\d+\/\d+)/.exec(l);
      if (m?.[1]) nets.push(m[1]);
    }
    for (const l of routes.split('\n')) {
      const m = /^(\d+\.\d+\.\d+\.\d+(?:\/\d+)?)/.exec(l);
      if (m?.[1]) nets.push(m[1]);
    }
    return nets;
  }

  /** Limits egress of `link` to `rate` (tc tbf; this kernel has no netem). */
  async shape(link: string, rate: string, ns?: string): Promise<void> {
    const argv = ns ? ['ip', 'netns', 'exec', ns, 'tc'] : ['tc'];
    await this.runner.run(
      [
        ...argv,
        'qdisc',
        'replace',
        'dev',
        link,
        'root',
        'tbf',
        'rate',
        rate,
        'burst',
        '256kb',
        'latency',
        '50ms',
      ],
      {
        errorCode: 'FERRY_E_TESTBED',
        phase: 'testbed',
      },
    );
  }
}
