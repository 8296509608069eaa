// The CA's revocation list as ferry ca writes it and the daemons read it: where it lives, what it lists across
// rotations, and a list of another CA refused before a daemon starts with it.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FerryError } from '../core/errors.ts';
import { ClusterCA, checkOwnNotRevoked } from './pki.ts';
import {
  crlPath,
  normalSerial,
  readRevocationList,
  revokedSerials,
  watchRevocationList,
} from './revocation.ts';

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-revocation-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const serialOf = (file: string) => normalSerial(new X509Certificate(readFileSync(file)).serialNumber);

describe('the revocation list', () => {
  it('lives beside the CA certificate, under its name', () => {
    assert.equal(crlPath('/etc/ferry/pki/ca.crt'), '/etc/ferry/pki/ca.crl');
    assert.equal(crlPath('/x/cluster-ca.pem'), '/x/cluster-ca.crl');
    assert.equal(normalSerial('00AB01'), 'ab01');
    assert.equal(normalSerial('0'), '0');
  });

  it('starts empty with the CA, and lists every certificate a rotation replaced', async () => {
    const ca = new ClusterCA(join(dir, 'one'));
    await ca.ensure();
    assert.ok(readRevocationList(ca.caCert)?.toString().startsWith('-----BEGIN X509 CRL-----'));
    assert.equal((await revokedSerials(ca.caCert)).size, 0);
    const p = await ca.issue('h', { role: 'agent' });
    const first = serialOf(p.cert);
    await ca.issue('h', { role: 'agent' }); // still fits: kept, nothing revoked
    assert.equal((await revokedSerials(ca.caCert)).size, 0);
    await ca.rotate('h', { role: 'agent' });
    const second = serialOf(p.cert);
    await ca.rotate('h', { role: 'agent' });
    assert.deepEqual(await revokedSerials(ca.caCert), new Set([first, second]));
    await checkOwnNotRevoked(p); // the current one is fine
  });

  it('lists a certificate an issue replaced (another address, role or key), not one it only renewed', async () => {
    let now = Date.now();
    const ca = new ClusterCA(join(dir, 'five'), { now: () => now });
    const p = await ca.issue('h', { role: 'agent', ips: ['10.0.0.1'] });
    const first = serialOf(p.cert);
    // an address the certificate does not cover: replaced, and the old one revoked
    assert.deepEqual(await ca.issueRevoking('h', { role: 'agent', ips: ['10.0.0.2'] }), {
      paths: p,
      revoked: first,
    });
    const second = serialOf(p.cert);
    // another role for the name
    assert.equal((await ca.issueRevoking('h', { role: 'controller' })).revoked, second);
    const third = serialOf(p.cert);
    // a key that is not the certificate's (the old key may be anywhere)
    writeFileSync(p.key, readFileSync((await ca.issue('k', { role: 'client' })).key));
    assert.equal((await ca.issueRevoking('h', { role: 'controller' })).revoked, third);
    const fourth = serialOf(p.cert);
    // the same certificate past two thirds of its 90 days: renewed, the old one left to expire
    now += 61 * 24 * 3600_000;
    assert.deepEqual(await ca.issueRevoking('h', { role: 'controller' }), { paths: p });
    assert.notEqual(serialOf(p.cert), fourth);
    assert.deepEqual(await revokedSerials(ca.caCert), new Set([first, second, third]));
    await checkOwnNotRevoked(p);
  });

  it('of another CA is refused, naming the file; none at all checks nothing', async () => {
    const ca = new ClusterCA(join(dir, 'two'));
    const other = new ClusterCA(join(dir, 'three'));
    const p = await ca.issue('h', { role: 'agent' });
    await other.ensure();
    copyFileSync(crlPath(other.caCert), crlPath(ca.caCert));
    await assert.rejects(checkOwnNotRevoked(p), (e: FerryError) => {
      assert.equal(e.code, 'FERRY_E_INPUT_ARGS');
      assert.match(e.message, /two\/ca\.crl: is not signed by the CA .*two\/ca\.crt/);
      return true;
    });
    writeFileSync(crlPath(ca.caCert), 'not a list');
    await assert.rejects(checkOwnNotRevoked(p), /ca\.crl: not a revocation list/);
    rmSync(crlPath(ca.caCert));
    assert.equal(readRevocationList(ca.caCert), undefined);
    await checkOwnNotRevoked(p);
  });

  it('tells a watcher when a new copy replaces it', async () => {
    const ca = new ClusterCA(join(dir, 'four'));
    await ca.issue('h', { role: 'agent' });
    let changes = 0;
    const stop = watchRevocationList(ca.caCert, () => {
      changes++;
    });
    try {
      await new Promise((r) => setTimeout(r, 1500));
      await ca.rotate('h', { role: 'agent' });
      for (let i = 0; i < 100 && changes === 0; i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(changes > 0);
    } finally {
      stop();
    }
  });
});
