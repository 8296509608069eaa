// The controller's state store: one interface, two implementations (SQLite for a single controller, etcd for
// several with leader election). Both pass the same contract suite (test/support/store-contract.ts).
import type { ContainerStat, HostRecord, MigrationRecord, MigrationStatus } from '../api/types.ts';
import { FerryError } from '../core/errors.ts';

export type { ContainerStat, HostRecord, MigrationRecord, MigrationStatus };

export const MIGRATION_STATUSES: readonly MigrationStatus[] = ['planned', 'running', 'done', 'failed'];

export type MigrationPatch = Partial<Omit<MigrationRecord, 'id'>>;

export interface MigrationFilter {
  status?: MigrationStatus[];
  container?: string;
  batch?: string;
}

export interface ClusterStore {
  /** Replaces the whole record of the host (creating it if new). */
  upsertHost(h: HostRecord): Promise<void>;
  getHost(name: string): Promise<HostRecord | undefined>;
  /** Ordered by name. */
  listHosts(): Promise<HostRecord[]>;
  /** Unknown host → FERRY_E_HOST_UNKNOWN. */
  setHostUp(name: string, up: boolean): Promise<void>;
  /** Replaces the host's container list. */
  setContainers(host: string, stats: ContainerStat[]): Promise<void>;
  /** Ordered by host, then container name. */
  listContainers(): Promise<(ContainerStat & { host: string })[]>;
  /** id unique; duplicate id → FERRY_E_INPUT_REQUEST. */
  addMigration(m: MigrationRecord): Promise<void>;
  /** Merges the patch (properties set to undefined are left as they are); unknown → FERRY_E_MIGRATION_UNKNOWN. */
  updateMigration(id: string, patch: MigrationPatch): Promise<MigrationRecord>;
  /** Oldest first (createdAt, then insertion order). */
  listMigrations(filter?: MigrationFilter): Promise<MigrationRecord[]>;
  setMeta(key: string, value: string): Promise<void>;
  getMeta(key: string): Promise<string | undefined>;
  close(): Promise<void>;
}

export interface LeaderElection {
  /** Resolves once this id is leader. */
  campaign(id: string): Promise<void>;
  isLeader(): boolean;
  resign(): Promise<void>;
  /** Called when leadership is lost involuntarily (not on resign). */
  onLost(cb: () => void): void;
}

// ---- helpers shared by the implementations ----

function bad(message: string): FerryError {
  return new FerryError('FERRY_E_INPUT_REQUEST', message, { phase: 'input' });
}

function isNum(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

export function checkHostRecord(h: HostRecord): void {
  if (!h || typeof h.name !== 'string' || h.name === '') throw bad('host record needs a name');
  if (typeof h.address !== 'string') throw bad(`host ${h.name}: address must be a string`);
  if (!isNum(h.port)) throw bad(`host ${h.name}: port must be a number`);
  if (!h.capacity || !isNum(h.capacity.cores) || !isNum(h.capacity.memoryBytes))
    throw bad(`host ${h.name}: capacity needs cores and memoryBytes`);
  if (!isNum(h.lastSeen)) throw bad(`host ${h.name}: lastSeen must be a number`);
  if (typeof h.up !== 'boolean') throw bad(`host ${h.name}: up must be a boolean`);
}

/** Validates a host's container list (names unique) and returns it ordered by name. */
export function checkContainerStats(host: string, stats: ContainerStat[]): ContainerStat[] {
  if (typeof host !== 'string' || host === '') throw bad('container list needs a host name');
  if (!Array.isArray(stats)) throw bad(`host ${host}: container list must be an array`);
  const seen = new Set<string>();
  for (const c of stats) {
    if (!c || typeof c.name !== 'string' || c.name === '')
      throw bad(`host ${host}: container without a name`);
    if (seen.has(c.name)) throw bad(`host ${host}: container ${c.name} listed twice`);
    seen.add(c.name);
  }
  return [...stats].sort((a, b) => cmp(a.name, b.name));
}

export function checkMigration(m: MigrationRecord): void {
  if (!m || typeof m.id !== 'string' || m.id === '') throw bad('migration record needs an id');
  for (const k of ['container', 'from', 'to', 'reason'] as const)
    if (typeof m[k] !== 'string') throw bad(`migration ${m.id}: ${k} must be a string`);
  if (!MIGRATION_STATUSES.includes(m.status))
    throw bad(`migration ${m.id}: unknown status ${String(m.status)}`);
  if (!isNum(m.createdAt)) throw bad(`migration ${m.id}: createdAt must be a number`);
}

/** The stored record after a patch: undefined properties are ignored, `id` cannot change. */
export function applyMigrationPatch(m: MigrationRecord, patch: MigrationPatch): MigrationRecord {
  const out: Record<string, unknown> = { ...m };
  for (const [k, v] of Object.entries(patch ?? {})) {
    if (k === 'id' || v === undefined) continue;
    out[k] = v;
  }
  const r = out as unknown as MigrationRecord;
  checkMigration(r);
  return r;
}

export function migrationMatches(m: MigrationRecord, f: MigrationFilter | undefined): boolean {
  if (!f) return true;
  if (f.status && !f.status.includes(m.status)) return false;
  if (f.container !== undefined && m.container !== f.container) return false;
  if (f.batch !== undefined && m.batch !== f.batch) return false;
  return true;
}

export function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
