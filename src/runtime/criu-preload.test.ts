import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Criu } from './criu.ts';
import { installedLibrary, withPreload } from './criu-preload.ts';
import { ProcessRunner } from './exec.ts';

test('a preload library is used only when installed, at an absolute path LD_PRELOAD can carry', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-uncork-test-'));
  try {
    const lib = join(dir, 'criu-uncork.so');
    assert.equal(installedLibrary(lib), undefined, 'absent');
    await writeFile(lib, '');
    assert.equal(installedLibrary(lib), lib);
    const spaced = join(dir, 'a b.so');
    await writeFile(spaced, '');
    assert.equal(installedLibrary(spaced), undefined, 'LD_PRELOAD splits on spaces');
    assert.equal(installedLibrary('criu-uncork.so'), undefined, 'relative');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('withPreload puts the library first and keeps what the environment preloaded', () => {
  assert.equal(withPreload('/l.so', { PATH: '/bin' })['LD_PRELOAD'], '/l.so');
  assert.equal(withPreload('/l.so', { LD_PRELOAD: ' /o.so ' })['LD_PRELOAD'], '/l.so /o.so');
  assert.equal(withPreload('/l.so', { PATH: '/bin' })['PATH'], '/bin');
});

test("post-copy's lazy-pages daemon and cold's page server get the library when there is one, and the agent's environment otherwise", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-uncork-test-'));
  try {
    // a stand-in for criu that writes down what it was preloaded with (stderr: startProcess keeps it)
    const fake = join(dir, 'criu');
    await writeFile(fake, '#!/bin/sh\necho "preload=$LD_PRELOAD" >&2\n', { mode: 0o755 });
    const runner = new ProcessRunner();
    const lib = '/opt/x/criu-uncork.so';
    const o = { address: '10.0.0.1', port: 27001, imagesDir: dir };
    const before = process.env['LD_PRELOAD'];
    try {
      delete process.env['LD_PRELOAD'];
      const withLib = await new Criu(runner, fake, { uncork: lib }).lazyPages(o).done;
      const without = await new Criu(runner, fake).lazyPages(o).done;
      // (the shell's loader complains that the stand-in library is not there: only the last line counts)
      assert.equal(withLib.stderr.trim().split('\n').at(-1), `preload=${lib}`);
      assert.equal(without.stderr.trim(), 'preload=');
      const tls = { ca: '/p/ca.crt', cert: '/p/b.crt', key: '/p/b.key' };
      const server = await new Criu(runner, fake, { uncork: lib }).pageServer({
        port: 27002,
        imagesDir: dir,
        tls,
      }).done;
      assert.equal(server.stderr.trim().split('\n').at(-1), `preload=${lib}`);
    } finally {
      if (before === undefined) delete process.env['LD_PRELOAD'];
      else process.env['LD_PRELOAD'] = before;
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
