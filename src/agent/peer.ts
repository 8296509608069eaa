// The destination agent as the migration engine sees it, over the agent API.
import type { Readable } from 'node:stream';
import type { AgentClient } from '../api/agent-client.ts';
import type { CapabilitiesReport, IncomingRequest, RestoreOptions, RestoreResult } from '../api/types.ts';
import { FerryError } from '../core/errors.ts';
import type { DestinationPeer } from '../migration/types.ts';
import type { FileRange } from '../transport/ranges.ts';

export class HttpDestinationPeer implements DestinationPeer {
  readonly name: string;
  readonly endpoint: { name: string; address: string; port: number };
  private readonly client: AgentClient;

  constructor(client: AgentClient) {
    this.client = client;
    this.name = client.endpoint.name;
    this.endpoint = client.endpoint;
  }

  capabilities(): Promise<CapabilitiesReport> {
    return this.client.capabilities();
  }

  /**
   * Opens `connections` TLS connections to the destination now (they stay in the keep-alive pool): the parallel
   * requests of the transfer then find them ready instead of paying handshakes inside the freeze.
   */
  async warm(connections: number): Promise<void> {
    await Promise.all(Array.from({ length: connections }, () => this.client.health({ timeoutMs: 5000 })));
  }

  async hasContainer(name: string): Promise<boolean> {
    try {
      return (await this.client.container(name)).status === 'running';
    } catch (err) {
      if (err instanceof FerryError && err.code === 'FERRY_E_CONTAINER_UNKNOWN') return false;
      throw err;
    }
  }

  prepare(req: IncomingRequest): Promise<void> {
    return this.client.prepareIncoming(req);
  }

  send(
    id: string,
    part: 'bundle' | 'images',
    body: Readable,
    opts: { compress?: boolean; update?: boolean } = {},
  ): Promise<{ bytes: number; wireBytes?: number }> {
    return this.client.sendPart(id, part, body, opts);
  }

  restore(id: string, opts: RestoreOptions): Promise<RestoreResult> {
    return this.client.restoreIncoming(id, opts);
  }

  sendRange(
    id: string,
    r: FileRange,
    body: Readable,
    opts: { sparse?: boolean } = {},
  ): Promise<{ crc: number; bytes: number }> {
    return this.client.sendRange(id, r, body, opts);
  }

  sendBlocks(id: string, body: Readable): Promise<{ pages: number; added: number }> {
    return this.client.sendBlocks(id, body);
  }

  measureRate(bytes: number): Promise<number> {
    return this.client.measureRate(bytes);
  }

  pagesResult(id: string): Promise<{ ok: boolean; message: string }> {
    return this.client.incomingPages(id);
  }

  hold(id: string): Promise<void> {
    return this.client.holdIncoming(id);
  }

  announce(id: string): Promise<void> {
    return this.client.announceIncoming(id);
  }

  commit(id: string): Promise<void> {
    return this.client.commitIncoming(id);
  }

  abort(id: string): Promise<void> {
    return this.client.abortIncoming(id);
  }

  status(id: string): Promise<'committed' | 'uncommitted' | 'unknown'> {
    return this.client.incomingStatus(id);
  }
}
