// alive(): what the testbed's stops wait on, and a zombie left by an init that reaps late counts as gone.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { alive, stopProcess } from './daemon.ts';

/** A process that has exited but is not reaped: the child of a perl (Debian's perl-base) that never waits. */
async function zombie(): Promise<{ pid: number; parent: ReturnType<typeof spawn> }> {
  const parent = spawn(
    'perl',
    ['-e', '$| = 1; my $p = fork // die; exit 0 unless $p; print "$p\\n"; sleep 60'],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  const [line] = (await once(parent.stdout!, 'data')) as [Buffer];
  const pid = Number(String(line).trim());
  for (let i = 0; i < 200; i++) {
    if (/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  return { pid, parent };
}

describe('alive', () => {
  it('a running process is alive; a zombie (exited, not reaped) is not', { timeout: 60_000 }, async () => {
    const { pid, parent } = await zombie();
    try {
      assert.equal(alive(parent.pid!), true);
      assert.match(readFileSync(`/proc/${pid}/stat`, 'utf8'), /\) Z /, 'the zombie is still there');
      assert.equal(alive(pid), false);
      // and stopping it does not wait out a grace period (far longer than this test may take) for it
      await stopProcess(pid, 3_600_000);
    } finally {
      parent.kill('SIGKILL');
    }
  });

  it('a pid that does not exist is not alive', () => {
    assert.equal(alive(2 ** 22 + 1), false);
  });
});
