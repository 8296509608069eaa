import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cpuPercent } from './cgroups.ts';

test('CPU % is cgroup time over wall time, per one core', () => {
  assert.equal(cpuPercent(0, 500e6, 1000), 50);
  assert.equal(cpuPercent(0, 1500e6, 1000), 150);
  assert.equal(cpuPercent(undefined, 1e9, 1000), 0, 'first sample: no rate yet');
  assert.equal(
    cpuPercent(2e9, 1e9, 1000),
    0,
    'a counter that went back (container restored elsewhere) reads 0',
  );
});
