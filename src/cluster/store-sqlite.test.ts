import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';
import { host, mig, storeContract } from '../../test/support/store-contract.ts';
import { FerryError } from '../core/errors.ts';
import { SQLITE_SCHEMA_VERSION, SqliteStore } from './store-sqlite.ts';

const dir = mkdtempSync(join(tmpdir(), 'ferry-store-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

storeContract('sqlite (file)', async () => {
  const store = new SqliteStore(join(dir, `contract-${++n}.db`));
  return { store, cleanup: () => store.close() };
});

storeContract('sqlite (:memory:)', async () => {
  const store = new SqliteStore(':memory:');
  return { store, cleanup: () => store.close() };
});

describe('SqliteStore', () => {
  it('loses nothing across a controller restart (write, close, reopen, read)', async () => {
    const file = join(dir, 'restart.db');
    const a = new SqliteStore(file);
    await a.upsertHost(host('h1'));
    await a.upsertHost(host('h2', { up: false }));
    await a.setContainers('h1', [
      { name: 'web', cpuPercent: 5, memoryBytes: 1e8, status: 'running', ip: '10.88.0.2' },
    ]);
    await a.addMigration(mig('m1', { batch: 'drain-1' }));
    await a.addMigration(mig('m2', { createdAt: 2000 }));
    await a.updateMigration('m1', { status: 'done', finishedAt: 1500, report: { ok: true } });
    await a.setMeta('k', 'v');
    const before = {
      hosts: await a.listHosts(),
      containers: await a.listContainers(),
      migrations: await a.listMigrations(),
    };
    await a.close();
    await a.close(); // idempotent
    await assert.rejects(a.listHosts(), FerryError);

    const b = new SqliteStore(file);
    assert.deepEqual(await b.listHosts(), before.hosts);
    assert.deepEqual(await b.listContainers(), before.containers);
    assert.deepEqual(await b.listMigrations(), before.migrations);
    assert.equal(before.migrations[0]?.status, 'done');
    assert.equal(await b.getMeta('k'), 'v');
    // ids stay unique across the restart
    await assert.rejects(
      b.addMigration(mig('m1')),
      (e: unknown) => e instanceof FerryError && e.code === 'FERRY_E_INPUT_REQUEST',
    );
    await b.close();
  });

  it('runs in WAL mode and records its schema version in meta', async () => {
    const file = join(dir, 'wal.db');
    await new SqliteStore(file).close();
    const db = new DatabaseSync(file);
    assert.equal((db.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode, 'wal');
    const v = db.prepare(`SELECT value FROM meta WHERE scope = 'schema' AND key = 'version'`).get() as {
      value: string;
    };
    assert.equal(v.value, String(SQLITE_SCHEMA_VERSION));
    // user meta cannot clobber it
    db.close();
    const s = new SqliteStore(file);
    await s.setMeta('version', 'x');
    await s.close();
    await new SqliteStore(file).close();
  });

  it('refuses a store written by a newer ferry', async () => {
    const file = join(dir, 'future.db');
    await new SqliteStore(file).close();
    const db = new DatabaseSync(file);
    db.prepare(`UPDATE meta SET value = '999' WHERE scope = 'schema' AND key = 'version'`).run();
    db.close();
    assert.throws(() => new SqliteStore(file), /schema version 999/);
  });

  it('rolls back a failed multi-row write', async () => {
    const s = new SqliteStore(':memory:');
    await s.setContainers('h1', [{ name: 'a', cpuPercent: 1, memoryBytes: 1, status: 'running' }]);
    await assert.rejects(
      s.setContainers('h1', [
        { name: 'b', cpuPercent: 1, memoryBytes: 1, status: 'running' },
        // cannot be bound: fails after the delete and the first insert ran
        { name: 'c', cpuPercent: 2, memoryBytes: 2, status: {} as unknown as string },
      ]),
    );
    assert.deepEqual(
      (await s.listContainers()).map((c) => c.name),
      ['a'],
    );
    await s.close();
  });
});
