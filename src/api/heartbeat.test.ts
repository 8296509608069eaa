import assert from 'node:assert/strict';
import { test } from 'node:test';
import { statDiff } from './heartbeat.ts';
import type { ContainerStat } from './types.ts';

test('only changes beyond the deltas are sent between full reports', () => {
  const s = (name: string, cpu: number, mem: number, status = 'running'): ContainerStat => ({
    name,
    cpuPercent: cpu,
    memoryBytes: mem,
    status,
  });
  const last = new Map([
    ['a', s('a', 10, 100)],
    ['b', s('b', 50, 100)],
    ['gone', s('gone', 1, 1)],
  ]);
  const d = statDiff(last, [s('a', 12, 100), s('b', 70, 100), s('new', 1, 1)], {
    cpuDeltaPercent: 5,
    memoryDeltaBytes: 1000,
  });
  assert.deepEqual(
    d.changed.map((c) => c.name),
    ['b', 'new'],
  );
  assert.deepEqual(d.removed, ['gone']);
  const st = statDiff(new Map([['a', s('a', 10, 100)]]), [s('a', 10, 100, 'stopped')], {
    cpuDeltaPercent: 5,
    memoryDeltaBytes: 1000,
  });
  assert.deepEqual(
    st.changed.map((c) => c.name),
    ['a'],
  );
});
