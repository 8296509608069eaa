// Minimal etcd v3 client over the JSON gateway (HTTP/1.1 through undici): range, put, delete, txn, leases, watches,
// with failover between endpoints, TLS with a client certificate, and etcd's user authentication (a token, renewed
// when etcd lets it expire). Also the compare / request builders the store and the leader election put into txns.
// etcd >= 3.4 serves the gateway at /v3/ (3.3: /v3beta/; pass gatewayPath for that).
// Over 400 lines as one file because it is one client of one protocol: the calls, the auth token, the watch stream
// and the txn builders share the endpoints, the failover and the connection pool.
import { Agent, fetch } from 'undici';
import { FerryError } from '../../core/errors.ts';

export interface EtcdClientOptions {
  /** e.g. https://10.0.0.5:2379; several are tried in turn when one is unreachable. */
  endpoints?: string | string[];
  /** One endpoint (joined to `endpoints` when both are given). */
  endpoint?: string;
  /** Per request; default 5000 ms. */
  timeoutMs?: number;
  /** Default /v3/ (etcd >= 3.4). */
  gatewayPath?: string;
  /** For https:// endpoints: the CA that signed etcd's certificate, and this client's certificate and key (PEM). */
  tls?: { ca: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
  /** etcd's authentication (`etcdctl auth enable`): this client's user and password. */
  auth?: { user: string; password: string };
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
  /** One connection pool for every request and watch, with the TLS material when there is any. */
  private readonly dispatcher: Agent;
  private readonly auth: { user: string; password: string } | undefined;
  private readonly tlsWithoutCertificate: boolean;
  /** etcd's auth token, once authenticated (it expires on etcd's side; renewed on the first refusal). */
  private token: Promise<string> | undefined;

  constructor(opts: EtcdClientOptions) {
    const eps = [opts.endpoint ?? [], opts.endpoints ?? []].flat().map((e) => e.replace(/\/+$/, ''));
    if (eps.length === 0 || eps.some((e) => !/^https?:\/\/[^/]+$/.test(e)))
      throw new FerryError(
        'FERRY_E_INPUT_ARGS',
        `etcd endpoints must be http(s)://host:port, got ${eps.join(', ')}`,
      );
    if (opts.tls && eps.some((e) => e.startsWith('http://')))
      throw new FerryError(
        'FERRY_E_INPUT_ARGS',
        `etcd endpoints with TLS must be https://, got ${eps.join(', ')}`,
      );
    this.endpoints = eps;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    const gp = opts.gatewayPath ?? '/v3/';
    this.gatewayPath = `/${gp.replace(/^\/+|\/+$/g, '')}/`;
    this.auth = opts.auth;
    this.tlsWithoutCertificate = opts.tls !== undefined && !opts.tls.cert;
    this.dispatcher = new Agent({
      keepAliveTimeout: 10_000,
      ...(opts.tls
        ? {
            connect: {
              ca: opts.tls.ca,
              ...(opts.tls.cert ? { cert: opts.tls.cert } : {}),
              ...(opts.tls.key ? { key: opts.tls.key } : {}),
            },
          }
        : {}),
    });
  }

  /** Closes the connections (watches included). */
  async close(): Promise<void> {
    await this.dispatcher.close().catch(() => {});
  }

  private headers(token: string | undefined): Record<string, string> {
    return token
      ? { 'content-type': 'application/json', authorization: token }
      : { 'content-type': 'application/json' };
  }

  /** The auth token (authenticating once); undefined without auth. */
  private async authToken(): Promise<string | undefined> {
    if (!this.auth) return undefined;
    const auth = this.auth;
    this.token ??= this.raw<{ token?: string }>(
      'auth/authenticate',
      { name: auth.user, password: auth.password },
      undefined,
    )
      .then((r) => {
        if (!r.token) throw new FerryError('FERRY_E_INTERNAL', 'etcd auth/authenticate returned no token');
        return r.token;
      })
      .catch((err: unknown) => {
        this.token = undefined;
        if (err instanceof FerryError && err.code === 'FERRY_E_AUTH') throw err;
        const msg = (err as Error).message;
        throw new FerryError(
          'FERRY_E_AUTH',
          `etcd refused user ${auth.user}: ${msg.replace(/^etcd auth\/authenticate: /, '')}`,
          { cause: err, hint: "check the store's auth user and password file" },
        );
      });
    return this.token;
  }

  /**
   * POSTs to the gateway (`path` like `kv/range`) with the auth token; a token etcd no longer knows is renewed
   * once. Network failures move on to the next endpoint.
   */
  async call<T>(path: string, body: unknown): Promise<T> {
    const token = await this.authToken();
    try {
      return await this.raw<T>(path, body, token);
    } catch (err) {
      if (
        !token ||
        !/invalid auth token|auth token is expired|token.*(expired|invalid)/i.test((err as Error).message)
      )
        throw err;
      this.token = undefined;
      return this.raw<T>(path, body, await this.authToken());
    }
  }

  private async raw<T>(path: string, body: unknown, token: string | undefined): Promise<T> {
    let lastErr: unknown;
    for (let n = 0; n < this.endpoints.length; n++) {
      const i = (this.current + n) % this.endpoints.length;
      const url = `${this.endpoints[i]}${this.gatewayPath}${path}`;
      let res: Awaited<ReturnType<typeof fetch>>;
      let text: string;
      try {
        res = await fetch(url, {
          method: 'POST',
          headers: this.headers(token),
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(this.timeoutMs),
          dispatcher: this.dispatcher,
        });
        text = await res.text();
      } catch (err) {
        const tlsProblem = tlsFailure(err);
        if (tlsProblem)
          throw new FerryError('FERRY_E_AUTH', `etcd ${this.endpoints[i]}: ${tlsProblem}`, {
            cause: err,
            hint: "check the store's tls files: etcd's CA, and a client certificate etcd trusts",
          });
        lastErr = err;
        continue;
      }
      this.current = i;
      // etcd's gateway refuses a client certificate with a CommonName while its authentication is on (the name
      // would otherwise stand for a user the gateway cannot pass on)
      if (res.status === 400 && /^CommonName of client/.test(text))
        throw new FerryError(
          'FERRY_E_AUTH',
          `etcd ${this.endpoints[i]} takes no client certificate while its authentication is on`,
          { hint: "give the store either tls.cert/tls.key (etcd's --client-cert-auth) or auth, not both" },
        );
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
    const reason = lastErr instanceof Error ? (lastErr.cause ?? lastErr).toString() : String(lastErr);
    // under TLS 1.3 a server that wants a client certificate closes the connection after the handshake
    const closed = this.tlsWithoutCertificate && /other side closed|ECONNRESET/.test(reason);
    throw new FerryError(
      'FERRY_E_INTERNAL',
      `etcd unreachable at ${this.endpoints.join(', ')}${closed ? ' (it closed the connection)' : ''}`,
      {
        cause: lastErr,
        details: { reason },
        hint: closed
          ? 'etcd may want a client certificate (--client-cert-auth): give the store tls.cert and tls.key'
          : 'is etcd running and listening there?',
      },
    );
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
      dispatcher: this.dispatcher,
    });
    return (await res.json()) as { etcdserver: string; etcdcluster: string };
  }

  /**
   * Waits, on etcd's watch stream, until `key` is deleted (or already absent at `afterRevision`), or until
   * `signal` aborts or `maxMs` pass: a follower's wait for the leader's key, without polling. Resolves true on a
   * deletion, false otherwise; a broken stream rejects (the caller falls back to asking).
   */
  async waitDeleted(
    key: string,
    afterRevision: bigint,
    maxMs: number,
    signal?: AbortSignal,
  ): Promise<boolean> {
    const token = await this.authToken();
    const stop = AbortSignal.any([AbortSignal.timeout(maxMs), ...(signal ? [signal] : [])]);
    let res: Awaited<ReturnType<typeof fetch>>;
    try {
      res = await fetch(`${this.endpoints[this.current]}${this.gatewayPath}watch`, {
        method: 'POST',
        headers: this.headers(token),
        body: JSON.stringify({
          create_request: { key: b64(key), start_revision: (afterRevision + 1n).toString() },
        }),
        signal: stop,
        dispatcher: this.dispatcher,
      });
    } catch (err) {
      if (stop.aborted) return false;
      throw err;
    }
    if (!res.ok || !res.body) throw new FerryError('FERRY_E_INTERNAL', `etcd watch: HTTP ${res.status}`);
    let buffered = '';
    try {
      for await (const chunk of res.body) {
        buffered += Buffer.from(chunk as Uint8Array).toString('utf8');
        let nl = buffered.indexOf('\n');
        while (nl >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          nl = buffered.indexOf('\n');
          if (!line) continue;
          const j = JSON.parse(line) as { result?: WatchResult; error?: { message?: string } };
          if (j.error) throw new FerryError('FERRY_E_INTERNAL', `etcd watch: ${j.error.message ?? 'failed'}`);
          if (j.result?.canceled)
            throw new FerryError('FERRY_E_INTERNAL', `etcd watch canceled: ${j.result.cancel_reason ?? ''}`);
          if (j.result?.events?.some((e) => e.type === 'DELETE')) return true;
        }
      }
    } catch (err) {
      if (stop.aborted) return false;
      throw err;
    }
    return false;
  }
}

interface WatchResult {
  canceled?: boolean;
  cancel_reason?: string;
  events?: { type?: 'PUT' | 'DELETE'; kv?: RawKV }[];
}

/** A TLS failure in words (etcd's certificate not trusted, ours refused), or undefined for anything else. */
function tlsFailure(err: unknown): string | undefined {
  for (
    let e = err as { code?: unknown; message?: unknown; cause?: unknown } | undefined, d = 0;
    e && d < 6;
    d++
  ) {
    const code = typeof e.code === 'string' ? e.code : '';
    const msg = typeof e.message === 'string' ? e.message : '';
    if (/CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|ERR_SSL|alert/i.test(`${code} ${msg}`))
      return `TLS handshake failed: ${code || msg}${code && msg && !msg.includes(code) ? ` (${msg})` : ''}`;
    e = e.cause as typeof e;
  }
  return undefined;
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
