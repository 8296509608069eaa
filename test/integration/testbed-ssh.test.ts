// `ferry testbed up --ssh`: a real sshd in every simulated host, reached with the testbed's ssh_config (host keys
// checked), a changed host key refused, and `down` removes the servers with their open sessions.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ProcessRunner } from '../../src/runtime/exec.ts';
import { testbedDown, testbedUp } from '../../src/testbed/testbed.ts';
import { assertNothingLeft, FERRY_ARGV, processesWith, skipUnlessReady, waitFor } from './helpers.ts';

test('testbed up --ssh: each host answers SSH in its namespace, a changed host key is refused', async (t) => {
  if (!skipUnlessReady(t)) return;
  const name = `s${randomBytes(2).toString('hex')}`;
  const stateDir = mkdtempSync(join(tmpdir(), 'ferry-it-'));
  const env: NodeJS.ProcessEnv = { ...process.env, FERRY_STATE: stateDir };
  const deps = { runner: new ProcessRunner(), env, ferryArgv: FERRY_ARGV };
  t.after(async () => {
    await testbedDown(name, deps);
    rmSync(stateDir, { recursive: true, force: true });
  });
  const tb = await testbedUp({ name, hosts: ['a', 'b'], ssh: true }, deps);
  assert.ok(tb.ssh);
  const config = tb.ssh.config;
  assert.doesNotMatch(readFileSync(config, 'utf8'), /StrictHostKeyChecking\s+no/i);
  const ssh = (...args: string[]) => spawnSync('ssh', ['-F', config, ...args], { encoding: 'utf8', env });

  for (const h of tb.hosts) {
    const r = ssh(h.name, 'ip -4 -o addr show br0');
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.includes(`${h.address}/24`), `${h.name} answers in its own namespace: ${r.stdout}`);
    // by address too: known_hosts names both
    assert.equal(ssh(h.address, 'true').status, 0);
  }

  // b's host key replaced by another: the client refuses and says so
  const known = tb.ssh.knownHosts;
  const original = readFileSync(known, 'utf8');
  const other = join(stateDir, 'other');
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
  const fake = readFileSync(`${other}.pub`, 'utf8').split(' ').slice(0, 2).join(' ');
  writeFileSync(
    known,
    original
      .split('\n')
      .map((l) => (l.startsWith('b,') ? `${l.split(' ')[0]} ${fake}` : l))
      .join('\n'),
  );
  const refused = ssh('b', 'true');
  assert.notEqual(refused.status, 0);
  assert.match(refused.stderr, /HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
  writeFileSync(known, original);

  // an open session ends with `down`
  const marker = `sleep-${name}`;
  const session = spawn('ssh', ['-F', config, 'a', `exec -a ${marker} sleep 1000`], { env, stdio: 'ignore' });
  const closed = new Promise((r) => session.on('close', r));
  // (the client's own command line names the marker too: the session is another process)
  await waitFor(
    'the session runs',
    () => processesWith(marker).some((p) => p !== session.pid) || undefined,
    15_000,
  );
  await testbedDown(name, deps);
  await closed;
  // the session's shell gets its hangup from the closed connection: on a busy machine that takes a moment
  await waitFor('the session ends', () => processesWith(marker).length === 0 || undefined, 15_000).catch(
    () => {},
  );
  assert.deepEqual(processesWith(marker), []);
  await assertNothingLeft(name);
});
