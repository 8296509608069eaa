import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { settleLeftovers } from './leftovers.ts';

test('a leftover leading a group of its own is killed with its group, children that name nothing included', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-leftovers-'));
  const pidFile = join(dir, 'child');
  const marker = join(dir, 'images');
  // the shell names the marker as runc checkpoint names its image path; its sleep (CRIU) names nothing
  const leader = spawn('/bin/sh', ['-c', `sleep 600 & echo $! > ${pidFile}; wait`, marker], {
    detached: true,
    stdio: 'ignore',
  });
  try {
    for (let i = 0; i < 100 && !existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 20));
    const child = readFileSync(pidFile, 'utf8').trim();
    assert.ok(child, 'the child had started');
    const { killed } = await settleLeftovers(marker, Date.now(), 20);
    assert.equal(killed, 1);
    // gone, or a zombie its new parent has not reaped yet (it runs nothing, holds nothing)
    const stat = existsSync(`/proc/${child}`) ? readFileSync(`/proc/${child}/stat`, 'utf8') : '';
    assert.ok(
      stat === '' || stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z'),
      `the child was killed: ${stat}`,
    );
  } finally {
    try {
      if (leader.pid) process.kill(-leader.pid, 'SIGKILL');
    } catch {
      // gone
    }
    rmSync(dir, { recursive: true, force: true });
  }
});
