// The soak in `make test`: Redis with a connected client migrated a -> b -> a 20 times after a warm-up of 30; over
// those 20, nothing the agents hold may grow, their memory by 24 MiB at most (bench/soak.ts; `ferry bench soak` runs
// 200 and allows 5 MiB). The warm-up is that long because an agent's RSS climbs for its first twenty or thirty migrations, a megabyte
// at a time, with no object left behind: heap snapshots taken after a full GC differ only by V8's compiled code.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runSoak, soakTable } from '../../bench/soak.ts';
import { FERRY_ARGV, skipUnlessReady, startBed } from './helpers.ts';

test('20 ping-pong migrations of Redis under a client after a warm-up: nothing the agents hold grows', async (t) => {
  if (!skipUnlessReady(t)) return;
  // The agents run without Node's compile cache here (the other tests' processes keep it): with the cache, V8
  // compiles code late, one agent's RSS jumping by 30-40 MiB somewhere after the warm-up, which reads as growth;
  // without it the code is compiled by then and the memory stays flat, so what is left to see is a leak.
  const noCache = { NODE_COMPILE_CACHE: '' };
  const bed = await startBed(['a', 'b'], { agentEnv: { a: noCache, b: noCache } });
  t.after(() => bed.down());
  const r = await runSoak({
    tb: bed.state,
    ferryArgv: FERRY_ARGV,
    migrations: 50,
    warmup: 30,
    // the two ends of the engine's range: the shortest path, and the one with a page server and lazy pages
    strategies: ['cold', 'postcopy'],
    // a late compile of V8's still lifted one agent's RSS by 17 MiB in 20 migrations once, the compile cache off;
    // a leak of more than ~1.2 MiB a migration is caught here, a smaller one by the long soak's 5 MiB over 200
    rssSlackBytes: 24 * 2 ** 20,
  });
  t.diagnostic(`\n${soakTable(r)}`);
  t.diagnostic(
    `${r.migrations} migrations in ${(r.wallMs / 1000).toFixed(0)} s, longest client gap ${r.probe.maxGapMs.toFixed(0)} ms`,
  );
  assert.deepEqual(r.failures, []);
  assert.equal(r.migrations, 50);
  assert.deepEqual(r.growth, [], 'nothing grows after the warm-up');
});
