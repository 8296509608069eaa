// `ferry install` as an operator runs it (here under --root): both units in place, each passing
// `systemd-analyze verify` on its own, starting this ferry with the documented config file, restarted on failure
// but not after a refused configuration (exit status 2).
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ferryLauncher } from './install.ts';

const run = promisify(execFile);
const ferry = fileURLToPath(new URL('../../bin/ferry', import.meta.url));
const missing = spawnSync('systemd-analyze', ['--version']).error
  ? 'needs systemd-analyze (Debian: systemd)'
  : undefined;

test('ferry install --agent --controller: two units that systemd-analyze verify accepts', async (t) => {
  if (missing) {
    if (process.env['CI']) assert.fail(missing);
    return t.skip(missing);
  }
  const root = await mkdtemp(join(tmpdir(), 'ferry-install-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const r = await run(ferry, ['install', '--agent', '--controller', '--root', root, '--json'], {
    timeout: 120_000,
  });
  const out = JSON.parse(r.stdout) as { ok: boolean; installed: { daemon: string; unit: string }[] };
  assert.equal(out.ok, true);
  assert.deepEqual(
    out.installed.map((i) => i.unit),
    [
      join(root, 'etc/systemd/system/ferry-agent.service'),
      join(root, 'etc/systemd/system/ferry-controller.service'),
    ],
  );
  for (const { daemon, unit } of out.installed) {
    const v = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
    assert.equal(v.status, 0, v.stderr);
    assert.equal(`${v.stdout}${v.stderr}`.trim(), '', 'no findings');
    const text = readFileSync(unit, 'utf8');
    assert.match(
      text,
      new RegExp(`^ExecStart=${ferryLauncher()} ${daemon} --config /etc/ferry/${daemon}\\.json$`, 'm'),
    );
    for (const line of [
      'Type=exec',
      'Restart=on-failure',
      'RestartPreventExitStatus=2',
      `SyslogIdentifier=ferry-${daemon}`,
    ])
      assert.match(text, new RegExp(`^${line}$`, 'm'), `${daemon}: ${line}`);
    assert.equal(statSync(unit).mode & 0o777, 0o644);
  }
  assert.equal(statSync(join(root, 'etc/ferry/pki')).mode & 0o777, 0o700);
  assert.equal(statSync(join(root, 'var/lib/ferry')).mode & 0o777, 0o700);
  // the agent keeps what runc and CRIU need; the controller is locked down
  const agent = readFileSync(out.installed[0]!.unit, 'utf8');
  assert.match(agent, /^KillMode=process$/m);
  assert.doesNotMatch(agent, /^(ProtectSystem|PrivateTmp|SystemCallFilter|NoNewPrivileges)=/m);
  const controller = readFileSync(out.installed[1]!.unit, 'utf8');
  for (const line of ['ProtectSystem=strict', 'NoNewPrivileges=yes', 'CapabilityBoundingSet='])
    assert.match(controller, new RegExp(`^${line}$`, 'm'));
});

test('ferry install without --agent or --controller is a usage error', async () => {
  const r = await run(ferry, ['install'], { timeout: 30_000 }).catch(
    (e: { code: number; stderr: string }) => e,
  );
  assert.equal((r as { code: number }).code, 2);
  assert.match(r.stderr, /^ferry: FERRY_E_INPUT_ARGS: name what to install/);
});
