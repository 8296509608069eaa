// The single executable (`make dist`; built once for the test files of a run, single-executable.ts) run where no
// `node` is on the PATH: --version, --help, check, and a two-host testbed that the executable builds, whose agents
// are the executable itself, where a counter migrates a -> b cold and back by post-copy, keeps counting, and
// everything is removed at the end. Then `check --host ssh://…` against the real sshd of `testbed up --ssh`: the
// executable copied over (refused first on a remote disk without room), not copied again, and a changed or unknown
// host key, a refused login and an unreachable host each refused with their own error.
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { MigrationReport } from '../../src/migration/types.ts';
import { ProcessRunner } from '../../src/runtime/exec.ts';
import { testbedDown } from '../../src/testbed/testbed.ts';
import { assertNothingLeft, counterCommand, readInContainer, skipUnlessReady, waitFor } from './helpers.ts';
import { singleExecutable } from './single-executable.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

/** A directory of links to every program in /usr/bin but node: a Debian host's PATH without Node. */
function pathWithoutNode(dir: string): string {
  mkdirSync(dir);
  for (const name of readdirSync('/usr/bin'))
    if (name !== 'node' && name !== 'nodejs') symlinkSync(join('/usr/bin', name), join(dir, name));
  return `${dir}:/usr/sbin:/sbin`;
}

const work = mkdtempSync(join(tmpdir(), 'ferry-dist-'));
after(() => rmSync(work, { recursive: true, force: true }));
/** An environment with no node on its PATH, a state directory of its own, and the executable to run in it. */
async function setting(name: string) {
  const exe = await singleExecutable();
  const state = join(work, `state-${name}`);
  const env: NodeJS.ProcessEnv = {
    PATH: pathWithoutNode(join(work, `bin-${name}`)),
    HOME: process.env['HOME'] ?? '/root',
    FERRY_STATE: state,
    FERRY_CLUSTER: join(state, 'testbeds', name, 'cluster.json'),
  };
  assert.notEqual(spawnSync('sh', ['-c', 'command -v node'], { env }).status, 0, 'node is on the PATH');
  const attempt = (...args: string[]) => spawnSync(exe, args, { env, encoding: 'utf8', timeout: 180_000 });
  const ferry = (...args: string[]) => {
    const r = attempt(...args);
    assert.equal(r.status, 0, `ferry ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  /** attempt(), without blocking this process: for commands that may run at once. */
  const attemptAsync = (...args: string[]) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(exe, args, { env, encoding: 'utf8', timeout: 180_000 }, (err, stdout, stderr) => {
        const code = (err as { code?: unknown } | null)?.code;
        resolve({ status: err ? (typeof code === 'number' ? code : null) : 0, stdout, stderr });
      });
    });
  const ferryAsync = async (...args: string[]) => {
    const r = await attemptAsync(...args);
    assert.equal(r.status, 0, `ferry ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  return { exe, state, env, ferry, attempt, ferryAsync, attemptAsync };
}

test('the single executable runs every step of a migration on a host without node', async (t) => {
  if (!skipUnlessReady(t)) return;
  const name = `d${randomBytes(2).toString('hex')}`;
  const { exe, state, env, ferry, ferryAsync } = await setting(name);

  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
  // (three commands that touch nothing: at once)
  const [version, help, check] = await Promise.all([
    ferryAsync('--version'),
    ferryAsync('--help'),
    ferryAsync('check'),
  ]);
  assert.match(version, new RegExp(`^ferry ${pkg.version} \\(commit \\S+, single executable with node `));
  assert.match(help, /migrate/);
  assert.match(check, /cold\s+yes/);

  t.after(async () => {
    // the executable's own `down` ran when all went well; this one (from source) makes sure of it
    await testbedDown(name, { runner: new ProcessRunner(), env, ferryArgv: [exe] });
    await assertNothingLeft(name);
  });
  ferry('testbed', 'up', '--name', name, '--hosts', 'a,b');
  // the agents are the executable too
  for (const h of ['a', 'b']) {
    const pid = readFileSync(join(state, 'testbeds', name, 'hosts', h, 'agent.pid'), 'utf8').trim();
    assert.equal(readlinkSync(`/proc/${pid}/exe`), exe);
  }
  ferry('run', '--host', 'a', '--name', 'ctr', '--', ...counterCommand(`dist-${name}`));
  const value = async () => {
    const ps = JSON.parse(ferry('ps', '--json')) as { name: string; host: string; pid?: number }[];
    const c = ps.find((x) => x.name === 'ctr');
    return c?.pid
      ? { host: c.host, n: Number.parseInt(readInContainer(c.pid, '/tmp/counter'), 10) }
      : undefined;
  };
  await waitFor('counter > 3', async () => ((await value())?.n ?? 0) > 3 || undefined);
  for (const [to, strategy] of [
    ['b', 'cold'],
    ['a', 'postcopy'],
  ] as const) {
    const before = (await value())!.n;
    const report = JSON.parse(
      ferry('migrate', 'ctr', '--to', to, '--strategy', strategy, '--json'),
    ) as MigrationReport;
    assert.equal(report.ok, true);
    assert.equal(report.strategy, strategy);
    await waitFor(`counter on ${to} past ${before}`, async () => {
      const v = await value();
      return v && v.host === to && v.n > before ? true : undefined;
    });
  }
  ferry('rm', 'ctr');
  ferry('testbed', 'down', '--name', name);
  await assertNothingLeft(name);
});

test('check --host ssh://…: the executable is copied once, bad hosts are refused with their own error', async (t) => {
  if (!skipUnlessReady(t)) return;
  const name = `e${randomBytes(2).toString('hex')}`;
  const { exe, state, env, ferry, attempt, attemptAsync } = await setting(name);
  t.after(async () => {
    await testbedDown(name, { runner: new ProcessRunner(), env, ferryArgv: [exe] });
    await assertNothingLeft(name);
  });
  const up = JSON.parse(ferry('testbed', 'up', '--name', name, '--hosts', 'a,b', '--ssh', '--json')) as {
    hosts: { name: string; address: string }[];
    ssh: { config: string; knownHosts: string };
  };
  const config = up.ssh.config;
  const refused = (args: string[], code: string) => {
    const r = attempt(...args);
    // a refused command line exits 2, every other refusal 1 (docs/errors.md)
    const status = code === 'FERRY_E_INPUT_ARGS' || code === 'FERRY_E_INPUT_NAME' ? 2 : 1;
    assert.equal(r.status, status, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, new RegExp(`ferry: ${code}: `), r.stderr);
    return r.stderr;
  };

  // a remote disk without room: refused before anything is copied
  const cache = join(state, 'testbeds', name, 'hosts', 'b', 'ssh', 'cache');
  mkdirSync(cache, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', cache]);
  assert.match(
    refused(['check', '--host', 'ssh://b', '--ssh-config', config], 'FERRY_E_NO_SPACE'),
    /no room/,
  );
  execFileSync('umount', [cache]);

  const report = JSON.parse(ferry('check', '--host', 'ssh://b', '--ssh-config', config, '--json')) as {
    strategies: Record<string, { ok: boolean }>;
  };
  assert.equal(report.strategies['cold']?.ok, true);
  const copied = readdirSync(join(cache, 'ferry', 'bin'));
  assert.equal(copied.length, 1);
  const remote = join(cache, 'ferry', 'bin', copied[0]!);
  assert.equal(statSync(remote).mode & 0o777, 0o700);
  assert.equal(statSync(join(cache, 'ferry', 'bin')).mode & 0o777, 0o700);
  assert.equal(sha256(remote), sha256(exe));
  const mtime = statSync(remote).mtimeMs;
  assert.match(
    ferry('check', '--host', `ssh://root@${up.hosts[1]!.address}:22`, '--ssh-config', config),
    /cold\s+yes/,
  );
  assert.equal(statSync(remote).mtimeMs, mtime, 'the same build is not copied again');

  // bad hosts, each refused with its own error; each case has files of its own, so the five run at once
  const refusedAsync = async (args: string[], code: string) => {
    const r = await attemptAsync(...args);
    const status = code === 'FERRY_E_INPUT_ARGS' || code === 'FERRY_E_INPUT_NAME' ? 2 : 1;
    assert.equal(r.status, status, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, new RegExp(`ferry: ${code}: `), r.stderr);
    return r.stderr;
  };
  /** The testbed's ssh_config, with its known_hosts replaced by `knownHosts` and its key by `identity`. */
  const configWith = (file: string, o: { knownHosts?: string; identity?: string }) => {
    let text = readFileSync(config, 'utf8');
    if (o.knownHosts) {
      assert.match(text, /UserKnownHostsFile /);
      text = text.replace(/UserKnownHostsFile .*/g, `UserKnownHostsFile ${o.knownHosts}`);
    }
    if (o.identity) text = text.replace(/IdentityFile .*/, `IdentityFile ${o.identity}`);
    writeFileSync(file, text);
    return file;
  };
  const known = readFileSync(up.ssh.knownHosts, 'utf8');
  const other = join(work, `key-${name}`);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
  const otherPub = readFileSync(`${other}.pub`, 'utf8').split(' ').slice(0, 2).join(' ');
  // a changed host key
  const changedKnown = join(work, `known-changed-${name}`);
  writeFileSync(
    changedKnown,
    known
      .split('\n')
      .map((l) => (l.startsWith('b,') ? `${l.split(' ')[0]} ${otherPub}` : l))
      .join('\n'),
  );
  const changed = configWith(join(work, `config-changed-${name}`), { knownHosts: changedKnown });
  // an unknown one: refused too, saying how to accept it
  const emptyKnown = join(work, `known-empty-${name}`);
  writeFileSync(emptyKnown, '');
  const unknown = configWith(join(work, `config-unknown-${name}`), { knownHosts: emptyKnown });
  // a key the host does not accept
  const wrongKey = configWith(join(work, `config-${name}`), { identity: other });
  // nobody there
  const subnet = up.hosts[0]!.address.split('.').slice(0, 3).join('.');
  const [changedErr, unknownErr] = await Promise.all([
    refusedAsync(['check', '--host', 'ssh://b', '--ssh-config', changed], 'FERRY_E_SSH_HOST_KEY'),
    refusedAsync(['check', '--host', 'ssh://b', '--ssh-config', unknown], 'FERRY_E_SSH_HOST_KEY'),
    refusedAsync(['check', '--host', 'ssh://b', '--ssh-config', wrongKey], 'FERRY_E_SSH_AUTH'),
    refusedAsync(
      ['check', '--host', `ssh://${subnet}.99`, '--ssh-config', config],
      'FERRY_E_SSH_UNREACHABLE',
    ),
    refusedAsync(
      ['check', '--host', 'ssh://-oProxyCommand=true', '--ssh-config', config],
      'FERRY_E_INPUT_ARGS',
    ),
  ]);
  assert.match(changedErr, /CHANGED/);
  assert.match(unknownErr, /not known.*connect once/);
  ferry('testbed', 'down', '--name', name);
});
