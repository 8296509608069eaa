// The controller's view of the agents, over their HTTPS API (mutual TLS, the controller's own certificate).
import { AgentClient, type TlsMaterial } from '../api/client.ts';
import { FerryError } from '../core/errors.ts';
import type { ContainerInfo } from '../host/containers.ts';
import type { CapabilitiesReport, MigrationEvent, MigrationReport } from '../migration/types.ts';
import type { AgentPool } from './controller.ts';
import type { HostRecord } from './store.ts';

export class HttpAgentPool implements AgentPool {
  private readonly tls: TlsMaterial;
  private readonly clients = new Map<string, AgentClient>();

  constructor(tls: TlsMaterial) {
    this.tls = tls;
  }

  private client(h: HostRecord): AgentClient {
    const key = `${h.name}@${h.address}:${h.port}`;
    let c = this.clients.get(key);
    if (!c) {
      c = new AgentClient({ name: h.name, address: h.address, port: h.port }, this.tls, {
        timeoutMs: 15_000,
      });
      this.clients.set(key, c);
    }
    return c;
  }

  containers(h: HostRecord): Promise<ContainerInfo[]> {
    return this.client(h).request('GET', '/v1/containers');
  }

  async canMigrate(h: HostRecord): Promise<boolean> {
    const caps = await this.client(h).request<CapabilitiesReport>('GET', '/v1/capabilities');
    return caps.strategies.cold.ok;
  }

  async migrate(
    from: HostRecord,
    container: string,
    to: HostRecord,
    strategy: string,
  ): Promise<MigrationReport> {
    let result: MigrationReport | undefined;
    await this.client(from).ndjson(
      'POST',
      `/v1/containers/${encodeURIComponent(container)}/migrate`,
      { to: { name: to.name, address: to.address, port: to.port }, strategy },
      (o) => {
        const e = o as MigrationEvent;
        if (e.type === 'result') result = e.report;
      },
    );
    if (!result)
      throw new FerryError(
        'FERRY_E_HOST_UNREACHABLE',
        `${from.name} ended the migration of ${container} without a result`,
      );
    return result;
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
  }
}
