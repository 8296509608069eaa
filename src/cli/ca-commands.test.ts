// ferry ca init|issue|rotate on a real directory: what it writes verifies with openssl and completes a mutual TLS
// handshake with the roles it names; rotation replaces the key and keeps what the certificate covers.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { FerryError } from '../core/errors.ts';
import { certificateRole, tlsClientOptions, tlsServerOptions } from '../runtime/pki.ts';
import { caInit, caIssue, caRotate } from './ca-commands.ts';

const run = promisify(execFile);
let root = '';
let dir = '';

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'ferry-ca-'));
  dir = join(root, 'pki');
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

const refused = (re: RegExp) => (e: FerryError) =>
  e instanceof FerryError && e.code === 'FERRY_E_INPUT_ARGS' && re.test(e.message);

describe('ferry ca', () => {
  it('init creates the CA once, its key 0600', async () => {
    await assert.rejects(caIssue(dir, { host: 'a' }), refused(/no cluster CA/));
    assert.deepEqual(await caInit(dir), { ca: join(dir, 'ca.crt'), created: true });
    assert.deepEqual(await caInit(dir), { ca: join(dir, 'ca.crt'), created: false });
    assert.equal(statSync(join(dir, 'ca.key')).mode & 0o777, 0o600);
  });

  it('issue names exactly one subject', async () => {
    await assert.rejects(caIssue(dir, {}), refused(/exactly one of --host/));
    await assert.rejects(caIssue(dir, { host: 'a', user: 'b' }), refused(/exactly one of --host/));
  });

  it('issues an agent, a controller and a user certificate with their roles; openssl verifies them', async () => {
    const a = (await caIssue(dir, { host: 'a', address: ['127.0.0.1'], dns: ['a.example'] })).certificate!;
    assert.equal(a.role, 'agent');
    assert.deepEqual(a.ips, ['127.0.0.1']);
    assert.deepEqual(a.dns, ['a.example']);
    assert.equal(statSync(a.key).mode & 0o777, 0o600);
    const ctl = (await caIssue(dir, { controller: 'ctl', address: ['127.0.0.1'], days: 7 })).certificate!;
    assert.equal(ctl.role, 'controller');
    assert.ok(Date.parse(ctl.notAfter) - Date.now() < 8 * 86_400_000);
    const alice = (await caIssue(dir, { user: 'alice' })).certificate!;
    assert.equal(alice.role, 'client');
    assert.equal(certificateRole(readFileSync(alice.cert)), 'client');
    const { stdout } = await run('openssl', [
      'verify',
      '-CAfile',
      join(dir, 'ca.crt'),
      a.cert,
      ctl.cert,
      alice.cert,
    ]);
    assert.equal(stdout.match(/: OK$/gm)?.length, 3, stdout);
    // a user's certificate names no host
    await assert.rejects(caIssue(dir, { user: 'bob', address: ['127.0.0.1'] }), /no IP addresses/);
  });

  it('a user and an agent it issued complete a mutual TLS handshake', async () => {
    const server = tls.createServer(tlsServerOptions({ ...paths('a') }), (s) => s.end('ok'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as AddressInfo).port;
      const reply = await new Promise<string>((resolve, reject) => {
        const s = tls.connect({
          host: '127.0.0.1',
          port,
          servername: 'a',
          ...tlsClientOptions(paths('alice')),
        });
        let body = '';
        s.setEncoding('utf8');
        s.on('data', (d: string) => {
          body += d;
        });
        s.on('end', () => resolve(body));
        s.on('error', reject);
      });
      assert.equal(reply, 'ok');
    } finally {
      server.close();
    }
  });

  it('issue keeps a certificate that still fits; rotate replaces key and certificate, keeping what it covers', async () => {
    const before = (await caIssue(dir, { host: 'a', address: ['127.0.0.1'] })).certificate!;
    const key = readFileSync(before.key, 'utf8');
    const kept = (await caIssue(dir, { host: 'a', address: ['127.0.0.1'] })).certificate!;
    assert.equal(kept.serial, before.serial);
    const oldCert = join(dir, 'a-before-rotation.pem');
    writeFileSync(oldCert, readFileSync(before.cert));
    const result = await caRotate(dir, { host: 'a' });
    const rotated = result.certificate!;
    assert.notEqual(rotated.serial, before.serial);
    // the one it replaced is on the CA's revocation list, as openssl reads it
    assert.deepEqual(result.revoked, { serial: before.serial, list: join(dir, 'ca.crl') });
    const verify = (cert: string) =>
      run('openssl', [
        'verify',
        '-crl_check',
        '-CRLfile',
        join(dir, 'ca.crl'),
        '-CAfile',
        join(dir, 'ca.crt'),
        cert,
      ])
        .then((r) => r.stdout)
        .catch((e: { stdout?: string; stderr?: string }) => `${e.stdout ?? ''}${e.stderr ?? ''}`);
    assert.match(await verify(rotated.cert), /: OK/);
    assert.match(await verify(oldCert), /certificate revoked/);
    assert.notEqual(readFileSync(rotated.key, 'utf8'), key);
    assert.deepEqual(rotated.ips, ['127.0.0.1']);
    assert.deepEqual(rotated.dns, ['a.example']);
    assert.equal(rotated.role, 'agent');
    // an issue that replaces it (an address it does not cover) revokes it as a rotation does
    writeFileSync(oldCert, readFileSync(rotated.cert));
    const moved = await caIssue(dir, { host: 'a', address: ['127.0.0.2'] });
    assert.notEqual(moved.certificate!.serial, rotated.serial);
    assert.deepEqual(moved.revoked, { serial: rotated.serial, list: join(dir, 'ca.crl') });
    assert.match(await verify(oldCert), /certificate revoked/);
    assert.equal((await caIssue(dir, { host: 'a', address: ['127.0.0.2'] })).revoked, undefined, 'kept');
    await assert.rejects(caRotate(dir, { controller: 'a' }), refused(/has the role agent, not controller/));
    await assert.rejects(caRotate(dir, { host: 'nobody' }), refused(/no certificate nobody/));
  });
});

function paths(name: string) {
  return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`), ca: join(dir, 'ca.crt') };
}
