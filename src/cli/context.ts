// The CLI's view of a cluster: the cluster file, one API client per host (api/cluster-clients.ts), and lookups
// across hosts.
import { ClusterClients } from '../api/cluster-clients.ts';
import type { ContainerInfo } from '../api/types.ts';
import { loadClusterFile, resolveClusterPath } from '../core/cluster-file.ts';
import { FerryError } from '../core/errors.ts';
import { checkName } from '../core/names.ts';

export class ClusterContext extends ClusterClients {
  static override async load(
    explicit?: string,
    env: NodeJS.ProcessEnv = process.env,
  ): Promise<ClusterContext> {
    return new ClusterContext(await loadClusterFile(await resolveClusterPath(explicit, env)));
  }

  /** Containers of every host; unreachable hosts are reported, not fatal. */
  async containers(
    only?: string,
  ): Promise<{ containers: ContainerInfo[]; unreachable: { host: string; error: FerryError }[] }> {
    const hosts = only ? [this.host(only)] : this.file.hosts;
    const results = await Promise.allSettled(hosts.map((h) => this.client(h.name).containers()));
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
