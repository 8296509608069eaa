// A second agent under a host name that another agent already reports from is refused (FERRY_E_HOST_DUPLICATE)
// while the first one's heartbeats arrive; the first keeps its name and its place in the controller's picture.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { controllerFixture } from '../../test/support/api-fixture.ts';
import type { FerryError } from '../core/errors.ts';

const beat = (address: string, port = 7470) => ({
  host: 'a',
  address,
  port,
  capacity: { cores: 2, memoryBytes: 2 ** 31 },
  seq: 1,
  full: true,
  containers: [],
  removed: [],
});

test('a second agent named a from another address is refused; a keeps its name', async (t) => {
  const f = await controllerFixture();
  t.after(() => f.close());
  await f.controller.heartbeat(beat('10.0.0.2'));
  for (const [address, port] of [
    ['10.0.0.9', 7470],
    ['10.0.0.2', 7471],
  ] as const)
    await assert.rejects(f.controller.heartbeat(beat(address, port)), (e: FerryError) => {
      assert.equal(e.code, 'FERRY_E_HOST_DUPLICATE');
      assert.equal(e.status, 409);
      assert.match(
        e.message,
        new RegExp(
          `host a already reports from 10\\.0\\.0\\.2:7470; the agent at ${address.replace(/\./g, '\\.')}:${port} is refused`,
        ),
      );
      return true;
    });
  // the first one goes on as before
  await f.controller.heartbeat(beat('10.0.0.2'));
  const hosts = (await f.controller.summary()).hosts;
  assert.deepEqual(
    hosts.map((h) => [h.name, h.address, h.port, h.up]),
    [['a', '10.0.0.2', 7470, true]],
  );
});
