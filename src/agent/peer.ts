// The destination agent as the migration engine sees it, over the agent API.
import { Readable } from 'node:stream';
import { createZstdCompress, constants as zlibConstants } from 'node:zlib';
import type { AgentClient } from '../api/client.ts';
import { FerryError } from '../core/errors.ts';
import type {
  CapabilitiesReport,
  DestinationPeer,
  IncomingRequest,
  RestoreOptions,
  RestoreResult,
} from '../migration/types.ts';
import type { FileRange } from '../transport/ranges.ts';

export class HttpDestinationPeer implements DestinationPeer {
  readonly name: string;
  private readonly client: AgentClient;

  constructor(client: AgentClient) {
    this.client = client;
    this.name = client.endpoint.name;
  }

  capabilities(): Promise<CapabilitiesReport> {
    return this.client.request('GET', '/v1/capabilities');
  }

  /**
   * Opens `connections` TLS connections to the destination now (they stay in the keep-alive pool): the parallel
   * requests of the transfer then find them ready instead of paying handshakes inside the freeze.
   */
  async warm(connections: number): Promise<void> {
    await Promise.all(
      Array.from({ length: connections }, () =>
        this.client.request('GET', '/v1/health', { timeoutMs: 5000 }),
      ),
    );
  }

  async hasContainer(name: string): Promise<boolean> {
    try {
      const c = await this.client.request<{ status: string }>(
        'GET',
        `/v1/containers/${encodeURIComponent(name)}`,
      );
      return c.status === 'running';
    } catch (err) {
      if (err instanceof FerryError && err.code === 'FERRY_E_CONTAINER_UNKNOWN') return false;
      throw err;
    }
  }

  async prepare(req: IncomingRequest): Promise<void> {
    await this.client.request('POST', '/v1/incoming', { json: req });
  }

  send(
    id: string,
    part: 'bundle' | 'images',
    body: Readable,
    opts: { compress?: boolean; update?: boolean } = {},
  ): Promise<{ bytes: number }> {
    const path = `/v1/incoming/${id}/${part}${opts.update ? '?update=1' : ''}`;
    if (opts.compress) {
      // zstd level 1: cheap enough to pay off whenever the link, not the CPU, is the bottleneck
      const z = createZstdCompress({ params: { [zlibConstants.ZSTD_c_compressionLevel]: 1 } });
      body.on('error', (err) => z.destroy(err));
      return this.client.request('PUT', path, {
        body: body.pipe(z),
        headers: { 'content-encoding': 'zstd' },
        timeoutMs: 120_000,
      });
    }
    return this.client.request('PUT', path, { body, timeoutMs: 120_000 });
  }

  restore(id: string, opts: RestoreOptions): Promise<RestoreResult> {
    return this.client.request('POST', `/v1/incoming/${id}/restore`, { json: opts, timeoutMs: 600_000 });
  }

  sendRange(
    id: string,
    r: FileRange,
    body: Readable,
    opts: { sparse?: boolean } = {},
  ): Promise<{ crc: number; bytes: number }> {
    const q = new URLSearchParams({
      file: r.file,
      offset: String(r.offset),
      length: String(r.length),
      total: String(r.total),
      ...(opts.sparse ? { sparse: '1' } : {}),
    });
    return this.client.request('PUT', `/v1/incoming/${id}/range?${q}`, { body, timeoutMs: 120_000 });
  }

  sendBlocks(id: string, body: Readable): Promise<{ pages: number; added: number }> {
    return this.client.request('PUT', `/v1/incoming/${id}/blocks`, { body, timeoutMs: 120_000 });
  }

  async measureRate(bytes: number): Promise<number> {
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    const body = Readable.from(
      (function* () {
        for (let sent = 0; sent < bytes; sent += chunk.length) yield chunk;
      })(),
    );
    const t0 = performance.now();
    await this.client.request('PUT', '/v1/bandwidth', { body, timeoutMs: 30_000 });
    return (bytes / Math.max(1, performance.now() - t0)) * 1000;
  }

  pagesResult(id: string): Promise<{ ok: boolean; message: string }> {
    return this.client.request('GET', `/v1/incoming/${id}/pages`, { timeoutMs: 3_600_000 });
  }

  async commit(id: string): Promise<void> {
    await this.client.request('POST', `/v1/incoming/${id}/commit`);
  }

  async abort(id: string): Promise<void> {
    await this.client.request('DELETE', `/v1/incoming/${id}`, { timeoutMs: 60_000 });
  }
}
