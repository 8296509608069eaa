// A single move asked of the controller (the dashboard's drag and drop): checked before anything is queued, run
// with its own strategy and budget, its progress passed on as events, its refusal recorded with its code.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { HeartbeatBody, MigrationReport } from '../api/types.ts';
import { FerryError } from '../core/errors.ts';
import { silentLogger } from '../core/log.ts';
import { CONTROLLER_DEFAULTS, Controller, type ControllerEvent, type MoveExtras } from './controller.ts';
import { SqliteStore } from './store-sqlite.ts';

const beat = (host: string, containers: HeartbeatBody['containers']): HeartbeatBody => ({
  host,
  address: `10.0.0.${host === 'a' ? 10 : host === 'b' ? 11 : 12}`,
  port: 7470,
  capacity: { cores: 1, memoryBytes: 1 << 30 },
  seq: 1,
  full: true,
  containers,
  removed: [],
});

const report = (ok: boolean): MigrationReport => ({
  ok,
  id: 'm',
  container: 'web',
  from: 'a',
  to: 'b',
  strategy: 'cold',
  phases: [],
  freezeMs: 42,
  rounds: [],
  bytesSent: 0,
  totalMs: 100,
  criu: {},
});

async function fixture(migrate: (extras: MoveExtras | undefined) => Promise<MigrationReport>) {
  const store = new SqliteStore(':memory:');
  const asked: string[] = [];
  const controller = new Controller({
    store,
    agents: {
      containers: async () => [],
      migrate: async (from, container, to, strategy, extras) => {
        asked.push(`${container} ${from.name}->${to.name} ${strategy} ${extras?.maxDowntimeMs ?? '-'}`);
        return migrate(extras);
      },
      canMigrate: async () => true,
    },
    cfg: { ...CONTROLLER_DEFAULTS, rebalanceIntervalMs: 0 },
    log: silentLogger(),
  });
  const events: ControllerEvent[] = [];
  controller.on('event', (e: ControllerEvent) => events.push(e));
  const stat = { name: 'web', cpuPercent: 5, memoryBytes: 1 << 20, status: 'running' };
  await controller.heartbeat(beat('a', [stat]));
  await controller.heartbeat(beat('b', []));
  return { controller, store, asked, events };
}

test('move: refused before anything is queued when the container, the host or the pair is wrong', async () => {
  const f = await fixture(async () => report(true));
  for (const [container, to, code] of [
    ['nosuch', 'b', 'FERRY_E_CONTAINER_UNKNOWN'],
    ['web', 'nosuch', 'FERRY_E_HOST_UNKNOWN'],
    ['web', 'a', 'FERRY_E_HOST_SAME'],
    ['web', '../b', 'FERRY_E_INPUT_NAME'],
  ] as const) {
    await assert.rejects(f.controller.move({ container, to, strategy: 'auto' }), (e: FerryError) => {
      assert.equal(e.code, code);
      return true;
    });
  }
  await f.store.setHostUp('b', false);
  await assert.rejects(f.controller.move({ container: 'web', to: 'b', strategy: 'auto' }), /host b is down/);
  assert.deepEqual(f.asked, []);
  assert.deepEqual(await f.store.listMigrations(), []);
  await f.store.close();
});

test('move: runs with its own strategy and budget, passes its progress on, records the result', async () => {
  const f = await fixture(async (extras) => {
    extras?.onEvent?.({ type: 'phase', phase: 'transfer', state: 'start' });
    extras?.onEvent?.({ type: 'progress', phase: 'transfer', bytes: 10, total: 20 });
    return report(true);
  });
  const { id, batch } = await f.controller.move({
    container: 'web',
    to: 'b',
    strategy: 'cold',
    maxDowntimeMs: 900,
  });
  assert.match(batch, /^move-[0-9a-f]{8}$/);
  const [done] = await f.controller.settle(batch, 10_000);
  assert.equal(done?.id, id);
  assert.equal(done?.status, 'done');
  assert.equal(done?.freezeMs, 42);
  assert.deepEqual(f.asked, ['web a->b cold 900']);
  const progress = f.events.filter((e) => e.type === 'progress');
  assert.equal(progress.length, 2);
  assert.ok(progress.every((e) => e.type === 'progress' && e.id === id && e.container === 'web'));
  assert.ok(f.events.some((e) => e.type === 'plan' && e.kind === 'move'));
  await f.store.close();
});

test("move: an agent's refusal before its stream starts is recorded with its code", async () => {
  const f = await fixture(async () => {
    throw new FerryError('FERRY_E_CONTAINER_BUSY', 'container web is busy');
  });
  const { batch } = await f.controller.move({ container: 'web', to: 'b', strategy: 'auto' });
  const [failed] = await f.controller.settle(batch, 10_000);
  assert.equal(failed?.status, 'failed');
  assert.equal(failed?.error, 'FERRY_E_CONTAINER_BUSY: container web is busy');
  await f.store.close();
});
