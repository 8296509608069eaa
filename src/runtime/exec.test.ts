import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startSession } from './exec.ts';

test('a session started ahead of time runs what it is given at the end, and can be killed unused', async () => {
  const s = startSession(['sh']);
  await new Promise((r) => setTimeout(r, 20));
  const r = await s.finish('echo ready\nexit 3\n');
  assert.equal(r.stdout, 'ready\n');
  assert.equal(r.code, 3);
  const unused = startSession(['sh']);
  unused.kill();
  const gone = startSession(['/nonexistent/interpreter']);
  assert.equal((await gone.finish('x\n')).code, -1);
});
