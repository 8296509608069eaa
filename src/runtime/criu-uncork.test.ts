import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { uncorkLibrary, withPreload } from './criu-uncork.ts';

test('the uncork library is used only when installed, at an absolute path LD_PRELOAD can carry', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-uncork-test-'));
  try {
    const lib = join(dir, 'criu-uncork.so');
    assert.equal(uncorkLibrary(lib), undefined, 'absent');
    await writeFile(lib, '');
    assert.equal(uncorkLibrary(lib), lib);
    const spaced = join(dir, 'a b.so');
    await writeFile(spaced, '');
    assert.equal(uncorkLibrary(spaced), undefined, 'LD_PRELOAD splits on spaces');
    assert.equal(uncorkLibrary('criu-uncork.so'), undefined, 'relative');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('withPreload puts the library first and keeps what the environment preloaded', () => {
  assert.equal(withPreload('/l.so', { PATH: '/bin' })['LD_PRELOAD'], '/l.so');
  assert.equal(withPreload('/l.so', { LD_PRELOAD: ' /o.so ' })['LD_PRELOAD'], '/l.so /o.so');
  assert.equal(withPreload('/l.so', { PATH: '/bin' })['PATH'], '/bin');
});
