import assert from 'node:assert/strict';
import { test } from 'node:test';
import { testbedCongestionControl } from './congestion.ts';

function machine(current: string, allowed: string): (path: string) => Promise<string> {
  return async (path) => (path.endsWith('allowed_congestion_control') ? `${allowed}\n` : `${current}\n`);
}

test("the testbed's hosts get a stock congestion control when the machine's default is not one", async () => {
  assert.equal(await testbedCongestionControl(undefined, machine('bbr', 'reno bbr')), 'reno');
  assert.equal(await testbedCongestionControl(undefined, machine('bbr', 'reno bbr cubic')), 'cubic');
  assert.equal(
    await testbedCongestionControl(undefined, machine('cubic', 'reno cubic')),
    undefined,
    'left alone',
  );
  assert.equal(await testbedCongestionControl(undefined, machine('reno', 'reno')), undefined, 'left alone');
  const unreadable = async (): Promise<string> => {
    throw new Error('ENOENT');
  };
  assert.equal(await testbedCongestionControl(undefined, unreadable), undefined, 'no /proc: nothing set');
});

test('a congestion control asked for is taken as it is, and a malformed one is refused', async () => {
  assert.equal(await testbedCongestionControl('bbr', machine('cubic', 'reno cubic')), 'bbr');
  await assert.rejects(testbedCongestionControl('bbr; reboot'), { code: 'FERRY_E_INPUT_ARGS' });
});
