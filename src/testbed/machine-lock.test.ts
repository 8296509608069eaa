import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { acquireMachineLock } from './machine-lock.ts';

test('machine lock: one holder at a time, a dead holder is taken over, release is idempotent', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-lock-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'lock');
  const order: string[] = [];
  const first = await acquireMachineLock(path);
  assert.equal(await readFile(path, 'utf8'), String(process.pid));
  const second = acquireMachineLock(path).then((release) => {
    order.push('second');
    return release;
  });
  await new Promise((r) => setTimeout(r, 100));
  order.push('first releases');
  await first();
  await first();
  await (await second)();
  assert.deepEqual(order, ['first releases', 'second']);
  // a pid that cannot be alive: the lock is stale
  await writeFile(path, '2147483646');
  const third = await acquireMachineLock(path, 1000);
  await third();
  await writeFile(path, String(process.pid));
  await assert.rejects(acquireMachineLock(path, 100), /held by process/);
});
