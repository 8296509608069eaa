// The controller's etcd client: etcd's own gRPC API through the maintained `etcd3` package (failover between
// endpoints, TLS with a client certificate, etcd's users with their token renewed when etcd lets it expire, all
// at once), narrowed to what the store and the leader election use: range, put, delete, txn, leases, and a watch
// for a key's deletion. Also the compare / request builders the two put into txns. Every failure leaves as one
// FerryError that says what etcd refused and why (a user, a permission, a certificate) or that it is unreachable.
import {
  CompareResult,
  CompareTarget,
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  GRPCDeadlineExceededError,
  GRPCUnauthenticatedError,
  type ICompare,
  type IKeyValue,
  type IOptions,
  type IRequestOp,
  type ITxnResponse,
} from 'etcd3';
import { FerryError } from '../../core/errors.ts';
import { certificateName } from '../../runtime/pki.ts';

export interface EtcdClientOptions {
  /** e.g. https://10.0.0.5:2379; the client moves to another when one fails. */
  endpoints?: string | string[];
  /** One endpoint (joined to `endpoints` when both are given). */
  endpoint?: string;
  /** Per request; default 5000 ms. */
  timeoutMs?: number;
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

export type Compare = ICompare;
export type RequestOp = IRequestOp;
export type RawTxn = ITxnResponse;

const buf = (b: Buffer | string): Buffer => (typeof b === 'string' ? Buffer.from(b) : b);

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

function kvFromRaw(r: IKeyValue): EtcdKV {
  return {
    key: Buffer.from(r.key),
    value: Buffer.from(r.value ?? Buffer.alloc(0)),
    createRevision: BigInt(r.create_revision ?? '0'),
    modRevision: BigInt(r.mod_revision ?? '0'),
    lease: String(r.lease ?? '0'),
  };
}

/** A TLS failure in words (etcd's certificate not trusted, ours refused), or undefined for anything else. */
function tlsFailure(message: string): string | undefined {
  const patterns = [
    /alert (bad certificate|certificate required|unknown ca|certificate expired|certificate revoked|[a-z ]+?)(?::|$)/i,
    /(self[- ]signed certificate[a-z ]*)/i,
    /(unable to (?:verify|get)[a-z ]*)/i,
    /(certificate has expired|certificate is not yet valid|certificate signature failure)/i,
    /\b(CERT_\w+|UNABLE_TO_\w+|SELF_SIGNED_\w+|DEPTH_ZERO_\w+|ERR_TLS_\w+)/,
  ];
  for (const re of patterns) {
    const m = re.exec(message);
    if (m) return `TLS handshake failed: ${re === patterns[0] ? `etcd sent the alert "${m[1]}"` : m[1]}`;
  }
  return undefined;
}

/** etcd over gRPC. Lease ids stay strings (int64). */
export class EtcdClient {
  readonly endpoints: string[];
  private readonly etcd: Etcd3;
  private readonly user: string | undefined;
  /** The name (CN) of the client certificate: etcd's user when no password is given. */
  private readonly certName: string | undefined;
  private readonly tlsWithoutCertificate: boolean;

  constructor(opts: EtcdClientOptions) {
    const eps = [opts.endpoint ?? [], opts.endpoints ?? []].flat().map((e) => e.replace(/\/+$/, ''));
    if (eps.length === 0 || eps.some((e) => !/^https?:\/\/[^/]+$/.test(e)))
      throw new FerryError(
        'FERRY_E_INPUT_ARGS',
        `etcd endpoints must be http(s)://host:port, got ${eps.join(', ')}`,
      );
    const https = eps.filter((e) => e.startsWith('https://')).length;
    if (opts.tls && https !== eps.length)
      throw new FerryError(
        'FERRY_E_INPUT_ARGS',
        `etcd endpoints with TLS must be https://, got ${eps.join(', ')}`,
      );
    if (!opts.tls && https > 0)
      throw new FerryError(
        'FERRY_E_INPUT_ARGS',
        `https etcd endpoints need etcd's CA (tls.ca): ${eps.join(', ')}`,
      );
    this.endpoints = eps;
    this.user = opts.auth?.user;
    try {
      this.certName = opts.tls?.cert ? certificateName(opts.tls.cert) : undefined;
    } catch {
      this.certName = undefined; // unreadable: the handshake will say so
    }
    this.tlsWithoutCertificate = opts.tls !== undefined && !opts.tls.cert;
    const timeoutMs = opts.timeoutMs ?? 5000;
    // a deadline on every call, none on the streams (a watch may wait long; keepalive() bounds its own)
    const callOptions: NonNullable<IOptions['defaultCallOptions']> = (ctx) =>
      ctx.isStream ? {} : { deadline: Date.now() + timeoutMs };
    const tls = opts.tls;
    this.etcd = new Etcd3({
      hosts: eps,
      dialTimeout: timeoutMs,
      defaultCallOptions: callOptions,
      ...(tls
        ? {
            credentials: {
              rootCertificate: buf(tls.ca),
              ...(tls.key ? { privateKey: buf(tls.key) } : {}),
              ...(tls.cert ? { certChain: buf(tls.cert) } : {}),
            },
          }
        : {}),
      ...(opts.auth ? { auth: { username: opts.auth.user, password: opts.auth.password, callOptions } } : {}),
    });
  }

  /** Closes the connections (watches included). */
  async close(): Promise<void> {
    this.etcd.close();
  }

  /** What etcd said, as one FerryError naming what was refused and why. */
  private failure(what: string, err: unknown): FerryError {
    if (err instanceof FerryError) return err;
    const e = err as Error;
    // gRPC's "7 PERMISSION_DENIED: " before etcd's own words says nothing more
    const msg = (e?.message ?? String(err)).replace(/^\w*Error: /, '').replace(/^\d+ [A-Z_]+: /, '');
    const where = this.endpoints.join(', ');
    const hint = (h: string) => ({
      cause: err,
      hint: h,
      details: { endpoints: this.endpoints, operation: what },
    });
    if (err instanceof EtcdAuthenticationFailedError)
      return new FerryError('FERRY_E_AUTH', `etcd refused user ${this.user ?? '(none)'}: ${msg}`, {
        ...hint("check the store's auth user and password file"),
      });
    if (err instanceof EtcdPermissionDeniedError)
      return new FerryError(
        'FERRY_E_AUTH',
        `etcd refused ${what} to ${this.user ? `user ${this.user}` : `user ${this.certName ?? '(none)'} (the client certificate's name)`}: ${msg}`,
        hint("grant the user a role with readwrite on the store's prefix (etcdctl role grant-permission)"),
      );
    if (err instanceof GRPCUnauthenticatedError || err instanceof EtcdInvalidAuthTokenError)
      return new FerryError('FERRY_E_AUTH', `etcd refused ${what}: ${msg}`, {
        ...hint(
          "etcd's authentication is on: give the store auth (user and password file), or a client certificate whose name is an etcd user",
        ),
      });
    const tls = tlsFailure(msg);
    if (tls && this.tlsWithoutCertificate && /bad certificate|certificate required/.test(tls))
      return new FerryError(
        'FERRY_E_AUTH',
        `etcd ${where} wants a client certificate (--client-cert-auth): ${tls}`,
        hint("give the store tls.cert and tls.key: a certificate of etcd's client CA"),
      );
    if (tls)
      return new FerryError(
        'FERRY_E_AUTH',
        `etcd ${where}: ${tls}`,
        hint("check the store's tls files: etcd's CA, and a client certificate etcd trusts"),
      );
    if (err instanceof EtcdLeaseInvalidError)
      return new FerryError('FERRY_E_INTERNAL', `etcd ${what}: lease not found (${msg})`, { cause: err });
    if (/etcdserver:/.test(msg))
      return new FerryError('FERRY_E_INTERNAL', `etcd ${what}: ${msg}`, { cause: err });
    // unreachable: no connection, a deadline, or a connection etcd closed (under TLS 1.3 a server that wants a
    // client certificate closes it after the handshake)
    const closed = this.tlsWithoutCertificate;
    return new FerryError(
      'FERRY_E_INTERNAL',
      `etcd unreachable at ${where}${closed ? ' (it closed the connection or did not answer)' : ''}: ${msg}`,
      {
        ...hint(
          closed
            ? 'etcd may want a client certificate (--client-cert-auth): give the store tls.cert and tls.key'
            : 'is etcd running and listening there?',
        ),
      },
    );
  }

  private async run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.failure(what, err);
    }
  }

  async get(key: string | Buffer): Promise<EtcdKV | undefined> {
    const r = await this.run('range', () => this.etcd.kv.range({ key: buf(key) }));
    const kv = r.kvs?.[0];
    return kv ? kvFromRaw(kv) : undefined;
  }

  /** Every key under the prefix at one revision (paged), in key order. */
  async getPrefix(prefix: string, revision?: bigint): Promise<{ kvs: EtcdKV[]; revision: bigint }> {
    const p = Buffer.from(prefix);
    const end = prefixEnd(p);
    let from = p;
    let rev = revision;
    const out: EtcdKV[] = [];
    for (;;) {
      const at = rev;
      const r = await this.run('range', () =>
        this.etcd.kv.range({
          key: from,
          range_end: end,
          limit: 1000,
          ...(at !== undefined ? { revision: at.toString() } : {}),
        }),
      );
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
    await this.run('put', () =>
      this.etcd.kv.put({ key: buf(key), value: buf(value), ...(lease && lease !== '0' ? { lease } : {}) }),
    );
  }

  async delete(key: string | Buffer): Promise<void> {
    await this.run('delete', () => this.etcd.kv.deleteRange({ key: buf(key) }));
  }

  async txn(compare: Compare[], success: RequestOp[], failure: RequestOp[] = []): Promise<RawTxn> {
    return this.run('txn', () => this.etcd.kv.txn({ compare, success, failure }));
  }

  /** A new lease; returns its id and the TTL etcd granted (it may raise a very short one). */
  async grant(ttlSeconds: number): Promise<{ id: string; ttl: number }> {
    const r = await this.run('lease grant', () =>
      this.etcd.leaseClient.leaseGrant({ TTL: Math.ceil(ttlSeconds) }),
    );
    if (!r.ID || r.ID === '0')
      throw new FerryError('FERRY_E_INTERNAL', 'etcd lease grant returned no lease id');
    return { id: String(r.ID), ttl: Number(r.TTL ?? ttlSeconds) };
  }

  /** Renews a lease once; returns the remaining TTL in seconds, 0 when the lease is gone. */
  async keepalive(id: string, timeoutMs = 5000): Promise<number> {
    return this.run('lease keepalive', async () => {
      const stream = await this.etcd.leaseClient.leaseKeepAlive();
      let settled = false;
      try {
        return await new Promise<number>((resolve, reject) => {
          const settle = (f: () => void) => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            f();
          };
          const timer = setTimeout(
            () => settle(() => reject(new GRPCDeadlineExceededError('no keepalive answer'))),
            timeoutMs,
          );
          stream.on('data', (r) => settle(() => resolve(Number(r.TTL ?? 0))));
          // after the answer, ending the stream may bring a cancellation: nothing to report then
          stream.on('error', (err) => settle(() => reject(err)));
          stream.write({ ID: id });
        });
      } finally {
        stream.cancel();
      }
    });
  }

  /** Revokes a lease (deleting its keys); a lease already gone is fine. */
  async revoke(id: string): Promise<void> {
    try {
      await this.run('lease revoke', () => this.etcd.leaseClient.leaseRevoke({ ID: id }));
    } catch (err) {
      if (!isLeaseNotFound(err)) throw err;
    }
  }

  /** etcd's version, e.g. { etcdserver: '3.4.23' }. */
  async version(): Promise<{ etcdserver: string }> {
    const r = await this.run('status', () => this.etcd.maintenance.status());
    return { etcdserver: r.version };
  }

  /**
   * Waits, on etcd's watch stream, until `key` is deleted (or already absent at `afterRevision`), or until
   * `signal` aborts or `maxMs` pass: a follower's wait for the leader's key, without polling. Resolves true on a
   * deletion, false otherwise; a broken watch rejects (the caller falls back to asking).
   */
  async waitDeleted(
    key: string,
    afterRevision: bigint,
    maxMs: number,
    signal?: AbortSignal,
  ): Promise<boolean> {
    if (signal?.aborted) return false;
    const watcher = await this.run('watch', () =>
      this.etcd
        .watch()
        .key(key)
        .startRevision((afterRevision + 1n).toString())
        .create(),
    );
    return new Promise<boolean>((resolve, reject) => {
      const done = (deleted: boolean, err?: unknown) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', aborted);
        watcher.removeAllListeners();
        watcher.on('error', () => {});
        void watcher.cancel().catch(() => {});
        if (err === undefined) resolve(deleted);
        else reject(this.failure('watch', err));
      };
      const aborted = () => done(false);
      const timer = setTimeout(() => done(false), maxMs);
      signal?.addEventListener('abort', aborted);
      watcher.on('delete', () => done(true));
      watcher.on('error', (err: Error) => done(false, err));
    });
  }
}

export function isLeaseNotFound(err: unknown): boolean {
  return err instanceof FerryError && /lease not found/.test(err.message);
}

// compare and request builders for txn
export const createdNot = (key: string): Compare => ({
  key: Buffer.from(key),
  target: CompareTarget.Create,
  result: CompareResult.Equal,
  create_revision: '0',
});
export const modIs = (key: string, rev: bigint): Compare => ({
  key: Buffer.from(key),
  target: CompareTarget.Mod,
  result: CompareResult.Equal,
  mod_revision: rev.toString(),
});
export const leaseIs = (key: string, lease: string): Compare => ({
  key: Buffer.from(key),
  target: CompareTarget.Lease,
  result: CompareResult.Equal,
  lease,
});
export const putOp = (key: string, value: string, lease?: string): RequestOp => ({
  request_put: {
    key: Buffer.from(key),
    value: Buffer.from(value),
    ...(lease && lease !== '0' ? { lease } : {}),
  },
});
export const rangeOp = (key: string): RequestOp => ({ request_range: { key: Buffer.from(key) } });
export const deleteOp = (key: string): RequestOp => ({ request_delete_range: { key: Buffer.from(key) } });

export function firstKv(t: RawTxn, i: number): EtcdKV | undefined {
  const kv = t.responses?.[i]?.response_range?.kvs?.[0];
  return kv ? kvFromRaw(kv) : undefined;
}
