// ClusterStore on etcd, for several controllers sharing one cluster state. Keys (all under the prefix, names
// URI-encoded):
//   hosts/<host>        JSON HostRecord (not leased: a host stays listed after its lease expired)
//   alive/<host>        the host's liveness key, attached to a lease of hostTtlSeconds
//   containers/<host>   JSON ContainerStat[] (one key per host: replacing the list is one put)
//   migrations/<id>     JSON MigrationRecord (ordered by createdAt, then the key's create revision)
//   meta/<key>          the raw value
//   leader              the elected controller's id, attached to its lease (leader.ts)
import { FerryError } from '../../core/errors.ts';
import {
  applyMigrationPatch,
  type ClusterStore,
  type ContainerStat,
  checkContainerStats,
  checkHostRecord,
  checkMigration,
  cmp,
  type HostRecord,
  type MigrationFilter,
  type MigrationPatch,
  type MigrationRecord,
  migrationMatches,
} from '../store.ts';
import {
  createdNot,
  EtcdClient,
  type EtcdClientOptions,
  type EtcdKV,
  firstKv,
  isLeaseNotFound,
  modIs,
  putOp,
  type RequestOp,
  rangeOp,
} from './client.ts';

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
    await this.client.close();
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
