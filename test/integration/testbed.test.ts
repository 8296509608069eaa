// The testbed cleans up after itself, also after everything it started was killed with SIGKILL.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { test } from 'node:test';
import { ProcessRunner } from '../../src/runtime/exec.ts';
import { testbedDown } from '../../src/testbed/testbed.ts';
import { assertNothingLeft, FERRY_ARGV, skipUnlessReady, startBed } from './helpers.ts';

test('kill -9 of agents, controller and containers, then `testbed down` leaves nothing behind', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await startBed(['a', 'b'], { controller: { heartbeatMs: 500 } });
  let cleaned = false;
  t.after(async () => {
    if (!cleaned) await bed.down();
  });
  assert.equal(
    (await bed.cli(['run', '--host', 'a', '--name', 'c1', '--', '/bin/busybox', 'sleep', '100000'])).code,
    0,
  );
  assert.equal(
    (
      await bed.cli([
        'run',
        '--host',
        'b',
        '--name',
        'c2',
        '--net',
        'host',
        '--ip',
        `${bed.state.subnet}.70`,
        '--',
        '/bin/busybox',
        'sleep',
        '100000',
      ])
    ).code,
    0,
  );
  // everything of this testbed, SIGKILLed: agents, controller, container processes
  const dir = bed.state.dir;
  let killed = 0;
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      if (cmd.includes(`${dir}/`) || cmd.includes('sleep\u0000100000')) {
        process.kill(Number(p), 'SIGKILL');
        killed++;
      }
    } catch {
      // gone
    }
  }
  assert.ok(killed >= 3, `killed ${killed} processes`);
  bed.ctx.close();
  await testbedDown(bed.name, { runner: new ProcessRunner(), env: bed.env, ferryArgv: FERRY_ARGV });
  cleaned = true;
  await assertNothingLeft(bed.name);
  rmSync(bed.env['FERRY_STATE']!, { recursive: true, force: true });
  // and a second `down` of the same (now absent) testbed is harmless
  await testbedDown(bed.name, { runner: new ProcessRunner(), env: bed.env, ferryArgv: FERRY_ARGV });
});
