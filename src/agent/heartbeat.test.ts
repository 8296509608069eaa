import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ControllerClient } from '../api/controller-client.ts';
import type { HeartbeatBody } from '../api/types.ts';
import { silentLogger } from '../core/log.ts';
import type { ContainerHost } from '../host/containers.ts';
import { Heartbeat } from './heartbeat.ts';

// containers that are not running: their beat reads no cgroup files
function bed(answer: (b: HeartbeatBody) => Promise<{ resync: boolean }>) {
  let names = ['c1', 'c2'];
  const sent: HeartbeatBody[] = [];
  const host = {
    list: async () => names.map((name) => ({ name, status: 'stopped', ip: '10.0.0.5' })),
    cgroupsPath: (name: string) => `/nonexistent/${name}`,
  } as unknown as ContainerHost;
  const client = {
    heartbeat: async (b: HeartbeatBody) => {
      sent.push(structuredClone(b));
      return answer(b);
    },
  } as unknown as ControllerClient;
  const hb = new Heartbeat({
    host,
    client,
    cfg: {
      intervalMs: 60_000,
      fullEvery: 100,
      cpuDeltaPercent: 5,
      memoryDeltaBytes: 1 << 20,
      capacity: { cores: 2, memoryBytes: 1 << 30 },
    },
    self: { name: 'a', address: '10.0.0.2', port: 7000 },
    log: silentLogger(),
  });
  const remove = (n: string) => {
    names = names.filter((x) => x !== n);
  };
  return { hb, sent, remove };
}

test('a beat out of turn tells the controller of a removal at once; beats never overlap', async () => {
  const b = bed(async () => ({ resync: false }));
  await b.hb.beat();
  assert.equal(b.sent[0]?.full, true);
  b.remove('c1');
  await Promise.all([b.hb.beatNow(), b.hb.beatNow()]);
  assert.deepEqual(b.sent[1]?.removed, ['c1']);
  assert.deepEqual(b.sent[2]?.removed, [], 'the second beat diffs against the first, not beside it');
  assert.deepEqual(
    b.sent.map((s) => s.seq),
    [1, 2, 3],
  );
});

test('a beat out of turn waits a bounded time for a controller that does not answer, and never fails', async () => {
  const b = bed(() => new Promise(() => {}));
  const t0 = performance.now();
  await b.hb.beatNow(100);
  assert.ok(performance.now() - t0 < 2000);
  const failing = bed(async () => {
    throw new Error('refused');
  });
  await failing.hb.beatNow();
  failing.remove('c2');
  await failing.hb.beatNow();
  assert.equal(failing.sent[1]?.full, true, 'a beat that failed makes the next one a full report');
});
