import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cpuTicks, pageReportedKib, stolenPercent } from '../bench/common.ts';

test("the benchmarks' stolen CPU share comes from /proc/stat's steal column, against all the time that passed", () => {
  const a = cpuTicks('cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3\n');
  assert.deepEqual(a, { total: 1000, steal: 35 });
  const b = cpuTicks('cpu  200 0 100 1500 10 0 5 185 0 0\n');
  assert.equal(stolenPercent(a, b), 15);
  assert.equal(stolenPercent(a, a), 0, 'no time passed');
  assert.ok(stolenPercent(cpuTicks()) >= 0, 'this machine');
});

test('the memory handed back to the hypervisor is read from the page reporting counter, and absent without one', () => {
  assert.equal(
    pageReportedKib(() => '55470212\n'),
    55470212,
  );
  assert.equal(
    pageReportedKib(() => {
      throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
    }),
    undefined,
  );
  assert.equal(
    pageReportedKib(() => 'x'),
    undefined,
  );
});
