// Packet filters ferry installs around a migration: per-address drop rules for host-network containers, the
// page servers' fences, and removal of the lock rules CRIU leaves behind (an own namespace's lock: netns-lock.ts).
import type { Runner } from '../runtime/exec.ts';

/** A page server's fence (fencePort): whose it is, and whether this host's own processes may connect too. */
export interface FenceOptions {
  migration?: string;
  loopback?: boolean;
}
const CRIU_MARK = '0xc114';

function inNetns(ns: string | undefined, argv: string[]): string[] {
  return ns ? ['nsenter', `--net=/run/netns/${ns}`, '--', ...argv] : argv;
}

export class Firewall {
  private readonly runner: Runner;

  constructor(runner: Runner) {
    this.runner = runner;
  }

  /** Removes the netns-wide lock CRIU's iptables method leaves in a dumped container's namespace. */
  async clearCriuNetnsLock(ns: string): Promise<void> {
    for (const ipt of ['iptables', 'ip6tables']) {
      for (const chain of ['INPUT', 'OUTPUT']) {
        await this.runner.run(inNetns(ns, [ipt, '-w', '-D', chain, '-j', 'CRIU']), { allowFail: true });
      }
      await this.runner.run(inNetns(ns, [ipt, '-w', '-F', 'CRIU']), { allowFail: true });
      await this.runner.run(inNetns(ns, [ipt, '-w', '-X', 'CRIU']), { allowFail: true });
    }
  }

  /** Host mode: nothing reaches a floating address on this host until the container is restored. */
  async dropAddress(address: string, tag: string): Promise<void> {
    await this.runner.run(this.dropRule('-I', address, tag), {
      label: 'iptables',
      errorCode: 'FERRY_E_EXEC',
    });
  }

  async undropAddress(address: string, tag: string): Promise<void> {
    // every copy of the rule: a retried migration may have inserted it twice
    for (let i = 0; i < 10; i++) {
      if ((await this.runner.run(this.dropRule('-D', address, tag), { allowFail: true })).code !== 0) return;
    }
  }

  /** Drops every packet this host sends from `address` (the dying source copy of a floating address). */
  async dropFrom(address: string, tag: string): Promise<void> {
    await this.runner.run(this.fromRule('-I', address, tag), {
      label: 'iptables',
      errorCode: 'FERRY_E_EXEC',
    });
  }

  async undropFrom(address: string, tag: string): Promise<void> {
    for (let i = 0; i < 10; i++) {
      if ((await this.runner.run(this.fromRule('-D', address, tag), { allowFail: true })).code !== 0) return;
    }
  }

  /**
   * Destroys this host's TCP sockets on `address` (SOCK_DESTROY): the orphans a killed process leaves, which would
   * otherwise retransmit their FIN for minutes. The resets they send meet the drop of dropFrom().
   */
  async killSockets(address: string): Promise<void> {
    await this.runner.run(['ss', '-K', '-t', '-a', 'src', address], { allowFail: true });
  }

  /** The iptables command of that drop (also run by a dead-man switch, runtime/dead-man.ts). */
  fromRule(op: string, address: string, tag: string): string[] {
    return [
      'iptables',
      '-w',
      op,
      'OUTPUT',
      '-s',
      `${address}/32`,
      '-m',
      'comment',
      '--comment',
      `ferry:${tag}`,
      '-j',
      'DROP',
    ];
  }

  private dropRule(op: string, address: string, tag: string): string[] {
    return [
      'iptables',
      '-w',
      op,
      'INPUT',
      '-d',
      `${address}/32`,
      '-m',
      'comment',
      '--comment',
      `ferry:${tag}`,
      '-j',
      'DROP',
    ];
  }

  /** Host mode: CRIU's per-connection lock rules for an address stay after a dump; remove them. */
  async clearCriuConnectionLocks(address: string): Promise<number> {
    let removed = 0;
    for (const chain of ['INPUT', 'OUTPUT']) {
      const r = await this.runner.run(['iptables', '-w', '-S', chain], { allowFail: true });
      for (const line of r.stdout.split('\n')) {
        if (!line.startsWith(`-A ${chain} `) || !line.includes(CRIU_MARK) || !line.includes(`${address}/32`))
          continue;
        const spec = line.slice(3).trim().split(/\s+/);
        const d = await this.runner.run(['iptables', '-w', '-D', ...spec], { allowFail: true });
        if (d.code === 0) removed++;
      }
    }
    return removed;
  }

  /**
   * Only `allow` may reach a CRIU page server on `port`: CRIU makes it listen on every address. With `migration`,
   * the rule's comment names it, so removing one migration's rule never removes another's for the same port.
   * `loopback` lets this host's own processes in too: post-copy's source needs that (it resets its own page server
   * through the loopback to make it fail). A cold migration's page server takes none: it accepts one connection
   * only, and any local process that took it first would make the migration fail.
   */
  async fencePort(port: number, allow: string, o: FenceOptions = {}): Promise<void> {
    await this.runner.run(this.fenceRule('-I', port, allow, o), {
      label: 'iptables',
      errorCode: 'FERRY_E_EXEC',
    });
  }

  async unfencePort(port: number, allow: string, o: FenceOptions = {}): Promise<void> {
    await this.runner.run(this.fenceRule('-D', port, allow, o), { allowFail: true });
  }

  /**
   * At agent start, once no incoming migration is left: the fences of cold page servers (rules naming a migration)
   * that a previous run of the agent had not removed yet. Left in place, one would drop the next source that picks
   * its port. Returns how many went.
   */
  async removeStalePageServerFences(): Promise<number> {
    const r = await this.runner.run(['iptables', '-w', '-S', 'INPUT'], { allowFail: true });
    let removed = 0;
    for (const spec of stalePageServerFences(r.stdout)) {
      const d = await this.runner.run(['iptables', '-w', '-D', ...spec], { allowFail: true });
      if (d.code === 0) removed++;
    }
    return removed;
  }

  private fenceRule(op: string, port: number, allow: string, o: FenceOptions): string[] {
    return [
      'iptables',
      '-w',
      op,
      'INPUT',
      '-p',
      'tcp',
      '--dport',
      String(port),
      '!',
      '-s',
      `${allow}/32`,
      ...(o.loopback ? ['!', '-i', 'lo'] : []),
      '-m',
      'comment',
      '--comment',
      o.migration ? `ferry:page-server:${o.migration}` : 'ferry:page-server',
      '-j',
      'DROP',
    ];
  }

  /**
   * A page server on the loopback (an agentless migration's, reached through ssh's forward): only root's sockets
   * may connect to it, so no other user of this host reads the container's memory.
   */
  async fenceLoopback(port: number): Promise<void> {
    await this.runner.run(this.loopbackRule('-I', port), { label: 'iptables', errorCode: 'FERRY_E_EXEC' });
  }

  async unfenceLoopback(port: number): Promise<void> {
    await this.runner.run(this.loopbackRule('-D', port), { allowFail: true });
  }

  private loopbackRule(op: string, port: number): string[] {
    return [
      'iptables',
      '-w',
      op,
      'OUTPUT',
      '-o',
      'lo',
      '-p',
      'tcp',
      '--dport',
      String(port),
      '-m',
      'owner',
      '!',
      '--uid-owner',
      '0',
      '-m',
      'comment',
      '--comment',
      'ferry:page-server',
      '-j',
      'REJECT',
    ];
  }

  /** Rules ferry or CRIU left for an address or in a namespace (for tests and `ferry check`). */
  async leftovers(opts: { ns?: string; address?: string }): Promise<string[]> {
    const out: string[] = [];
    const r = await this.runner.run(inNetns(opts.ns, ['iptables-save']), { allowFail: true });
    for (const line of r.stdout.split('\n')) {
      if (/CRIU|ferry:|0xc114/.test(line) && (!opts.address || line.includes(opts.address))) out.push(line);
    }
    return out;
  }
}

/** The page servers' fences naming a migration in `iptables -S INPUT` output, as the arguments that delete each. */
export function stalePageServerFences(listing: string): string[][] {
  return (
    listing
      .split('\n')
      .filter(
        (line) => line.startsWith('-A INPUT ') && /--comment "?ferry:page-server:[^\s"]+"?(\s|$)/.test(line),
      )
      // (iptables -S quotes a comment; the rule's own argument has no quotes)
      .map((line) =>
        line
          .slice(3)
          .trim()
          .split(/\s+/)
          .map((arg) => arg.replace(/^"(.*)"$/, '$1')),
      )
  );
}
