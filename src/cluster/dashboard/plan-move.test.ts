// The dashboard's dry run of one move: the controller's checks first, then the engine's planner on both hosts'
// capabilities, with the freeze it predicts; nothing is queued.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CapabilitiesReport, StrategyName, StrategySupport } from '../../api/types.ts';
import { FerryError } from '../../core/errors.ts';
import type { Controller } from '../controller.ts';
import { planMove } from './plan-move.ts';

const caps = (postcopy: boolean): CapabilitiesReport =>
  ({
    facts: {},
    strategies: {
      cold: { ok: true },
      precopy: { ok: true, precopyMode: 'delta' },
      postcopy: postcopy ? { ok: true } : { ok: false, why: 'no userfaultfd' },
      hybrid: { ok: false, why: 'no userfaultfd' },
    } satisfies Record<StrategyName, StrategySupport>,
  }) as unknown as CapabilitiesReport;

function fixture(memoryBytes: number, postcopy: boolean) {
  const host = (name: string) => ({
    name,
    address: '10.0.0.1',
    port: 7470,
    capacity: { cores: 1, memoryBytes: 1 << 30 },
    lastSeen: 0,
    up: true,
    loadPercent: 0,
    containers: [],
  });
  const controller = {
    checkMove: async (container: string, to: string) => {
      if (to === 'a') throw new FerryError('FERRY_E_HOST_SAME', `${container} already runs on a`);
      return { container, from: 'a', to, cpuPercent: 0, memoryBytes, reason: 'asked for' };
    },
    summary: async () => ({ hosts: [host('a'), host('b')] }),
  } as unknown as Controller;
  const agents = {
    capabilities: async () => caps(postcopy),
    processes: async () => {
      throw new Error('not here');
    },
  };
  return { controller, agents };
}

test('planMove: auto picks cold for a small container and predicts its freeze', async () => {
  const f = fixture(1 << 20, true);
  const p = await planMove(f.controller, f.agents, { container: 'web', to: 'b', strategy: 'auto' });
  assert.equal(p.strategy, 'cold');
  assert.match(p.reason, /^auto: cold fits/);
  assert.match(p.reason, /not measured in a dry run/);
  assert.ok(p.predictedFreezeMs > 0);
  assert.equal(p.memoryBytes, 1 << 20);
});

test('planMove: over the budget auto picks post-copy where both hosts have it; a strategy asked for is checked', async () => {
  const f = fixture(4 * 2 ** 30, true);
  const p = await planMove(f.controller, f.agents, {
    container: 'web',
    to: 'b',
    strategy: 'auto',
    maxDowntimeMs: 200,
  });
  assert.equal(p.strategy, 'postcopy');
  const without = fixture(4 * 2 ** 30, false);
  await assert.rejects(
    planMove(without.controller, without.agents, { container: 'web', to: 'b', strategy: 'postcopy' }),
    (e: FerryError) => e.code === 'FERRY_E_PLAN_STRATEGY',
  );
  await assert.rejects(
    planMove(f.controller, f.agents, { container: 'web', to: 'a', strategy: 'auto' }),
    (e: FerryError) => e.code === 'FERRY_E_HOST_SAME',
  );
});
