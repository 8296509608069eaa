// The behaviour every ClusterStore must have; each implementation's test file runs it on a fresh store per test.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { ClusterStore, ContainerStat, HostRecord, MigrationRecord } from '../../src/cluster/store.ts';
import { type ErrorCode, FerryError } from '../../src/core/errors.ts';

export function storeContract(
  name: string,
  make: () => Promise<{ store: ClusterStore; cleanup(): Promise<void> }>,
): void {
  describe(`${name}: ClusterStore contract`, () => {
    let store: ClusterStore;
    let cleanup: (() => Promise<void>) | undefined;

    beforeEach(async () => {
      const made = await make();
      store = made.store;
      cleanup = made.cleanup;
    });
    afterEach(async () => {
      const c = cleanup;
      cleanup = undefined;
      await c?.();
    });

    it('hosts: upsert, get, list by name, replace', async () => {
      assert.equal(await store.getHost('h1'), undefined);
      assert.deepEqual(await store.listHosts(), []);
      await store.upsertHost(host('h2', { port: 7002 }));
      await store.upsertHost(host('h1'));
      assert.deepEqual(await store.getHost('h1'), host('h1'));
      assert.deepEqual(await store.listHosts(), [host('h1'), host('h2', { port: 7002 })]);
      const moved = host('h1', {
        address: '10.0.0.9',
        lastSeen: 1_700_000_009_000,
        capacity: { cores: 16, memoryBytes: 64 * 2 ** 30 },
      });
      await store.upsertHost(moved);
      assert.deepEqual(await store.getHost('h1'), moved);
      assert.equal((await store.listHosts()).length, 2);
    });

    it('hosts: up flag', async () => {
      await store.upsertHost(host('h1'));
      await store.upsertHost(host('h2'));
      await store.setHostUp('h1', false);
      assert.equal((await store.getHost('h1'))?.up, false);
      assert.deepEqual(
        (await store.listHosts()).map((h) => [h.name, h.up]),
        [
          ['h1', false],
          ['h2', true],
        ],
      );
      await store.setHostUp('h1', true);
      assert.equal((await store.getHost('h1'))?.up, true);
      await store.upsertHost(host('h2', { up: false }));
      assert.equal((await store.getHost('h2'))?.up, false);
      // the rest of the record is untouched
      assert.deepEqual(await store.getHost('h1'), host('h1'));
      await assertCode(store.setHostUp('nope', false), 'FERRY_E_HOST_UNKNOWN');
    });

    it('containers: replaced per host, listed with their host', async () => {
      assert.deepEqual(await store.listContainers(), []);
      const web: ContainerStat = {
        name: 'web',
        cpuPercent: 12.5,
        memoryBytes: 100e6,
        memoryLimit: 512e6,
        status: 'running',
        ip: '10.88.0.2',
      };
      const db: ContainerStat = { name: 'db', cpuPercent: 0, memoryBytes: 300e6, status: 'paused' };
      const cache: ContainerStat = { name: 'cache', cpuPercent: 3, memoryBytes: 50e6, status: 'running' };
      await store.setContainers('h1', [web, db]);
      await store.setContainers('h2', [cache]);
      assert.deepEqual(await store.listContainers(), [
        { host: 'h1', ...db },
        { host: 'h1', ...web },
        { host: 'h2', ...cache },
      ]);
      const web2 = { ...web, cpuPercent: 90 };
      await store.setContainers('h1', [web2]);
      assert.deepEqual(await store.listContainers(), [
        { host: 'h1', ...web2 },
        { host: 'h2', ...cache },
      ]);
      await store.setContainers('h2', []);
      assert.deepEqual(await store.listContainers(), [{ host: 'h1', ...web2 }]);
      // a container that moved shows up on its new host only
      await store.setContainers('h1', []);
      await store.setContainers('h2', [web2]);
      assert.deepEqual(await store.listContainers(), [{ host: 'h2', ...web2 }]);
    });

    it('migrations: add, list oldest first, filter', async () => {
      assert.deepEqual(await store.listMigrations(), []);
      const a = mig('zz-first', { createdAt: 1000, container: 'web', batch: 'drain-1' });
      const b = mig('aa-second', { createdAt: 2000, container: 'db', status: 'running', batch: 'drain-1' });
      const c = mig('mm-third', { createdAt: 3000, container: 'web', status: 'done', freezeMs: 41.5 });
      const d = mig('bb-same-time-as-c', {
        createdAt: 3000,
        container: 'cache',
        status: 'failed',
        error: 'boom',
      });
      await store.addMigration(b);
      await store.addMigration(a);
      await store.addMigration(c);
      await store.addMigration(d);
      assert.deepEqual(await store.listMigrations(), [a, b, c, d], 'by createdAt, ties in insertion order');
      assert.deepEqual(await store.listMigrations({}), [a, b, c, d]);
      assert.deepEqual(await store.listMigrations({ status: ['planned', 'running'] }), [a, b]);
      assert.deepEqual(await store.listMigrations({ status: ['failed'] }), [d]);
      assert.deepEqual(await store.listMigrations({ status: [] }), []);
      assert.deepEqual(await store.listMigrations({ container: 'web' }), [a, c]);
      assert.deepEqual(await store.listMigrations({ batch: 'drain-1' }), [a, b]);
      assert.deepEqual(
        await store.listMigrations({ batch: 'drain-1', container: 'db', status: ['running'] }),
        [b],
      );
      assert.deepEqual(await store.listMigrations({ batch: 'drain-1', status: ['done'] }), []);
      assert.deepEqual(await store.listMigrations({ container: 'nope' }), []);
    });

    it('migrations: update merges, persists and returns the record', async () => {
      const a = mig('m1', { batch: 'rebalance-7' });
      await store.addMigration(a);
      const started = await store.updateMigration('m1', { status: 'running', startedAt: 1500 });
      assert.deepEqual(started, { ...a, status: 'running', startedAt: 1500 });
      const report = { strategy: 'precopy', rounds: [{ pages: 12, ms: 3.5 }], ok: true, note: null };
      const done = await store.updateMigration('m1', {
        status: 'done',
        finishedAt: 2500,
        freezeMs: 87,
        report,
        error: undefined,
      });
      const want: MigrationRecord = {
        ...a,
        status: 'done',
        startedAt: 1500,
        finishedAt: 2500,
        freezeMs: 87,
        report,
      };
      assert.deepEqual(done, want);
      assert.deepEqual(await store.listMigrations(), [want]);
      assert.deepEqual(await store.listMigrations({ status: ['done'] }), [want]);
      assert.deepEqual(await store.listMigrations({ status: ['planned', 'running'] }), []);
      // the id is not part of a patch
      const again = await store.updateMigration('m1', {
        id: 'other',
        reason: 'changed',
      } as Partial<MigrationRecord>);
      assert.equal(again.id, 'm1');
      assert.equal(again.reason, 'changed');
    });

    it('migrations: a duplicate id is refused and leaves the first untouched', async () => {
      const a = mig('dup', { container: 'web' });
      await store.addMigration(a);
      await assertCode(
        store.addMigration(mig('dup', { container: 'other', createdAt: 5 })),
        'FERRY_E_INPUT_REQUEST',
      );
      assert.deepEqual(await store.listMigrations(), [a]);
    });

    it('migrations: updating an unknown id fails', async () => {
      await assertCode(store.updateMigration('ghost', { status: 'done' }), 'FERRY_E_MIGRATION_UNKNOWN');
      await store.addMigration(mig('real'));
      await assertCode(store.updateMigration('ghost', { status: 'done' }), 'FERRY_E_MIGRATION_UNKNOWN');
      assert.equal((await store.listMigrations())[0]?.status, 'planned');
    });

    it('meta: set, get, overwrite; unknown is undefined', async () => {
      assert.equal(await store.getMeta('policy.version'), undefined);
      await store.setMeta('policy.version', '1');
      await store.setMeta('cluster', 'lab / ünïcode');
      assert.equal(await store.getMeta('policy.version'), '1');
      assert.equal(await store.getMeta('cluster'), 'lab / ünïcode');
      await store.setMeta('policy.version', '');
      assert.equal(await store.getMeta('policy.version'), '');
    });
  });
}

export function host(name: string, over: Partial<HostRecord> = {}): HostRecord {
  return {
    name,
    address: '10.0.0.1',
    port: 7001,
    capacity: { cores: 8, memoryBytes: 32 * 2 ** 30 },
    lastSeen: 1_700_000_000_000,
    up: true,
    ...over,
  };
}

export function mig(id: string, over: Partial<MigrationRecord> = {}): MigrationRecord {
  return {
    id,
    container: 'web',
    from: 'h1',
    to: 'h2',
    status: 'planned',
    reason: 'rebalance: h1 at 93%',
    createdAt: 1000,
    ...over,
  };
}

export async function assertCode(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof FerryError, `expected a FerryError, got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  });
}
