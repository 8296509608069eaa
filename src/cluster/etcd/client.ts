// Minimal etcd v3 client over the JSON gateway (HTTP, global fetch): range, put, delete, txn, leases, with
// failover between endpoints. Also the compare / request builders the store and the leader election put into
// txns. etcd >= 3.4 serves the gateway at /v3/ (3.3: /v3beta/; pass gatewayPath for that).
import { FerryError } from '../../core/errors.ts';

export interface EtcdClientOptions {
  /** e.g. http://127.0.0.1:2379; several are tried in turn when one is unreachable. */
  endpoints?: string | string[];
  /** One endpoint (joined to `endpoints` when both are given). */
  endpoint?: string;
  /** Per request; default 5000 ms. */
  timeoutMs?: number;
  /** Default /v3/ (etcd >= 3.4). */
  gatewayPath?: string;
}

export interface EtcdKV {
  key: Buffer;
  value: Buffer;
  createRevision: bigint;
  modRevision: bigint;
  /** "0" when the key has no lease */
  lease: string;
}

interface RawKV {
  key: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  lease?: string;
}

interface RawRange {
  header?: { revision?: string };
  kvs?: RawKV[];
  more?: boolean;
}

export type Compare = Record<string, unknown>;
export type RequestOp = Record<string, unknown>;
export interface RawTxn {
  header?: { revision?: string };
  succeeded?: boolean;
  responses?: { response_range?: RawRange }[];
}

export const b64 = (b: Buffer | string): string =>
  (typeof b === 'string' ? Buffer.from(b) : b).toString('base64');

/** The smallest key greater than every key starting with `prefix`. */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // whole key space
}

function kvFromRaw(r: RawKV): EtcdKV {
  return {
    key: Buffer.from(r.key, 'base64'),
    value: Buffer.from(r.value ?? '', 'base64'),
    createRevision: BigInt(r.create_revision ?? '0'),
    modRevision: BigInt(r.mod_revision ?? '0'),
    lease: r.lease ?? '0',
  };
}

/** Minimal etcd v3 client over the JSON gateway. Lease ids stay strings (int64). */
export class EtcdClient {
  readonly endpoints: string[];
  private readonly timeoutMs: number;
  private readonly gatewayPath: string;
  private current = 0;

  constructor(opts: EtcdClientOptions) {
    const eps = [opts.endpoint ?? [], opts.endpoints ?? []].flat().map((e) => e.replace(/\/+$/, ''));
    if (eps.length === 0 || eps.some((e) => !/^https?:\/\/[^/]+$/.test(e)))
      throw new FerryError(
        'FERRY_E_INPUT_ARGS',
        `etcd endpoints must be http(s)://host:port, got ${eps.join(', ')}`,
      );
    this.endpoints = eps;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    const gp = opts.gatewayPath ?? '/v3/';
    this.gatewayPath = `/${gp.replace(/^\/+|\/+$/g, '')}/`;
  }

  /** POSTs to the gateway (`path` like `kv/range`); network failures move on to the next endpoint. */
  async call<T>(path: string, body: unknown): Promise<T> {
    let lastErr: unknown;
    for (let n = 0; n < this.endpoints.length; n++) {
      const i = (this.current + n) % this.endpoints.length;
      const url = `${this.endpoints[i]}${this.gatewayPath}${path}`;
      let res: Response;
      let text: string;
      try {
        res = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(this.timeoutMs),
        });
        text = await res.text();
      } catch (err) {
        lastErr = err;
        continue;
      }
      this.current = i;
      // streaming endpoints (lease/keepalive) answer {"result": ...} lines; take the first
      const first = text.split('\n').find((l) => l.trim() !== '') ?? '{}';
      let j: Record<string, unknown>;
      try {
        j = JSON.parse(first) as Record<string, unknown>;
      } catch {
        throw new FerryError('FERRY_E_INTERNAL', `etcd ${url}: unreadable answer (HTTP ${res.status})`, {
          details: { body: text.slice(0, 200) },
        });
      }
      // failures: HTTP error with {error, message, code}; on a stream, HTTP 200 with {error: {message, grpc_code}}
      const streamErr =
        j['error'] && typeof j['error'] === 'object' ? (j['error'] as Record<string, unknown>) : undefined;
      if (!res.ok || streamErr) {
        const e = streamErr ?? j;
        const msg = String(e['message'] ?? e['error'] ?? `HTTP ${res.status}`);
        throw new FerryError('FERRY_E_INTERNAL', `etcd ${path}: ${msg}`, {
          details: {
            endpoint: this.endpoints[i],
            httpStatus: res.status,
            grpcCode: e['code'] ?? e['grpc_code'],
          },
        });
      }
      const inner = (j['result'] ?? j) as Record<string, unknown>;
      return inner as T;
    }
    throw new FerryError('FERRY_E_INTERNAL', `etcd unreachable at ${this.endpoints.join(', ')}`, {
      cause: lastErr,
      details: { reason: lastErr instanceof Error ? (lastErr.cause ?? lastErr).toString() : String(lastErr) },
      hint: 'is etcd running and listening there?',
    });
  }

  async get(key: string | Buffer): Promise<EtcdKV | undefined> {
    const r = await this.call<RawRange>('kv/range', { key: b64(key) });
    const kv = r.kvs?.[0];
    return kv ? kvFromRaw(kv) : undefined;
  }

  /** Every key under the prefix at one revision (paged), in key order. */
  async getPrefix(prefix: string, revision?: bigint): Promise<{ kvs: EtcdKV[]; revision: bigint }> {
    const p = Buffer.from(prefix);
    const end = b64(prefixEnd(p));
    let from = p;
    let rev = revision;
    const out: EtcdKV[] = [];
    for (;;) {
      const req: Record<string, unknown> = { key: b64(from), range_end: end, limit: 1000 };
      if (rev !== undefined) req['revision'] = rev.toString();
      const r = await this.call<RawRange>('kv/range', req);
      if (rev === undefined) rev = BigInt(r.header?.revision ?? '0');
      const kvs = (r.kvs ?? []).map(kvFromRaw);
      out.push(...kvs);
      const last = kvs[kvs.length - 1];
      if (!r.more || !last) break;
      from = Buffer.concat([last.key, Buffer.from([0])]);
    }
    return { kvs: out, revision: rev ?? 0n };
  }

  async put(key: string | Buffer, value: string | Buffer, lease?: string): Promise<void> {
    const req: Record<string, unknown> = { key: b64(key), value: b64(value) };
    if (lease && lease !== '0') req['lease'] = lease;
    await this.call('kv/put', req);
  }

  async delete(key: string | Buffer): Promise<void> {
    await this.call('kv/deleterange', { key: b64(key) });
  }

  async txn(compare: Compare[], success: RequestOp[], failure: RequestOp[] = []): Promise<RawTxn> {
    return this.call<RawTxn>('kv/txn', { compare, success, failure });
  }

  /** A new lease; returns its id and the TTL etcd granted (it may raise a very short one). */
  async grant(ttlSeconds: number): Promise<{ id: string; ttl: number }> {
    const r = await this.call<{ ID?: string; TTL?: string }>('lease/grant', { TTL: Math.ceil(ttlSeconds) });
    if (!r.ID) throw new FerryError('FERRY_E_INTERNAL', 'etcd lease/grant returned no lease id');
    return { id: r.ID, ttl: Number(r.TTL ?? ttlSeconds) };
  }

  /** Renews a lease once; returns the remaining TTL in seconds, 0 when the lease is gone. */
  async keepalive(id: string): Promise<number> {
    const r = await this.call<{ TTL?: string }>('lease/keepalive', { ID: id });
    return Number(r.TTL ?? 0);
  }

  /** Revokes a lease (deleting its keys); a lease already gone is fine. */
  async revoke(id: string): Promise<void> {
    try {
      await this.call('lease/revoke', { ID: id });
    } catch (err) {
      if (!isLeaseNotFound(err)) throw err;
    }
  }

  /** etcd's version (GET /version), e.g. { etcdserver: '3.4.23', etcdcluster: '3.4.0' }. */
  async version(): Promise<{ etcdserver: string; etcdcluster: string }> {
    const res = await fetch(`${this.endpoints[this.current]}/version`, {
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    return (await res.json()) as { etcdserver: string; etcdcluster: string };
  }
}

export function isLeaseNotFound(err: unknown): boolean {
  return err instanceof FerryError && /lease not found/.test(err.message);
}

// compare and request builders for txn
export const createdNot = (key: string): Compare => ({
  key: b64(key),
  target: 'CREATE',
  result: 'EQUAL',
  create_revision: '0',
});
export const modIs = (key: string, rev: bigint): Compare => ({
  key: b64(key),
  target: 'MOD',
  result: 'EQUAL',
  mod_revision: rev.toString(),
});
export const putOp = (key: string, value: string, lease?: string): RequestOp => ({
  request_put:
    lease && lease !== '0'
      ? { key: b64(key), value: b64(value), lease }
      : { key: b64(key), value: b64(value) },
});
export const rangeOp = (key: string): RequestOp => ({ request_range: { key: b64(key) } });

export function firstKv(t: RawTxn, i: number): EtcdKV | undefined {
  const kv = t.responses?.[i]?.response_range?.kvs?.[0];
  return kv ? kvFromRaw(kv) : undefined;
}
