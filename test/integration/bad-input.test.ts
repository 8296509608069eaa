// Bad input and races on real hosts: names and addresses unique cluster-wide (two creates at once on two hosts),
// addresses checked against the LAN and the hosts, a concurrent migration answered BUSY, options refused before
// anything is printed or sent, uploads that no create follows removed, and `ferry rm` leaving nothing behind.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { FerryError } from '../../src/core/errors.ts';
import { ProcessRunner } from '../../src/runtime/exec.ts';
import { startAgent } from '../../src/testbed/testbed.ts';
import { containers, counterCommand, FERRY_ARGV, skipUnlessReady, startBed } from './helpers.ts';

const errorCode = (stderr: string) => /^ferry: (FERRY_E_[A-Z_]+): /m.exec(stderr)?.[1];
const ls = (dir: string) => {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
};

test('names and addresses are unique cluster-wide; bad addresses and options are refused up front', async (t) => {
  if (!skipUnlessReady(t)) return;
  // b breaks every bundle it receives: a migration there fails at restore and rolls back
  const bed = await startBed(['a', 'b'], { agentEnv: { b: { FERRY_FAULTS: 'invalid-bundle' } } });
  t.after(() => bed.down());
  const [ha, hb] = bed.state.hosts;
  const hostDir = (h: typeof ha) => join(bed.state.dir, 'hosts', h!.name);

  // the CLI says which cluster it acts on
  const ps = await bed.cli(['ps']);
  assert.equal(ps.code, 0, ps.stderr);
  assert.match(ps.stderr, new RegExp(`^cluster: ${bed.name} \\(.*, from \\$FERRY_CLUSTER\\)$`, 'm'));

  // two creates of one name at once on a and b: exactly one wins
  const race = await Promise.all(
    ['a', 'b'].map((h) =>
      bed.cli(['run', '--host', h, '--name', 'race', '--', ...counterCommand(`race-${h}`)]),
    ),
  );
  assert.deepEqual(race.map((r) => r.code).sort(), [0, 1], race.map((r) => r.stderr).join('\n'));
  assert.equal(errorCode(race.find((r) => r.code === 1)!.stderr), 'FERRY_E_CONTAINER_EXISTS');
  assert.equal((await containers(bed)).filter((c) => c.name === 'race').length, 1);

  // two creates with one address at once on a and b: exactly one wins
  const ip = `${bed.state.subnet}.77`;
  const ipRace = await Promise.all(
    ['a', 'b'].map((h) =>
      bed.cli(['run', '--host', h, '--name', `ip${h}`, '--ip', ip, '--', ...counterCommand(`ip-${h}`)]),
    ),
  );
  assert.deepEqual(ipRace.map((r) => r.code).sort(), [0, 1], ipRace.map((r) => r.stderr).join('\n'));
  assert.equal(errorCode(ipRace.find((r) => r.code === 1)!.stderr), 'FERRY_E_ADDRESS_TAKEN');
  assert.equal((await containers(bed)).filter((c) => c.ip === ip).length, 1);

  // addresses: a host's own, off the LAN, taken; asked of the agent directly too (the CLI checks first)
  const before = (await containers(bed)).map((c) => `${c.host}/${c.name}/${c.pid}`).sort();
  const refuse = async (args: string[], code: string) => {
    const r = await bed.cli(args);
    // exit status 2: the command line was refused as such (an --ip off the LAN); 1: any other refusal
    assert.equal(r.code, code === 'FERRY_E_INPUT_ARGS' ? 2 : 1, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(errorCode(r.stderr), code, r.stderr);
  };
  // (independent refusals, each under a name of its own: they run at once, and the containers are compared once
  // they all answered)
  await Promise.all([
    refuse(
      ['run', '--host', 'b', '--name', 'x1', '--ip', ha!.address, '--', '/bin/true'],
      'FERRY_E_ADDRESS_TAKEN',
    ),
    refuse(
      ['run', '--host', 'b', '--name', 'x2', '--ip', '192.0.2.7', '--', '/bin/true'],
      'FERRY_E_INPUT_ARGS',
    ),
    refuse(['run', '--host', 'a', '--name', 'x3', '--ip', ip, '--', '/bin/true'], 'FERRY_E_ADDRESS_TAKEN'),
  ]);
  const direct = async (host: string, body: object, code: string) =>
    assert.rejects(bed.ctx.client(host).create(body as never), (e: FerryError) => {
      assert.equal(e.code, code, e.message);
      return true;
    });
  await Promise.all([
    direct('b', { name: 'x4', command: ['/bin/true'], net: 'own', ip: ha!.address }, 'FERRY_E_ADDRESS_TAKEN'),
    direct('b', { name: 'x5', command: ['/bin/true'], net: 'own', ip: ip }, 'FERRY_E_ADDRESS_TAKEN'),
    direct('b', { name: 'x6', command: ['/bin/true'], net: 'own', ip: '192.0.2.7' }, 'FERRY_E_INPUT_REQUEST'),
    direct('b', { name: 'race', command: ['/bin/true'] }, 'FERRY_E_CONTAINER_EXISTS'),
    direct('a', { name: 'x7', upload: true }, 'FERRY_E_INPUT_REQUEST'),
  ]);

  // migration options out of range: refused before "migrating" is printed or anything is sent
  await Promise.all(
    [
      ['--max-downtime', '600001'],
      ['--threshold', '1e99'],
      ['--streams', '17'],
    ].map(async (opt) => {
      const r = await bed.cli(['migrate', 'race', '--to', 'b', ...opt]);
      assert.equal(errorCode(r.stderr), 'FERRY_E_INPUT_ARGS', r.stderr);
      assert.doesNotMatch(r.stdout + r.stderr, /migrating/);
    }),
  );
  assert.deepEqual((await containers(bed)).map((c) => `${c.host}/${c.name}/${c.pid}`).sort(), before);

  // a second migration of a container being migrated: BUSY (the first fails at b's restore and rolls back)
  const src = (await containers(bed)).find((c) => c.name === 'race')!;
  const dest = bed.ctx.file.hosts.find((h) => h.name !== src.host)!;
  const two = await Promise.allSettled([
    bed.ctx.client(src.host).migrate('race', { to: dest, strategy: 'cold' }, () => {}),
    new Promise((r) => setTimeout(r, 50)).then(() =>
      bed.ctx.client(src.host).migrate('race', { to: dest, strategy: 'cold' }, () => {}),
    ),
  ]);
  const codes = two.map((r) =>
    r.status === 'rejected' ? (r.reason as FerryError).code : (r.value.error?.code ?? 'ok'),
  );
  assert.ok(codes.includes('FERRY_E_CONTAINER_BUSY'), `codes: ${codes.join(', ')}`);
  t.diagnostic(`two migrations at once: ${codes.join(', ')}`);
  t.diagnostic(
    `two creates at once: ${race.map((r) => errorCode(r.stderr) ?? 'ok').join(', ')}; one address: ${ipRace.map((r) => errorCode(r.stderr) ?? 'ok').join(', ')}`,
  );
  assert.equal((await containers(bed)).find((c) => c.name === 'race')?.status, 'running');

  // an upload no create follows: gone when the agent restarts
  const bundle = mkdtempSync(join(tmpdir(), 'ferry-orphan-'));
  t.after(() => rmSync(bundle, { recursive: true, force: true }));
  writeFileSync(join(bundle, 'config.json'), '{}');
  await bed.ctx.client('a').uploadBundle('orphan', bundle);
  assert.deepEqual(ls(join(hostDir(ha), 'uploads')), ['orphan']);
  await startAgent(bed.state, ha!, { runner: new ProcessRunner(), env: bed.env, ferryArgv: FERRY_ARGV });
  assert.deepEqual(ls(join(hostDir(ha), 'uploads')), []);

  // ferry rm leaves nothing of a container on its host (its images of failed migrations included)
  await Promise.all(
    (await containers(bed)).map(async (c) => {
      const r = await bed.cli(['rm', c.name]);
      assert.equal(r.code, 0, r.stderr);
    }),
  );
  for (const h of [ha, hb]) {
    assert.deepEqual(ls(join(hostDir(h), 'containers')), [], `${h!.name}: containers left`);
    assert.deepEqual(ls(join(hostDir(h), 'images')), [], `${h!.name}: images left`);
    assert.deepEqual(ls(join(hostDir(h), 'incoming')), [], `${h!.name}: incoming migrations left`);
  }
});
