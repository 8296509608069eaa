// The CLI's view of a cluster: the cluster file, one API client per host, and lookups across hosts.
import { AgentClient } from '../api/client.ts';
import {
  type ClusterFile,
  type ClusterHost,
  loadClusterFile,
  resolveClusterPath,
} from '../core/cluster-file.ts';
import { FerryError } from '../core/errors.ts';
import { checkName } from '../core/names.ts';
import type { ContainerInfo } from '../host/containers.ts';
import { tlsClientOptions } from '../runtime/pki.ts';

export class ClusterContext {
  readonly file: ClusterFile;
  private readonly clients = new Map<string, AgentClient>();

  private constructor(file: ClusterFile) {
    this.file = file;
  }

  static async load(explicit?: string, env: NodeJS.ProcessEnv = process.env): Promise<ClusterContext> {
    return new ClusterContext(await loadClusterFile(await resolveClusterPath(explicit, env)));
  }

  host(name: string): ClusterHost {
    checkName(name, 'host');
    const h = this.file.hosts.find((x) => x.name === name);
    if (!h) {
      throw new FerryError('FERRY_E_HOST_UNKNOWN', `unknown host ${name}`, {
        phase: 'input',
        hint: `known hosts: ${this.file.hosts.map((x) => x.name).join(', ')}`,
      });
    }
    return h;
  }

  client(name: string): AgentClient {
    let c = this.clients.get(name);
    if (!c) {
      c = new AgentClient(this.host(name), tlsClientOptions(this.file.tls), { timeoutMs: 15_000 });
      this.clients.set(name, c);
    }
    return c;
  }

  /** The cluster's controller; a clear error when this cluster has none. */
  controller(): AgentClient {
    const ep = this.file.controller;
    if (!ep) {
      throw new FerryError('FERRY_E_TESTBED_NONE', 'this cluster has no controller', {
        hint: 'ferry testbed up --controller starts one',
      });
    }
    let c = this.clients.get('\0controller');
    if (!c) {
      c = new AgentClient(ep, tlsClientOptions(this.file.tls), { timeoutMs: 30_000 });
      this.clients.set('\0controller', c);
    }
    return c;
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
  }

  /** Containers of every host; unreachable hosts are reported, not fatal. */
  async containers(
    only?: string,
  ): Promise<{ containers: ContainerInfo[]; unreachable: { host: string; error: FerryError }[] }> {
    const hosts = only ? [this.host(only)] : this.file.hosts;
    const results = await Promise.allSettled(
      hosts.map((h) => this.client(h.name).request<ContainerInfo[]>('GET', '/v1/containers')),
    );
    const containers: ContainerInfo[] = [];
    const unreachable: { host: string; error: FerryError }[] = [];
    results.forEach((r, i) => {
      const h = hosts[i]!.name;
      if (r.status === 'fulfilled') containers.push(...r.value);
      else
        unreachable.push({
          host: h,
          error:
            r.reason instanceof FerryError
              ? r.reason
              : new FerryError('FERRY_E_HOST_UNREACHABLE', String(r.reason)),
        });
    });
    return { containers, unreachable };
  }

  /** The host that runs a container; fails clearly when no reachable host has it. */
  async locate(name: string): Promise<ContainerInfo> {
    checkName(name);
    const { containers, unreachable } = await this.containers();
    const found = containers.filter((c) => c.name === name);
    if (found.length === 1) return found[0]!;
    if (found.length > 1) {
      throw new FerryError(
        'FERRY_E_INTERNAL',
        `container ${name} is on several hosts: ${found.map((c) => c.host).join(', ')}`,
      );
    }
    const extra = unreachable.length ? ` (unreachable: ${unreachable.map((u) => u.host).join(', ')})` : '';
    throw new FerryError('FERRY_E_CONTAINER_UNKNOWN', `unknown container ${name}: no host runs it${extra}`, {
      phase: 'input',
    });
  }
}
