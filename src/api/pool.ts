// Every client a process needs, over one keep-alive pool for its TLS identity: a client per endpoint, made once,
// closed together.
import { tlsClientOptions } from '../runtime/pki.ts';
import { AgentClient } from './agent-client.ts';
import { ControllerClient } from './controller-client.ts';
import { type Endpoint, type TlsMaterial, TlsPool } from './https-client.ts';

export class ClientPool {
  private readonly pool: TlsPool;
  private readonly clients = new Map<string, AgentClient | ControllerClient>();

  constructor(tls: TlsMaterial) {
    this.pool = new TlsPool(tls);
  }

  /** From the certificate files of a cluster file or a testbed (CA, certificate, key). */
  static fromFiles(paths: { ca: string; cert: string; key: string }): ClientPool {
    return new ClientPool(tlsClientOptions(paths));
  }

  agent(ep: Endpoint, opts: { timeoutMs?: number; stallMs?: number } = {}): AgentClient {
    return this.get(
      `agent ${key(ep)} ${opts.timeoutMs ?? ''} ${opts.stallMs ?? ''}`,
      () => new AgentClient(ep, this.pool, opts),
    );
  }

  controller(ep: Endpoint, opts: { timeoutMs?: number } = {}): ControllerClient {
    return this.get(
      `controller ${key(ep)} ${opts.timeoutMs ?? ''}`,
      () => new ControllerClient(ep, this.pool, opts),
    );
  }

  private get<T extends AgentClient | ControllerClient>(key: string, make: () => T): T {
    let c = this.clients.get(key);
    if (!c) {
      c = make();
      this.clients.set(key, c);
    }
    return c as T;
  }

  /** New TLS material for every client's next connection (a new revocation list: `TlsPool.reload`). */
  reload(tls: TlsMaterial): void {
    this.pool.reload(tls);
  }

  close(): void {
    this.clients.clear();
    this.pool.close();
  }
}

const key = (ep: Endpoint) => `${ep.name}@${ep.address}:${ep.port}`;
