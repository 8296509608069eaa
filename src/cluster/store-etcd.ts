// ClusterStore on etcd (v3 JSON gateway over HTTP, global fetch), for several controllers sharing one cluster
// state, plus leader election on the same etcd. Keys (all under the prefix, names URI-encoded):
//   hosts/<host>        JSON HostRecord (not leased: a host stays listed after its lease expired)
//   alive/<host>        the host's liveness key, attached to a lease of hostTtlSeconds
//   containers/<host>   JSON ContainerStat[] (one key per host: replacing the list is one put)
//   migrations/<id>     JSON MigrationRecord (ordered by createdAt, then the key's create revision)
//   meta/<key>          the raw value
//   leader              the elected controller's id, attached to its lease (EtcdLeaderElection)
// etcd >= 3.4 serves the gateway at /v3/ (3.3: /v3beta/; pass gatewayPath for that).
import { FerryError } from '../core/errors.ts';
import {
  applyMigrationPatch,
  type ClusterStore,
  type ContainerStat,
  checkContainerStats,
  checkHostRecord,
  checkMigration,
  cmp,
  type HostRecord,
  type LeaderElection,
  type MigrationFilter,
  type MigrationPatch,
  type MigrationRecord,
  migrationMatches,
} from './store.ts';

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

type Compare = Record<string, unknown>;
type RequestOp = Record<string, unknown>;
interface RawTxn {
  header?: { revision?: string };
  succeeded?: boolean;
  responses?: { response_range?: RawRange }[];
}

const b64 = (b: Buffer | string): string => (typeof b === 'string' ? Buffer.from(b) : b).toString('base64');

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
const createdNot = (key: string): Compare => ({
  key: b64(key),
  target: 'CREATE',
  result: 'EQUAL',
  create_revision: '0',
});
const modIs = (key: string, rev: bigint): Compare => ({
  key: b64(key),
  target: 'MOD',
  result: 'EQUAL',
  mod_revision: rev.toString(),
});
const putOp = (key: string, value: string, lease?: string): RequestOp => ({
  request_put:
    lease && lease !== '0'
      ? { key: b64(key), value: b64(value), lease }
      : { key: b64(key), value: b64(value) },
});
const rangeOp = (key: string): RequestOp => ({ request_range: { key: b64(key) } });

function firstKv(t: RawTxn, i: number): EtcdKV | undefined {
  const kv = t.responses?.[i]?.response_range?.kvs?.[0];
  return kv ? kvFromRaw(kv) : undefined;
}

const CONFLICT_RETRIES = 10;

export interface EtcdStoreOptions extends EtcdClientOptions {
  /** Every key lives under it, e.g. /ferry/<cluster>/ (a trailing / is added when missing). */
  prefix: string;
  /** Lease TTL of a host's liveness key; default 120 s. */
  hostTtlSeconds?: number;
}

export class EtcdStore implements ClusterStore {
  readonly prefix: string;
  readonly hostTtlSeconds: number;
  readonly client: EtcdClient;
  private closed = false;

  constructor(opts: EtcdStoreOptions) {
    if (typeof opts.prefix !== 'string' || opts.prefix === '')
      throw new FerryError('FERRY_E_INPUT_ARGS', 'etcd store needs a key prefix, e.g. /ferry/<cluster>/');
    this.prefix = opts.prefix.endsWith('/') ? opts.prefix : `${opts.prefix}/`;
    this.hostTtlSeconds = opts.hostTtlSeconds ?? 120;
    if (!(this.hostTtlSeconds > 0))
      throw new FerryError('FERRY_E_INPUT_ARGS', 'hostTtlSeconds must be positive');
    this.client = new EtcdClient(opts);
  }

  private key(kind: string, name = ''): string {
    return `${this.prefix}${kind}/${encodeURIComponent(name)}`;
  }

  private get c(): EtcdClient {
    if (this.closed) throw new FerryError('FERRY_E_INTERNAL', `cluster store etcd ${this.prefix} is closed`);
    return this.client;
  }

  /**
   * Keeps the host's liveness lease going: renews the lease its alive key is attached to, or grants a fresh one
   * when that expired (the caller then attaches the key). `attached` says whether the key already holds it.
   */
  private async hostLease(alive: EtcdKV | undefined): Promise<{ lease: string; attached: boolean }> {
    if (alive && alive.lease !== '0') {
      const ttl = await this.c.keepalive(alive.lease);
      if (ttl > 0) return { lease: alive.lease, attached: true };
    }
    const g = await this.c.grant(this.hostTtlSeconds);
    return { lease: g.id, attached: false };
  }

  /** Writes a host record (when given; compare-and-swap on `mod` when given) and keeps its lease alive. */
  private async writeHost(name: string, record: HostRecord | undefined, mod?: bigint): Promise<boolean> {
    const hk = this.key('hosts', name);
    const ak = this.key('alive', name);
    for (let attempt = 0; ; attempt++) {
      const alive = await this.c.get(ak);
      const { lease, attached } = await this.hostLease(alive);
      const ops: RequestOp[] = [];
      if (record) ops.push(putOp(hk, JSON.stringify(record)));
      if (!attached) ops.push(putOp(ak, name, lease));
      if (ops.length === 0) return true;
      try {
        const t = await this.c.txn(mod === undefined ? [] : [modIs(hk, mod)], ops);
        if (!t.succeeded) {
          if (!attached) await this.c.revoke(lease).catch(() => {});
          return false;
        }
        return true;
      } catch (err) {
        // the lease expired between renewal and the write: try again with a fresh one
        if (isLeaseNotFound(err) && attempt < 2) continue;
        throw err;
      }
    }
  }

  async upsertHost(h: HostRecord): Promise<void> {
    checkHostRecord(h);
    await this.writeHost(h.name, hostCopy(h));
  }

  /** Keeps the host's lease alive (re-creating it when it expired). Unknown host → FERRY_E_HOST_UNKNOWN. */
  async refreshHost(name: string): Promise<void> {
    const kv = await this.c.get(this.key('hosts', name));
    if (!kv) throw new FerryError('FERRY_E_HOST_UNKNOWN', `unknown host ${name}`);
    await this.writeHost(name, undefined);
  }

  async getHost(name: string): Promise<HostRecord | undefined> {
    const t = await this.c.txn([], [rangeOp(this.key('hosts', name)), rangeOp(this.key('alive', name))]);
    const kv = firstKv(t, 0);
    if (!kv) return undefined;
    const h = JSON.parse(kv.value.toString()) as HostRecord;
    return { ...h, up: h.up && firstKv(t, 1) !== undefined };
  }

  /** Hosts by name; `up` is false for a host whose liveness lease expired, whatever its record says. */
  async listHosts(): Promise<HostRecord[]> {
    const hosts = await this.c.getPrefix(this.key('hosts'));
    const alive = await this.c.getPrefix(this.key('alive'), hosts.revision);
    const live = new Set(alive.kvs.map((kv) => kv.value.toString()));
    return hosts.kvs
      .map((kv) => JSON.parse(kv.value.toString()) as HostRecord)
      .map((h) => ({ ...h, up: h.up && live.has(h.name) }))
      .sort((a, b) => cmp(a.name, b.name));
  }

  /** Sets the record's flag; `up: true` also renews (or re-creates) the host's liveness lease. */
  async setHostUp(name: string, up: boolean): Promise<void> {
    const hk = this.key('hosts', name);
    for (let i = 0; i < CONFLICT_RETRIES; i++) {
      const kv = await this.c.get(hk);
      if (!kv) throw new FerryError('FERRY_E_HOST_UNKNOWN', `unknown host ${name}`);
      const h = JSON.parse(kv.value.toString()) as HostRecord;
      h.up = up;
      if (up) {
        if (await this.writeHost(name, h, kv.modRevision)) return;
      } else {
        const t = await this.c.txn([modIs(hk, kv.modRevision)], [putOp(hk, JSON.stringify(h))]);
        if (t.succeeded) return;
      }
    }
    throw conflict(`host ${name}`);
  }

  async setContainers(host: string, stats: ContainerStat[]): Promise<void> {
    const list = checkContainerStats(host, stats).map(containerCopy);
    const k = this.key('containers', host);
    if (list.length === 0) await this.c.delete(k);
    else await this.c.put(k, JSON.stringify(list));
  }

  async listContainers(): Promise<(ContainerStat & { host: string })[]> {
    const base = this.key('containers');
    const { kvs } = await this.c.getPrefix(base);
    const out: (ContainerStat & { host: string })[] = [];
    for (const kv of kvs) {
      const host = decodeURIComponent(kv.key.toString().slice(base.length));
      for (const c of JSON.parse(kv.value.toString()) as ContainerStat[]) out.push({ host, ...c });
    }
    return out.sort((a, b) => cmp(a.host, b.host) || cmp(a.name, b.name));
  }

  async addMigration(m: MigrationRecord): Promise<void> {
    checkMigration(m);
    const k = this.key('migrations', m.id);
    const t = await this.c.txn([createdNot(k)], [putOp(k, JSON.stringify(m))]);
    if (!t.succeeded)
      throw new FerryError('FERRY_E_INPUT_REQUEST', `migration ${m.id} already exists`, { phase: 'input' });
  }

  async updateMigration(id: string, patch: MigrationPatch): Promise<MigrationRecord> {
    const k = this.key('migrations', id);
    for (let i = 0; i < CONFLICT_RETRIES; i++) {
      const kv = await this.c.get(k);
      if (!kv) throw new FerryError('FERRY_E_MIGRATION_UNKNOWN', `unknown migration ${id}`);
      const next = applyMigrationPatch(JSON.parse(kv.value.toString()) as MigrationRecord, patch);
      const t = await this.c.txn([modIs(k, kv.modRevision)], [putOp(k, JSON.stringify(next))]);
      if (t.succeeded) return JSON.parse(JSON.stringify(next)) as MigrationRecord;
    }
    throw conflict(`migration ${id}`);
  }

  async listMigrations(filter?: MigrationFilter): Promise<MigrationRecord[]> {
    const { kvs } = await this.c.getPrefix(this.key('migrations'));
    return kvs
      .map((kv) => ({ m: JSON.parse(kv.value.toString()) as MigrationRecord, rev: kv.createRevision }))
      .filter((x) => migrationMatches(x.m, filter))
      .sort((a, b) => a.m.createdAt - b.m.createdAt || (a.rev < b.rev ? -1 : a.rev > b.rev ? 1 : 0))
      .map((x) => x.m);
  }

  async setMeta(key: string, value: string): Promise<void> {
    if (typeof key !== 'string' || typeof value !== 'string')
      throw new FerryError('FERRY_E_INPUT_REQUEST', 'meta key and value must be strings', { phase: 'input' });
    await this.c.put(this.key('meta', key), value);
  }

  async getMeta(key: string): Promise<string | undefined> {
    return (await this.c.get(this.key('meta', key)))?.value.toString();
  }

  /** Leaves host leases running (another controller, or this one restarted, keeps them alive). */
  async close(): Promise<void> {
    this.closed = true;
  }
}

function conflict(what: string): FerryError {
  return new FerryError('FERRY_E_INTERNAL', `${what}: too many concurrent updates in etcd, gave up`);
}

function hostCopy(h: HostRecord): HostRecord {
  return {
    name: h.name,
    address: h.address,
    port: h.port,
    capacity: { cores: h.capacity.cores, memoryBytes: h.capacity.memoryBytes },
    lastSeen: h.lastSeen,
    up: h.up,
  };
}

function containerCopy(c: ContainerStat): ContainerStat {
  const o: ContainerStat = {
    name: c.name,
    cpuPercent: c.cpuPercent,
    memoryBytes: c.memoryBytes,
    status: c.status,
  };
  if (c.memoryLimit !== undefined) o.memoryLimit = c.memoryLimit;
  if (c.ip !== undefined) o.ip = c.ip;
  return o;
}

// ---- leader election ----

export interface EtcdLeaderElectionOptions extends EtcdClientOptions {
  /** The same prefix as the store's; the leader key is `<prefix>leader`. */
  prefix: string;
  /** Lease TTL: how long a crashed leader blocks the others at most; default 10 s. */
  ttlSeconds?: number;
  /** How often a follower looks whether the leader key is free; default 500 ms. */
  retryMs?: number;
}

/**
 * Leader election on `<prefix>leader`: the candidate that creates the key (txn "create if absent", attached to
 * its lease) leads while it keeps the lease alive (every TTL/3). Followers retry every retryMs until the key is
 * gone (resign, lease revoked or expired). `onLost` fires when the leader cannot keep its lease (or the key is no
 * longer its own); it then no longer leads and must call campaign() again to rejoin.
 */
export class EtcdLeaderElection implements LeaderElection {
  readonly key: string;
  readonly ttlSeconds: number;
  readonly retryMs: number;
  readonly client: EtcdClient;
  private id: string | undefined;
  private lease: string | undefined;
  private leading = false;
  /** performance.now() after which etcd may have expired our lease */
  private deadline = 0;
  private timer: NodeJS.Timeout | undefined;
  private gen = 0;
  private running: Promise<void> | undefined;
  private readonly lostCbs: (() => void)[] = [];
  /** The last error met while campaigning or renewing (for diagnostics). */
  lastError: unknown;

  constructor(opts: EtcdLeaderElectionOptions) {
    if (typeof opts.prefix !== 'string' || opts.prefix === '')
      throw new FerryError(
        'FERRY_E_INPUT_ARGS',
        'leader election needs a key prefix, e.g. /ferry/<cluster>/',
      );
    this.key = `${opts.prefix.endsWith('/') ? opts.prefix : `${opts.prefix}/`}leader`;
    this.ttlSeconds = Math.max(2, Math.ceil(opts.ttlSeconds ?? 10));
    this.retryMs = opts.retryMs ?? 500;
    this.client = new EtcdClient(opts);
  }

  campaign(id: string): Promise<void> {
    if (typeof id !== 'string' || id === '')
      return Promise.reject(new FerryError('FERRY_E_INPUT_ARGS', 'a candidate needs a non-empty id'));
    if (this.id !== undefined && this.id !== id && (this.running || this.leading))
      return Promise.reject(new FerryError('FERRY_E_INPUT_ARGS', `already campaigning as ${this.id}`));
    if (this.isLeader()) return Promise.resolve();
    if (this.running) return this.running;
    this.id = id;
    const gen = ++this.gen;
    const run = this.loop(id, gen).finally(() => {
      if (this.running === run) this.running = undefined;
    });
    this.running = run;
    return run;
  }

  isLeader(): boolean {
    return this.leading && performance.now() < this.deadline;
  }

  onLost(cb: () => void): void {
    this.lostCbs.push(cb);
  }

  /**
   * Gives leadership up (deletes the key, revokes the lease) and stops campaigning: a pending campaign() then
   * never settles (no rejection to handle at shutdown). campaign() may be called again afterwards.
   */
  async resign(): Promise<void> {
    this.gen++;
    this.running = undefined;
    this.stopTimer();
    const lease = this.lease;
    const wasLeading = this.leading;
    this.leading = false;
    this.lease = undefined;
    if (!lease) return;
    try {
      if (wasLeading)
        await this.client.txn(
          [{ key: b64(this.key), target: 'LEASE', result: 'EQUAL', lease }],
          [{ request_delete_range: { key: b64(this.key) } }],
        );
      await this.client.revoke(lease);
    } catch (err) {
      this.lastError = err; // etcd unreachable: the lease expires by itself within the TTL
    }
  }

  private cancelled(gen: number): boolean {
    return gen !== this.gen;
  }

  private async loop(id: string, gen: number): Promise<void> {
    for (;;) {
      try {
        if (await this.attempt(id, gen)) return;
      } catch (err) {
        this.lastError = err; // etcd unreachable or busy: keep trying
      }
      await new Promise((r) => setTimeout(r, this.retryMs));
      if (this.cancelled(gen)) return new Promise<void>(() => {}); // resigned: never settles
    }
  }

  /** One try: true when this id now leads. */
  private async attempt(id: string, gen: number): Promise<boolean> {
    const cur = await this.client.get(this.key);
    if (cur) {
      // our own key from before (a restart with the same id, whose lease still runs): adopt it
      if (cur.value.toString() !== id || cur.lease === '0') return false;
      const sent = performance.now();
      const ttl = await this.client.keepalive(cur.lease);
      if (ttl <= 0) return false;
      return this.won(cur.lease, ttl, sent, gen);
    }
    const sent = performance.now();
    const g = await this.client.grant(this.ttlSeconds);
    let ok = false;
    try {
      const t = await this.client.txn([createdNot(this.key)], [putOp(this.key, id, g.id)]);
      ok = t.succeeded === true;
    } finally {
      if (!ok) await this.client.revoke(g.id).catch(() => {});
    }
    return ok && this.won(g.id, g.ttl, sent, gen);
  }

  private async won(lease: string, ttl: number, sent: number, gen: number): Promise<boolean> {
    if (this.cancelled(gen)) {
      // resigned while the txn was in flight
      await this.client
        .txn(
          [{ key: b64(this.key), target: 'LEASE', result: 'EQUAL', lease }],
          [{ request_delete_range: { key: b64(this.key) } }],
        )
        .catch(() => {});
      await this.client.revoke(lease).catch(() => {});
      return false;
    }
    this.lease = lease;
    this.leading = true;
    this.deadline = sent + ttl * 1000;
    this.schedule(gen);
    return true;
  }

  private get interval(): number {
    return Math.max(100, (this.ttlSeconds * 1000) / 3);
  }

  private schedule(gen: number): void {
    this.stopTimer();
    this.timer = setTimeout(() => void this.renew(gen), this.interval);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async renew(gen: number): Promise<void> {
    const lease = this.lease;
    if (this.cancelled(gen) || !this.leading || !lease) return;
    const sent = performance.now();
    let lost: string | undefined;
    try {
      const ttl = await this.client.keepalive(lease);
      if (this.cancelled(gen)) return;
      if (ttl <= 0) lost = 'leader lease expired or was revoked';
      else {
        const cur = await this.client.get(this.key);
        if (this.cancelled(gen)) return;
        if (!cur || cur.lease !== lease || cur.value.toString() !== this.id)
          lost = 'leader key deleted or taken over';
        else this.deadline = sent + ttl * 1000;
      }
    } catch (err) {
      if (this.cancelled(gen)) return;
      this.lastError = err;
      // give up before etcd could expire the lease while we still believe we lead
      if (performance.now() + this.interval >= this.deadline)
        lost = `leader lease could not be renewed: ${(err as Error).message}`;
    }
    if (lost) this.lose(lost, lease);
    else this.schedule(gen);
  }

  private lose(reason: string, lease: string): void {
    this.gen++;
    this.stopTimer();
    this.leading = false;
    this.lease = undefined;
    this.lastError = new FerryError('FERRY_E_INTERNAL', reason);
    void this.client.revoke(lease).catch(() => {});
    for (const cb of this.lostCbs) {
      try {
        cb();
      } catch {
        // a listener's failure is not ours
      }
    }
  }
}
