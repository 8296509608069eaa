// Bad input gets one clear error, a non-zero exit status, and changes nothing.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { FerryError } from '../../src/core/errors.ts';
import { ProcessRunner } from '../../src/runtime/exec.ts';
import { startAgent, stopAgent } from '../../src/testbed/testbed.ts';
import { containers, counterCommand, FERRY_ARGV, skipUnlessReady, startBed, waitFor } from './helpers.ts';

test('bad input: clear errors, exit status 1 (2 for a bad name), nothing changed', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await startBed(['a', 'b']);
  t.after(() => bed.down());
  assert.equal(
    (await bed.cli(['run', '--host', 'a', '--name', 'web', '--', ...counterCommand(`err-${bed.name}`)])).code,
    0,
  );
  const pidBefore = (await containers(bed)).find((c) => c.name === 'web')!.pid;
  const unchanged = async () => {
    const list = await containers(bed);
    assert.deepEqual(
      list.filter((c) => c.name === 'web').map((c) => [c.host, c.status, c.pid]),
      [['a', 'running', pidBefore]],
      'the container did not move, stop or restart',
    );
  };
  const expectError = async (args: string[], code: string, re?: RegExp) => {
    // exit status 2: the command line itself was refused (a bad name); 1: any other refusal
    const status = code === 'FERRY_E_INPUT_NAME' ? 2 : 1;
    const r = await bed.cli(args);
    assert.equal(r.code, status, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    const errLines = r.stderr.split('\n').filter((l) => l.startsWith('ferry: '));
    assert.equal(errLines.length, 1, `one error line expected:\n${r.stderr}`);
    const line = errLines[0]!;
    assert.match(line, new RegExp(`^ferry: ${code}: `), `${args.join(' ')}: ${r.stderr}`);
    if (re) assert.match(line, re);
    const dd = args.indexOf('--');
    const j = await bed.cli(
      dd < 0 ? [...args, '--json'] : [...args.slice(0, dd), '--json', ...args.slice(dd)],
    );
    assert.equal(j.code, status);
    assert.equal(JSON.parse(j.stdout).error.code, code);
    await unchanged();
  };

  await expectError(['migrate', 'nosuch', '--to', 'b'], 'FERRY_E_CONTAINER_UNKNOWN', /nosuch/);
  await expectError(['migrate', 'web', '--to', 'zz'], 'FERRY_E_HOST_UNKNOWN', /zz/);
  await expectError(['migrate', 'web', '--to', 'a'], 'FERRY_E_HOST_SAME');
  await expectError(['migrate', 'we/b', '--to', 'b'], 'FERRY_E_INPUT_NAME');
  await expectError(['migrate', '..', '--to', 'b'], 'FERRY_E_INPUT_NAME');
  await expectError(['migrate', 'web', '--to', '../b'], 'FERRY_E_INPUT_NAME');
  await expectError(['run', '--host', 'a', '--name', 'x/../y', '--', '/bin/true'], 'FERRY_E_INPUT_NAME');
  await expectError(['run', '--host', 'a', '--name', 'web', '--', '/bin/true'], 'FERRY_E_CONTAINER_EXISTS');
  await expectError(['rm', 'nosuch'], 'FERRY_E_CONTAINER_UNKNOWN');

  // a container whose program has exited cannot be migrated
  assert.equal((await bed.cli(['run', '--host', 'a', '--name', 'done', '--', '/bin/true'])).code, 0);
  await waitFor(
    'exited',
    async () => (await containers(bed)).find((c) => c.name === 'done')?.status === 'stopped' || undefined,
  );
  await expectError(['migrate', 'done', '--to', 'b'], 'FERRY_E_CONTAINER_NOT_RUNNING');
  assert.equal((await bed.cli(['rm', 'done'])).code, 0);

  const hostB = bed.state.hosts.find((h) => h.name === 'b')!;
  const deps = { runner: new ProcessRunner(), env: bed.env, ferryArgv: FERRY_ARGV };
  // unreachable destination
  await stopAgent(bed.state, hostB);
  await expectError(['migrate', 'web', '--to', 'b'], 'FERRY_E_HOST_UNREACHABLE', /host b .*unreachable/);

  // a destination whose CRIU is too old
  const fake = mkdtempSync(join(tmpdir(), 'ferry-oldcriu-'));
  t.after(() => rmSync(fake, { recursive: true, force: true }));
  writeFileSync(
    join(fake, 'criu'),
    '#!/bin/sh\n[ "$1" = --version ] && { echo "Version: 3.17.1"; exit 0; }\necho "Looks good."\n',
  );
  chmodSync(join(fake, 'criu'), 0o755);
  await startAgent(bed.state, hostB, deps, { FERRY_CRIU_PATH: join(fake, 'criu') });
  await expectError(
    ['migrate', 'web', '--to', 'b'],
    'FERRY_E_CRIU_TOO_OLD',
    /host b: CRIU 3\.17\.1 is older than 4\.2/,
  );
  const check = await bed.cli(['check', '--host', 'b', '--json']);
  assert.equal(check.code, 0);
  const caps = JSON.parse(check.stdout);
  assert.equal(caps.strategies.cold.ok, false);
  assert.match(caps.strategies.cold.why, /older than 4\.2/);
  await startAgent(bed.state, hostB, deps);
  // after all that, the container still migrates
  const ok = await bed.cli(['migrate', 'web', '--to', 'b', '--json']);
  assert.equal(ok.code, 0, ok.stdout);
});

test('agent API: refused without a client certificate (401 FERRY_E_AUTH); malformed requests get 400 with a message', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await startBed(['a']);
  t.after(() => bed.down());
  const a = bed.state.hosts[0]!;
  const ca = readFileSync(join(bed.state.dir, 'pki', 'ca.crt'));
  const noCert = await new Promise<string>((resolve) => {
    const req = https.request(
      { host: a.address, port: 7470, path: '/v1/containers', ca, servername: 'a' },
      (res) => {
        let body = '';
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve(`status ${res.statusCode} ${body}`));
      },
    );
    req.on('error', (err: Error & { code?: string }) => resolve(`error ${err.code ?? err.message}`));
    req.end();
  });
  // the handshake completes so that the refusal can say why; no route answers
  assert.match(noCert, /^status 401 .*FERRY_E_AUTH.*no certificate/, noCert);

  const client = bed.ctx.client('a');
  const bad = async (method: string, path: string, json: unknown, re: RegExp) => {
    await assert.rejects(client.request(method, path, { json }), (err: FerryError) => {
      assert.equal(err.code, 'FERRY_E_INPUT_REQUEST', err.message);
      assert.match(err.message, re);
      return true;
    });
  };
  await bad('POST', '/v1/containers', { name: 5 }, /malformed request: .*name/);
  await bad('POST', '/v1/containers', { name: 'ok', command: 'not-a-list' }, /malformed request/);
  await bad('POST', '/v1/containers', { name: 'ok', command: ['/bin/true'], extra: 1 }, /malformed request/);
  await bad(
    'POST',
    '/v1/containers/ok/migrate',
    { to: { name: 'b', address: '10.0.0.1', port: 1 }, strategy: 'teleport' },
    /malformed request/,
  );
  await bad('GET', '/v1/containers/..%2Fetc', undefined, /malformed request/);
  assert.deepEqual(await client.request('GET', '/v1/containers'), []);
});
