// The soak in `make test`: Redis with a connected client migrated a -> b -> a 20 times after a warm-up of 30; over
// those 20, nothing the agents hold may grow, their memory by 12 MiB at most (bench/soak.ts; `ferry bench soak`
// counts 200 after 100 and allows 5 MiB). The agents run as every soak's do (soakAgentEnv: V8's young generation
// capped, so that what their RSS shows after the warm-up is what a leak would show).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runSoak, soakAgentEnv, soakTable } from '../../bench/soak.ts';
import { FERRY_ARGV, skipUnlessReady, startBed } from './helpers.ts';

test('20 ping-pong migrations of Redis under a client after a warm-up: nothing the agents hold grows', async (t) => {
  if (!skipUnlessReady(t)) return;
  const env = soakAgentEnv();
  const bed = await startBed(['a', 'b'], { agentEnv: { a: env, b: env } });
  t.after(() => bed.down());
  const r = await runSoak({
    tb: bed.state,
    ferryArgv: FERRY_ARGV,
    migrations: 50,
    warmup: 30,
    // the two ends of the engine's range: the shortest path, and the one with a page server and lazy pages
    strategies: ['cold', 'postcopy'],
    // 0.2-2.6 MiB grown in four runs alone; a leak of more than ~0.6 MiB a migration is caught here, a smaller
    // one by the long soak's 5 MiB over 200
    rssSlackBytes: 12 * 2 ** 20,
  });
  t.diagnostic(`\n${soakTable(r)}`);
  t.diagnostic(
    `${r.migrations} migrations in ${(r.wallMs / 1000).toFixed(0)} s, longest client gap ${r.probe.maxGapMs.toFixed(0)} ms`,
  );
  assert.deepEqual(r.failures, []);
  assert.equal(r.migrations, 50);
  assert.deepEqual(r.growth, [], 'nothing grows after the warm-up');
});
