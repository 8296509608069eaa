import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { clearCurrentCluster, resolveCluster, setCurrentCluster } from './cluster-file.ts';

test('the default cluster: set by the first testbed, kept against the next unless forced, said where it came from', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-cf-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const env = { FERRY_STATE: dir };
  const mine = join(dir, 'mine.json');
  const theirs = join(dir, 'theirs.json');
  writeFileSync(mine, '{}');
  writeFileSync(theirs, '{}');
  assert.equal(await setCurrentCluster(mine, env), mine);
  assert.equal(await setCurrentCluster(theirs, env), mine, 'another testbed does not take over');
  assert.deepEqual(await resolveCluster(undefined, env), { path: mine, from: 'default' });
  assert.equal(await setCurrentCluster(theirs, env, { force: true }), theirs);
  await clearCurrentCluster(theirs, env);
  assert.equal(await setCurrentCluster(mine, env), mine, 'with no default, the next one becomes it');
  // a default whose file is gone (its testbed was removed by hand) is replaced
  rmSync(mine);
  assert.equal(await setCurrentCluster(theirs, env), theirs);
  assert.deepEqual(await resolveCluster('/x.json', env), { path: '/x.json', from: '--cluster' });
  assert.deepEqual(await resolveCluster(undefined, { ...env, FERRY_CLUSTER: '/y.json' }), {
    path: '/y.json',
    from: '$FERRY_CLUSTER',
  });
});
