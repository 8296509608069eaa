// How to reach a cluster's agents and controller: its cluster file (a testbed writes one) names the hosts and the
// client certificate. Used by the CLI's context and by the benchmarks.
import {
  type ClusterFile,
  type ClusterHost,
  loadClusterFile,
  resolveClusterPath,
} from '../core/cluster-file.ts';
import { FerryError } from '../core/errors.ts';
import { checkName } from '../core/names.ts';
import type { AgentClient } from './agent-client.ts';
import type { ControllerClient } from './controller-client.ts';
import { ClientPool } from './pool.ts';

export class ClusterClients {
  readonly file: ClusterFile;
  private readonly pool: ClientPool;

  constructor(file: ClusterFile) {
    this.file = file;
    this.pool = ClientPool.fromFiles(file.tls);
  }

  /** `--cluster FILE`, else $FERRY_CLUSTER, else the last testbed brought up. */
  static async load(explicit?: string, env: NodeJS.ProcessEnv = process.env): Promise<ClusterClients> {
    return new ClusterClients(await loadClusterFile(await resolveClusterPath(explicit, env)));
  }

  /** A host of the cluster by name; a clear error naming the known ones otherwise. */
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

  client(host: string): AgentClient {
    return this.pool.agent(this.host(host), { timeoutMs: 15_000 });
  }

  /** The cluster's controller; a clear error when this cluster has none. */
  controller(): ControllerClient {
    const ep = this.file.controller;
    if (!ep) {
      throw new FerryError('FERRY_E_TESTBED_NONE', 'this cluster has no controller', {
        hint: 'ferry testbed up --controller starts one',
      });
    }
    return this.pool.controller(ep, { timeoutMs: 30_000 });
  }

  close(): void {
    this.pool.close();
  }
}
