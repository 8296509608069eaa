// The single executable (`make dist`), built once here and then run where no `node` is on the PATH: --version,
// --help, check, and a two-host testbed that the executable builds, whose agents are the executable itself, where a
// counter migrates a -> b cold and back by post-copy, keeps counting, and everything is removed at the end.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { MigrationReport } from '../../src/migration/types.ts';
import { ProcessRunner } from '../../src/runtime/exec.ts';
import { testbedDown } from '../../src/testbed/testbed.ts';
import { assertNothingLeft, counterCommand, readInContainer, skipUnlessReady, waitFor } from './helpers.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const run = promisify(execFile);

/** A directory of links to every program in /usr/bin but node: a Debian host's PATH without Node. */
function pathWithoutNode(dir: string): string {
  mkdirSync(dir);
  for (const name of readdirSync('/usr/bin'))
    if (name !== 'node' && name !== 'nodejs') symlinkSync(join('/usr/bin', name), join(dir, name));
  return `${dir}:/usr/sbin:/sbin`;
}

test('the single executable runs every step of a migration on a host without node', async (t) => {
  if (!skipUnlessReady(t)) return;
  const work = mkdtempSync(join(tmpdir(), 'ferry-dist-'));
  t.after(() => rmSync(work, { recursive: true, force: true }));
  const exe = join(work, 'ferry-linux-x64');
  await run('bash', [join(REPO, 'scripts/dist.sh'), exe], { cwd: REPO, timeout: 300_000 });

  const name = `d${randomBytes(2).toString('hex')}`;
  const state = join(work, 'state');
  const env: NodeJS.ProcessEnv = {
    PATH: pathWithoutNode(join(work, 'bin')),
    HOME: process.env['HOME'] ?? '/root',
    FERRY_STATE: state,
    FERRY_CLUSTER: join(state, 'testbeds', name, 'cluster.json'),
  };
  assert.notEqual(spawnSync('sh', ['-c', 'command -v node'], { env }).status, 0, 'node is on the PATH');
  const ferry = (...args: string[]) => {
    const r = spawnSync(exe, args, { env, encoding: 'utf8', timeout: 180_000 });
    assert.equal(r.status, 0, `ferry ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };

  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
  assert.match(ferry('--version'), new RegExp(`^ferry ${pkg.version} \\(commit \\S+, single executable,`));
  assert.match(ferry('--help'), /migrate/);
  assert.match(ferry('check'), /cold\s+yes/);

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
