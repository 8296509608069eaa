// The controller's view of the agents, over their HTTPS API (mutual TLS, the controller's own certificate).
import type { AgentClient } from '../api/agent-client.ts';
import type { TlsMaterial } from '../api/https-client.ts';
import { ClientPool } from '../api/pool.ts';
import type { ContainerInfo, MigrationOptions, MigrationReport } from '../api/types.ts';
import type { AgentPool } from './controller.ts';
import type { HostRecord } from './store.ts';

export class HttpAgentPool implements AgentPool {
  private readonly pool: ClientPool;

  constructor(tls: TlsMaterial) {
    this.pool = new ClientPool(tls);
  }

  private client(h: HostRecord): AgentClient {
    return this.pool.agent({ name: h.name, address: h.address, port: h.port }, { timeoutMs: 15_000 });
  }

  containers(h: HostRecord): Promise<ContainerInfo[]> {
    return this.client(h).containers();
  }

  async canMigrate(h: HostRecord): Promise<boolean> {
    return (await this.client(h).capabilities()).strategies.cold.ok;
  }

  migrate(
    from: HostRecord,
    container: string,
    to: HostRecord,
    strategy: MigrationOptions['strategy'],
  ): Promise<MigrationReport> {
    return this.client(from).migrate(container, {
      to: { name: to.name, address: to.address, port: to.port },
      strategy,
    });
  }

  close(): void {
    this.pool.close();
  }
}
