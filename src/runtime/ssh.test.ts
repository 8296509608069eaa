// ssh:// targets are parsed strictly, ssh's own failures become the right typed error, and host key checking is
// never turned off.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Runner } from './exec.ts';
import { parseSshTarget, SshHost, sshFailure } from './ssh.ts';

test('ssh:// targets: user, host, port, and nothing else', () => {
  assert.deepEqual(parseSshTarget('ssh://b'), { host: 'b', text: 'ssh://b' });
  assert.deepEqual(parseSshTarget('ssh://root@10.0.0.2:2222'), {
    user: 'root',
    host: '10.0.0.2',
    port: 2222,
    text: 'ssh://root@10.0.0.2:2222',
  });
  assert.equal(parseSshTarget('ssh://[fd00::2]:22').host, 'fd00::2');
  for (const bad of [
    'b',
    'ssh://',
    'ssh://-oProxyCommand=x',
    'ssh://a b',
    'ssh://host:0',
    'ssh://host:99999',
    'ssh://host/path',
    'ssh://us er@host',
    'ssh://host;rm',
  ])
    assert.throws(() => parseSshTarget(bad), { code: 'FERRY_E_INPUT_ARGS' }, bad);
});

test("ssh's failures: host key unknown or changed, authentication, the connection", () => {
  const t = parseSshTarget('ssh://root@b:2222');
  const fail = (stderr: string) => sshFailure(t, { code: 255, stderr }, 'check');
  const changed = fail(
    '@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.\n',
  );
  assert.equal(changed?.code, 'FERRY_E_SSH_HOST_KEY');
  assert.match(changed?.message ?? '', /CHANGED/);
  assert.match(changed?.hint ?? '', /ssh-keygen -R '\[b\]:2222'/);
  const unknown = fail(
    'No ED25519 host key is known for b and you have requested strict checking.\nHost key verification failed.',
  );
  assert.equal(unknown?.code, 'FERRY_E_SSH_HOST_KEY');
  assert.match(unknown?.hint ?? '', /ssh -p 2222 root@b/);
  assert.equal(fail('root@b: Permission denied (publickey).')?.code, 'FERRY_E_SSH_AUTH');
  assert.equal(fail('ssh: connect to host b port 2222: No route to host')?.code, 'FERRY_E_SSH_UNREACHABLE');
  assert.equal(fail('Connection to b closed by remote host.')?.code, 'FERRY_E_SSH_UNREACHABLE');
  // the remote command failed, not ssh: not ssh's error
  assert.equal(sshFailure(t, { code: 1, stderr: 'no such file' }, 'check'), undefined);
});

test('the ssh command line keeps host key checking and never prompts', () => {
  const runner: Runner = { run: () => Promise.reject(new Error('not run')) };
  const argv = new SshHost(parseSshTarget('ssh://u@h:2200'), runner, { configFile: '/c' }).argv('true');
  assert.deepEqual(argv, [
    'ssh',
    '-F',
    '/c',
    '-o',
    'BatchMode=yes',
    '-p',
    '2200',
    '-l',
    'u',
    '--',
    'h',
    'true',
  ]);
  assert.ok(!argv.join(' ').includes('StrictHostKeyChecking'));
});
