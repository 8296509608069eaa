// ClusterStore on node:sqlite: one file (WAL, synchronous=FULL), schema versioned by a row in `meta`.
// For a single controller; several controllers share state through EtcdStore instead.
import { DatabaseSync, type SQLInputValue } from 'node:sqlite';
import { FerryError } from '../core/errors.ts';
import {
  applyMigrationPatch,
  type ClusterStore,
  type ContainerStat,
  checkContainerStats,
  checkHostRecord,
  checkMigration,
  type HostRecord,
  type MigrationFilter,
  type MigrationPatch,
  type MigrationRecord,
  type MigrationStatus,
} from './store.ts';

/** Each entry brings the schema from version i to i+1; never edit a released one, append. */
const MIGRATIONS: string[] = [
  `CREATE TABLE hosts (
     name TEXT PRIMARY KEY,
     address TEXT NOT NULL,
     port INTEGER NOT NULL,
     capacity TEXT NOT NULL,           -- JSON {cores, memoryBytes}
     last_seen INTEGER NOT NULL,
     up INTEGER NOT NULL
   );
   CREATE TABLE containers (
     host TEXT NOT NULL,
     name TEXT NOT NULL,
     cpu_percent REAL NOT NULL,
     memory_bytes INTEGER NOT NULL,
     memory_limit INTEGER,
     status TEXT NOT NULL,
     ip TEXT,
     PRIMARY KEY (host, name)
   );
   CREATE TABLE migrations (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     id TEXT NOT NULL UNIQUE,
     container TEXT NOT NULL,
     from_host TEXT NOT NULL,
     to_host TEXT NOT NULL,
     status TEXT NOT NULL,
     reason TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     started_at INTEGER,
     finished_at INTEGER,
     freeze_ms REAL,
     report TEXT,                      -- JSON; NULL when absent
     error TEXT,
     batch TEXT
   );
   CREATE INDEX migrations_order ON migrations (created_at, seq);
   CREATE INDEX migrations_status ON migrations (status);
   CREATE INDEX migrations_container ON migrations (container);
   CREATE INDEX migrations_batch ON migrations (batch);`,
];

export const SQLITE_SCHEMA_VERSION = MIGRATIONS.length;

type Row = Record<string, SQLInputValue>;

export class SqliteStore implements ClusterStore {
  readonly path: string;
  private db: DatabaseSync | undefined;

  /** Opens (creating if needed) the store at `path`; `:memory:` for a throwaway one. */
  constructor(path: string) {
    this.path = path;
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(path);
    } catch (err) {
      throw new FerryError(
        'FERRY_E_INTERNAL',
        `cannot open the cluster store ${path}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    try {
      db.exec('PRAGMA busy_timeout = 5000');
      db.exec('PRAGMA journal_mode = WAL');
      db.exec('PRAGMA synchronous = FULL');
      migrate(db, path);
    } catch (err) {
      db.close();
      throw err;
    }
    this.db = db;
  }

  private get conn(): DatabaseSync {
    if (!this.db) throw new FerryError('FERRY_E_INTERNAL', `cluster store ${this.path} is closed`);
    return this.db;
  }

  private tx<T>(fn: (db: DatabaseSync) => T): T {
    const db = this.conn;
    db.exec('BEGIN IMMEDIATE');
    try {
      const out = fn(db);
      db.exec('COMMIT');
      return out;
    } catch (err) {
      if (db.isTransaction) db.exec('ROLLBACK');
      throw err;
    }
  }

  async upsertHost(h: HostRecord): Promise<void> {
    checkHostRecord(h);
    this.conn
      .prepare(
        `INSERT INTO hosts (name, address, port, capacity, last_seen, up) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET address = excluded.address, port = excluded.port,
           capacity = excluded.capacity, last_seen = excluded.last_seen, up = excluded.up`,
      )
      .run(
        h.name,
        h.address,
        h.port,
        JSON.stringify({ cores: h.capacity.cores, memoryBytes: h.capacity.memoryBytes }),
        h.lastSeen,
        h.up ? 1 : 0,
      );
  }

  async getHost(name: string): Promise<HostRecord | undefined> {
    const r = this.conn.prepare('SELECT * FROM hosts WHERE name = ?').get(name) as Row | undefined;
    return r ? hostFromRow(r) : undefined;
  }

  async listHosts(): Promise<HostRecord[]> {
    return (this.conn.prepare('SELECT * FROM hosts ORDER BY name').all() as Row[]).map(hostFromRow);
  }

  async setHostUp(name: string, up: boolean): Promise<void> {
    const r = this.conn.prepare('UPDATE hosts SET up = ? WHERE name = ?').run(up ? 1 : 0, name);
    if (Number(r.changes) === 0) throw new FerryError('FERRY_E_HOST_UNKNOWN', `unknown host ${name}`);
  }

  async setContainers(host: string, stats: ContainerStat[]): Promise<void> {
    const list = checkContainerStats(host, stats);
    this.tx((db) => {
      db.prepare('DELETE FROM containers WHERE host = ?').run(host);
      const ins = db.prepare(
        `INSERT INTO containers (host, name, cpu_percent, memory_bytes, memory_limit, status, ip)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
      );
      for (const c of list)
        ins.run(host, c.name, c.cpuPercent, c.memoryBytes, c.memoryLimit ?? null, c.status, c.ip ?? null);
    });
  }

  async listContainers(): Promise<(ContainerStat & { host: string })[]> {
    const rows = this.conn.prepare('SELECT * FROM containers ORDER BY host, name').all() as Row[];
    return rows.map((r) => {
      const c: ContainerStat & { host: string } = {
        host: String(r['host']),
        name: String(r['name']),
        cpuPercent: Number(r['cpu_percent']),
        memoryBytes: Number(r['memory_bytes']),
        status: String(r['status']),
      };
      if (r['memory_limit'] !== null) c.memoryLimit = Number(r['memory_limit']);
      if (r['ip'] !== null) c.ip = String(r['ip']);
      return c;
    });
  }

  async addMigration(m: MigrationRecord): Promise<void> {
    checkMigration(m);
    this.tx((db) => {
      if (db.prepare('SELECT 1 FROM migrations WHERE id = ?').get(m.id))
        throw new FerryError('FERRY_E_INPUT_REQUEST', `migration ${m.id} already exists`, { phase: 'input' });
      db.prepare(
        `INSERT INTO migrations (id, container, from_host, to_host, status, reason, created_at, started_at,
           finished_at, freeze_ms, report, error, batch) VALUES (${placeholders(13)})`,
      ).run(...migrationValues(m));
    });
  }

  async updateMigration(id: string, patch: MigrationPatch): Promise<MigrationRecord> {
    return this.tx((db) => {
      const r = db.prepare('SELECT * FROM migrations WHERE id = ?').get(id) as Row | undefined;
      if (!r) throw new FerryError('FERRY_E_MIGRATION_UNKNOWN', `unknown migration ${id}`);
      const next = applyMigrationPatch(migrationFromRow(r), patch);
      const v = migrationValues(next);
      db.prepare(
        `UPDATE migrations SET container = ?, from_host = ?, to_host = ?, status = ?, reason = ?, created_at = ?,
           started_at = ?, finished_at = ?, freeze_ms = ?, report = ?, error = ?, batch = ? WHERE id = ?`,
      ).run(...v.slice(1), id);
      return next;
    });
  }

  async listMigrations(filter?: MigrationFilter): Promise<MigrationRecord[]> {
    const where: string[] = [];
    const args: SQLInputValue[] = [];
    if (filter?.status) {
      if (filter.status.length === 0) return [];
      where.push(`status IN (${placeholders(filter.status.length)})`);
      args.push(...filter.status);
    }
    if (filter?.container !== undefined) {
      where.push('container = ?');
      args.push(filter.container);
    }
    if (filter?.batch !== undefined) {
      where.push('batch = ?');
      args.push(filter.batch);
    }
    const sql = `SELECT * FROM migrations ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, seq`;
    return (this.conn.prepare(sql).all(...args) as Row[]).map(migrationFromRow);
  }

  async setMeta(key: string, value: string): Promise<void> {
    if (typeof key !== 'string' || typeof value !== 'string')
      throw new FerryError('FERRY_E_INPUT_REQUEST', 'meta key and value must be strings', { phase: 'input' });
    this.conn
      .prepare(
        `INSERT INTO meta (scope, key, value) VALUES ('user', ?, ?)
         ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value`,
      )
      .run(key, value);
  }

  async getMeta(key: string): Promise<string | undefined> {
    const r = this.conn.prepare(`SELECT value FROM meta WHERE scope = 'user' AND key = ?`).get(key) as
      | Row
      | undefined;
    return r ? String(r['value']) : undefined;
  }

  async close(): Promise<void> {
    const db = this.db;
    this.db = undefined;
    if (db?.isOpen) db.close();
  }
}

/** Creates or upgrades the schema; the version lives in meta ('schema', 'version'). */
function migrate(db: DatabaseSync, path: string): void {
  db.exec('BEGIN IMMEDIATE');
  try {
    db.exec(
      `CREATE TABLE IF NOT EXISTS meta (scope TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
         PRIMARY KEY (scope, key))`,
    );
    const r = db.prepare(`SELECT value FROM meta WHERE scope = 'schema' AND key = 'version'`).get() as
      | Row
      | undefined;
    const have = r ? Number(r['value']) : 0;
    if (!Number.isInteger(have) || have < 0 || have > MIGRATIONS.length) {
      throw new FerryError(
        'FERRY_E_INTERNAL',
        `cluster store ${path} has schema version ${String(r?.['value'])}; this ferry knows up to ${MIGRATIONS.length}`,
        { hint: 'upgrade ferry, or point the controller at another store' },
      );
    }
    for (let v = have; v < MIGRATIONS.length; v++) db.exec(MIGRATIONS[v]!);
    if (have !== MIGRATIONS.length)
      db.prepare(
        `INSERT INTO meta (scope, key, value) VALUES ('schema', 'version', ?)
         ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value`,
      ).run(String(MIGRATIONS.length));
    db.exec('COMMIT');
  } catch (err) {
    if (db.isTransaction) db.exec('ROLLBACK');
    throw err;
  }
}

function placeholders(n: number): string {
  return Array.from({ length: n }, () => '?').join(', ');
}

function hostFromRow(r: Row): HostRecord {
  const cap = JSON.parse(String(r['capacity'])) as { cores: number; memoryBytes: number };
  return {
    name: String(r['name']),
    address: String(r['address']),
    port: Number(r['port']),
    capacity: { cores: cap.cores, memoryBytes: cap.memoryBytes },
    lastSeen: Number(r['last_seen']),
    up: Number(r['up']) !== 0,
  };
}

function migrationValues(m: MigrationRecord): SQLInputValue[] {
  return [
    m.id,
    m.container,
    m.from,
    m.to,
    m.status,
    m.reason,
    m.createdAt,
    m.startedAt ?? null,
    m.finishedAt ?? null,
    m.freezeMs ?? null,
    m.report === undefined ? null : JSON.stringify(m.report),
    m.error ?? null,
    m.batch ?? null,
  ];
}

function migrationFromRow(r: Row): MigrationRecord {
  const m: MigrationRecord = {
    id: String(r['id']),
    container: String(r['container']),
    from: String(r['from_host']),
    to: String(r['to_host']),
    status: String(r['status']) as MigrationStatus,
    reason: String(r['reason']),
    createdAt: Number(r['created_at']),
  };
  if (r['started_at'] !== null) m.startedAt = Number(r['started_at']);
  if (r['finished_at'] !== null) m.finishedAt = Number(r['finished_at']);
  if (r['freeze_ms'] !== null) m.freezeMs = Number(r['freeze_ms']);
  if (r['report'] !== null) m.report = JSON.parse(String(r['report']));
  if (r['error'] !== null) m.error = String(r['error']);
  if (r['batch'] !== null) m.batch = String(r['batch']);
  return m;
}
