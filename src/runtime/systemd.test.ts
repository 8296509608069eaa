// systemd-analyze verify as the installer uses it: a unit systemd would complain about is refused with systemd's
// words, and nothing of it is put in place.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ProcessRunner } from './exec.ts';
import { installUnit, Systemd } from './systemd.ts';

const missing = spawnSync('systemd-analyze', ['--version']).error
  ? 'needs systemd-analyze (Debian: systemd)'
  : undefined;

test('a unit with an unknown key or a missing program is refused, and not installed', async (t) => {
  if (missing) {
    if (process.env['CI']) assert.fail(missing);
    return t.skip(missing);
  }
  const root = await mkdtemp(join(tmpdir(), 'ferry-systemd-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const systemd = new Systemd(new ProcessRunner(), root);
  assert.equal(systemd.running(), false);
  const install = (text: string) => installUnit(systemd, { root, name: 'ferry-x.service', text });
  await assert.rejects(
    install('[Unit]\nDescription=x\n[Service]\nType=exec\nTypo=1\nExecStart=/bin/true\n'),
    (e: Error & { code?: string }) => e.code === 'FERRY_E_INPUT_ARGS' && /Unknown key 'Typo'/.test(e.message),
  );
  await assert.rejects(
    install('[Unit]\nDescription=x\n[Service]\nType=exec\nExecStart=/nonexistent/ferry agent\n'),
    /not executable/,
  );
  assert.deepEqual(readdirSync(join(root, 'etc/systemd/system')), [], 'nothing left behind');
  const unit = await install('[Unit]\nDescription=x\n[Service]\nType=exec\nExecStart=/bin/true\n');
  assert.ok(existsSync(unit));
  assert.deepEqual(readdirSync(join(root, 'etc/systemd/system')), ['ferry-x.service']);
});
