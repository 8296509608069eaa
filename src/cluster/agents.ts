// The controller's view of the agents, over their HTTPS API (mutual TLS, the controller's own certificate).
import type { AgentClient } from '../api/agent-client.ts';
import type { ProcessList } from '../api/dashboard.ts';
import type { TlsMaterial } from '../api/https-client.ts';
import { ClientPool } from '../api/pool.ts';
import type { CapabilitiesReport, ContainerInfo, MigrationOptions, MigrationReport } from '../api/types.ts';
import type { AgentPool, MoveExtras } from './controller.ts';
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
    extras: MoveExtras = {},
  ): Promise<MigrationReport> {
    return this.client(from).migrate(
      container,
      {
        to: { name: to.name, address: to.address, port: to.port },
        strategy,
        ...(extras.maxDowntimeMs !== undefined ? { maxDowntimeMs: extras.maxDowntimeMs } : {}),
      },
      extras.onEvent,
    );
  }

  capabilities(h: HostRecord): Promise<CapabilitiesReport> {
    return this.client(h).capabilities();
  }

  processes(h: HostRecord, container: string): Promise<ProcessList> {
    return this.client(h).processes(container);
  }

  /** New TLS material for the next connections to agents (a new revocation list). */
  reload(tls: TlsMaterial): void {
    this.pool.reload(tls);
  }

  close(): void {
    this.pool.close();
  }
}
