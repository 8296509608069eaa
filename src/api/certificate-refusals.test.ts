// Every kind of bad certificate, over real TLS handshakes on loopback, on both ends of the one transport the CLI,
// the agents and the controller share: the server setup (http-server.ts) answers a caller's bad certificate with
// 401 FERRY_E_AUTH naming whose certificate and why, and the client (https-client.ts) refuses a server's bad
// certificate with FERRY_E_AUTH naming the host and why, never as a network failure. The real agent and
// controller are checked the same way in test/integration/trust.test.ts.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { copyFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { issueOdd } from '../../test/support/odd-certificates.ts';
import type { FerryError } from '../core/errors.ts';
import { silentLogger } from '../core/log.ts';
import {
  type CertPaths,
  ClusterCA,
  checkOwnNotRevoked,
  tlsClientOptions,
  tlsServerOptions,
} from '../runtime/pki.ts';
import { CRL_POLL_MS, normalSerial, revokedSerials } from '../runtime/revocation.ts';
import { buildApiServer, followRevocations } from './http-server.ts';
import { HttpsClient, TlsPool } from './https-client.ts';

const DAY = 86_400_000;
let dir = '';
let ca: ClusterCA;
const closers: (() => unknown)[] = [];

/** A real API server on loopback with `certs`, one route open to every role, following the revocation list. */
async function serve(certs: CertPaths): Promise<number> {
  const app = buildApiServer({ log: silentLogger(), https: tlsServerOptions(certs) });
  app.get('/v1/health', { config: { roles: ['agent', 'controller', 'client'] } }, async () => ({ ok: true }));
  await app.listen({ host: '127.0.0.1', port: 0 });
  const unfollow = followRevocations(app.server, certs, silentLogger());
  closers.push(unfollow, () => app.close());
  return (app.server.address() as AddressInfo).port;
}

function client(name: string, port: number, certs: CertPaths): HttpsClient {
  const c = new HttpsClient({ name, address: '127.0.0.1', port }, tlsClientOptions(certs), {
    timeoutMs: 5000,
  });
  closers.push(() => c.close());
  return c;
}

const refused = (re: RegExp) => (err: FerryError) => {
  assert.equal(err.code, 'FERRY_E_AUTH', err.message);
  assert.match(err.message, re);
  return true;
};

const odd = (name: string, o: Parameters<typeof issueOdd>[3]) => issueOdd(ca.dir, dir, name, o);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-refusals-'));
  ca = new ClusterCA(join(dir, 'ca'));
  await ca.ensure();
});

after(async () => {
  for (const c of closers.reverse()) await c();
  await rm(dir, { recursive: true, force: true });
});

describe('a caller with a bad certificate', () => {
  let port = 0;
  before(async () => {
    port = await serve(await ca.issue('srv', { role: 'agent', ips: ['127.0.0.1'] }));
  });

  it('is let in with a good one', async () => {
    const cli = await ca.issue('cli', { role: 'client' });
    assert.deepEqual(await client('srv', port, cli).request('GET', '/v1/health'), { ok: true });
  });

  it('is refused, naming the certificate, where it came from and why', async () => {
    const now = Date.now();
    const other = new ClusterCA(join(dir, 'other'));
    const cases: [CertPaths, RegExp][] = [
      [
        await odd('expired', {
          role: 'client',
          usages: ['clientAuth'],
          notBefore: new Date(now - 10 * DAY),
          notAfter: new Date(now - DAY),
        }),
        /host srv refused this connection: the certificate of expired \(from 127\.0\.0\.1\) has expired \(CERT_HAS_EXPIRED\)/,
      ],
      [
        await odd('early', {
          role: 'client',
          usages: ['clientAuth'],
          notBefore: new Date(now + DAY),
          notAfter: new Date(now + 10 * DAY),
        }),
        /the certificate of early \(from 127\.0\.0\.1\) is not valid yet .*\(CERT_NOT_YET_VALID\)/,
      ],
      [
        { ...(await other.issue('foreign', { role: 'client' })), ca: ca.caCert },
        /the certificate of foreign .* is not signed by this cluster's CA/,
      ],
      [
        // a server-only certificate used as a client's
        await odd('server-only', {
          role: 'agent',
          usages: ['serverAuth'],
          notBefore: new Date(now - DAY),
          notAfter: new Date(now + DAY),
        }),
        /the certificate of server-only .* is not for TLS clients .*\(INVALID_PURPOSE\)/,
      ],
    ];
    for (const [certs, re] of cases)
      await assert.rejects(client('srv', port, certs).request('GET', '/v1/health'), refused(re));
  });

  it('is refused once a rotation replaced its certificate, without restarting the server', async () => {
    const user = await ca.issue('rotated', { role: 'client' });
    const old = { ...user, cert: join(dir, 'old.crt'), key: join(dir, 'old.key') };
    copyFileSync(user.cert, old.cert);
    copyFileSync(user.key, old.key);
    assert.deepEqual(await client('srv', port, old).request('GET', '/v1/health'), { ok: true });
    await ca.rotate('rotated', { role: 'client' });
    // the server picks up the new list within a poll or two (given more on a busy machine)
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, CRL_POLL_MS));
      const ok = await client('srv', port, old)
        .request('GET', '/v1/health')
        .then(() => true)
        .catch(() => false);
      if (!ok) break;
    }
    await assert.rejects(
      client('srv', port, old).request('GET', '/v1/health'),
      refused(
        /the certificate of rotated .* was revoked \(ferry ca rotate or issue replaced it\) \(CERT_REVOKED\)/,
      ),
    );
    assert.deepEqual(await client('srv', port, user).request('GET', '/v1/health'), { ok: true });
    // a second rotation keeps the first one's entry
    const second = await readFile(user.cert);
    await ca.rotate('rotated', { role: 'client' });
    const serials = await revokedSerials(ca.caCert);
    assert.ok(serials.has(normalSerial(new X509Certificate(await readFile(old.cert)).serialNumber)));
    assert.ok(serials.has(normalSerial(new X509Certificate(second).serialNumber)));
    // and a daemon given the old pair refuses to start with it
    await assert.rejects(checkOwnNotRevoked(old), (err: FerryError) => {
      assert.equal(err.code, 'FERRY_E_INPUT_ARGS');
      assert.match(err.message, /old\.crt: was replaced by ferry ca rotate or issue and is revoked/);
      return true;
    });
  });
});

describe('a server with a bad certificate', () => {
  it('is refused by the caller, naming the host and why', async () => {
    const now = Date.now();
    const cli = await ca.issue('user', { role: 'client' });
    const server = (name: string, o: Omit<Parameters<typeof issueOdd>[3], 'ips'>) =>
      odd(name, { ...o, ips: ['127.0.0.1'] });
    const valid = { notBefore: new Date(now - DAY), notAfter: new Date(now + DAY) };
    const other = new ClusterCA(join(dir, 'other2'));
    const cases: [string, CertPaths, RegExp][] = [
      [
        'old-host',
        await server('old-host', {
          role: 'agent',
          usages: ['serverAuth', 'clientAuth'],
          notBefore: new Date(now - 10 * DAY),
          notAfter: new Date(now - DAY),
        }),
        /host old-host \(127\.0\.0\.1:\d+\) presented a certificate that has expired \(CERT_HAS_EXPIRED\)/,
      ],
      [
        'new-host',
        await server('new-host', {
          role: 'agent',
          usages: ['serverAuth', 'clientAuth'],
          notBefore: new Date(now + DAY),
          notAfter: new Date(now + 10 * DAY),
        }),
        /host new-host .* is not valid yet .*\(CERT_NOT_YET_VALID\)/,
      ],
      [
        'client-host',
        // a client certificate used as a server's
        await server('client-host', { role: 'client', usages: ['clientAuth'], ...valid }),
        /host client-host .* is not for TLS servers .*\(INVALID_PURPOSE\)/,
      ],
      [
        'foreign-host',
        await other.issue('foreign-host', { role: 'agent', ips: ['127.0.0.1'] }),
        /host foreign-host .* is not signed by this cluster's CA/,
      ],
    ];
    for (const [name, certs, re] of cases) {
      const port = await serve({ ...certs, ca: ca.caCert });
      await assert.rejects(client(name, port, cli).request('GET', '/v1/health'), refused(re));
    }
  });

  it('is refused by a daemon once it reloads the list, even over a connection it had kept open', async () => {
    const host = await ca.issue('swapped', { role: 'agent', ips: ['127.0.0.1'] });
    const old = { ...host, cert: join(dir, 'swapped-old.crt'), key: join(dir, 'swapped-old.key') };
    copyFileSync(host.cert, old.cert);
    copyFileSync(host.key, old.key);
    const port = await serve(old);
    const me = await ca.issue('daemon', { role: 'controller' });
    const pool = new TlsPool(tlsClientOptions(me));
    const c = new HttpsClient({ name: 'swapped', address: '127.0.0.1', port }, pool, { timeoutMs: 5000 });
    closers.push(() => pool.close());
    assert.deepEqual(await c.request('GET', '/v1/health'), { ok: true });
    await ca.rotate('swapped', { role: 'agent', ips: ['127.0.0.1'] });
    pool.reload(tlsClientOptions(me));
    await assert.rejects(
      c.request('GET', '/v1/health'),
      refused(/host swapped .* presented a certificate that was revoked .*\(CERT_REVOKED\)/),
    );
  });

  it('is refused once a rotation replaced its certificate', async () => {
    const host = await ca.issue('moved', { role: 'agent', ips: ['127.0.0.1'] });
    const old = { ...host, cert: join(dir, 'moved-old.crt'), key: join(dir, 'moved-old.key') };
    copyFileSync(host.cert, old.cert);
    copyFileSync(host.key, old.key);
    const port = await serve(old);
    await ca.rotate('moved', { role: 'agent', ips: ['127.0.0.1'] });
    // a caller that reads the new list (the CLI reads it at every start)
    const cli = await ca.issue('user2', { role: 'client' });
    await assert.rejects(
      client('moved', port, cli).request('GET', '/v1/health'),
      refused(/host moved .* presented a certificate that was revoked .*\(CERT_REVOKED\)/),
    );
  });
});
