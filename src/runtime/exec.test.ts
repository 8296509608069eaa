import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ProcessRunner, startSession } from './exec.ts';

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

test('a command run as a group is killed with its children past its deadline, and they are gone when it fails', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-exec-'));
  const pidFile = join(dir, 'child');
  try {
    // the shell's own child stands for runc's CRIU: it would outlive a kill of its parent alone
    const argv = ['/bin/sh', '-c', `sleep 600 & echo $! > ${pidFile}; wait`];
    await assert.rejects(
      new ProcessRunner().run(argv, { group: true, timeoutMs: 500, label: 'the group' }),
      (err: Error) => /the group failed \(killed after its 500 ms deadline\)/.test(err.message),
    );
    const child = readFileSync(pidFile, 'utf8').trim();
    assert.ok(child, 'the child had started');
    // gone, or a zombie its new parent has not reaped yet (it runs nothing, holds nothing)
    const stat = existsSync(`/proc/${child}`) ? readFileSync(`/proc/${child}/stat`, 'utf8') : '';
    assert.ok(
      stat === '' || stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z'),
      `the child was killed: ${stat}`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
