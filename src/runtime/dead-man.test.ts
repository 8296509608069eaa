// The dead-man switch with a real shell and a fake runc (a script that logs its calls): disarmed, it touches
// nothing; when its owner dies without disarming it, the container is killed and deleted.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';
import { armDeadMan } from './dead-man.ts';

let dir: string;
let runc: string;
const calls = () => (existsSync(join(dir, 'calls')) ? readFileSync(join(dir, 'calls'), 'utf8') : '');

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ferry-deadman-'));
  runc = join(dir, 'runc');
  // `state` succeeds while the container exists (a marker file); `delete` removes it
  writeFileSync(
    runc,
    `#!/bin/sh\necho "$*" >> ${dir}/calls\ncase "$3" in\n state) [ -e ${dir}/exists ];;\n delete) rm -f ${dir}/exists;;\nesac\n`,
  );
  chmodSync(runc, 0o755);
  writeFileSync(join(dir, 'exists'), '');
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

const until = async (what: () => boolean, ms = 5000) => {
  for (const t0 = Date.now(); !what() && Date.now() - t0 < ms; ) await new Promise((r) => setTimeout(r, 50));
  return what();
};

test('disarmed: the switch exits without touching the container', async () => {
  const sw = armDeadMan({ runcPath: runc, runcRoot: '/r', name: 'c1', images: join(dir, 'm1') });
  sw.disarm();
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(calls(), '');
  assert.ok(existsSync(join(dir, 'exists')));
});

test('its owner killed (SIGKILL) before disarming: the container is killed and deleted', async () => {
  const mod = new URL('./dead-man.ts', import.meta.url).pathname;
  const code = `import { armDeadMan } from ${JSON.stringify(mod)};
armDeadMan({ runcPath: ${JSON.stringify(runc)}, runcRoot: '/r', name: 'c1', images: ${JSON.stringify(join(dir, 'm1'))}, cutOff: [['touch', ${JSON.stringify(join(dir, 'cut'))}], ['echo', 'no;way']] });
process.kill(process.pid, 'SIGKILL');`;
  spawnSync(process.execPath, ['--no-warnings', '--input-type=module', '-e', code], { stdio: 'ignore' });
  assert.ok(await until(() => !existsSync(join(dir, 'exists'))), `container deleted (calls: ${calls()})`);
  assert.ok(existsSync(join(dir, 'cut')), 'cut off first');
  assert.match(calls(), /--root \/r kill --all c1 KILL/);
  assert.match(calls(), /--root \/r delete --force c1/);
});
