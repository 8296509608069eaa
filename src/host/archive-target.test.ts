import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { constants } from 'node:fs';
import { mkdtemp, open, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ArchiveTargets } from './archive-target.ts';

test('the agent writes only into a file holding a token it issued, once', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-at-'));
  try {
    const targets = new ArchiveTargets();
    const path = join(dir, 'a.part');

    // the file holds the token: opened and emptied, the token used up
    const token = targets.issue();
    assert.match(token, /^[0-9a-f]{64}$/);
    await writeFile(path, token, { mode: 0o600 });
    const fh = await targets.open({ path, token });
    assert.ok(fh, 'the caller file is opened');
    await fh.write('archive');
    await fh.close();
    assert.equal(await readFile(path, 'utf8'), 'archive');
    assert.equal((await stat(path)).mode & 0o777, 0o600, 'its mode is the caller');
    await writeFile(path, token);
    assert.equal(await targets.open({ path, token }), undefined, 'a token is good once');

    // a token nobody issued, another content, a link, a missing file: streamed instead, the file untouched
    const forged = 'a'.repeat(64);
    await writeFile(path, forged);
    assert.equal(await targets.open({ path, token: forged }), undefined);
    const t2 = targets.issue();
    await writeFile(path, `${t2}\n`);
    assert.equal(await targets.open({ path, token: t2 }), undefined);
    assert.equal(await readFile(path, 'utf8'), `${t2}\n`);
    const t3 = targets.issue();
    await writeFile(path, t3);
    const link = join(dir, 'link');
    await symlink(path, link);
    assert.equal(await targets.open({ path: link, token: t3 }), undefined, 'never through a link');
    assert.equal(await readFile(path, 'utf8'), t3);
    const t4 = targets.issue();
    assert.equal(await targets.open({ path: join(dir, 'none'), token: t4 }), undefined);

    // an expired token
    const t5 = targets.issue(Date.now() - 120_000);
    await writeFile(path, t5);
    assert.equal(await targets.open({ path, token: t5 }), undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the agent reads an archive through the caller process only if that process holds its token', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-at-'));
  try {
    const targets = new ArchiveTargets();
    const path = join(dir, 'a.tar');
    await writeFile(path, 'the archive');
    const archive = await open(path, 'r');
    const proofPath = join(dir, 'proof');
    const proof = await open(proofPath, 'wx+', 0o600);
    try {
      const token = targets.issue();
      await proof.write(token, 0);
      await rm(proofPath);
      const c = { pid: process.pid, fd: archive.fd, tokenFd: proof.fd, token };
      const fh = await targets.openCallerFile(c);
      assert.ok(fh, 'read through the caller');
      assert.equal((await fh.readFile()).toString(), 'the archive');
      await fh.close();
      assert.equal(await targets.openCallerFile(c), undefined, 'a token is good once');

      // another token than the one the process holds, a descriptor of no token, an archive open only for writing
      const t2 = targets.issue();
      assert.equal(await targets.openCallerFile({ ...c, token: t2 }), undefined);
      const t3 = targets.issue();
      await proof.write(t3, 0);
      assert.equal(await targets.openCallerFile({ ...c, tokenFd: archive.fd, token: t3 }), undefined);
      const writeOnly = await open(join(dir, 'w'), 'w');
      const t4 = targets.issue();
      await proof.write(t4, 0);
      assert.equal(await targets.openCallerFile({ ...c, fd: writeOnly.fd, token: t4 }), undefined);
      await writeOnly.close();
      // a FIFO where the token should be: refused at once, never waited on
      execFileSync('mkfifo', [join(dir, 'fifo')]);
      const fifo = await open(join(dir, 'fifo'), constants.O_RDWR | constants.O_NONBLOCK);
      const t5 = targets.issue();
      assert.equal(await targets.openCallerFile({ ...c, tokenFd: fifo.fd, token: t5 }), undefined);
      await fifo.close();
    } finally {
      await proof.close();
      await archive.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
