import 'reflect-metadata';
import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import tls from 'node:tls';
import * as px from '@peculiar/x509';
import { FerryError } from '../core/errors.ts';
import {
  type CertPaths,
  ClusterCA,
  certificateExpired,
  certificateExpiry,
  certificateRole,
  checkOwnCertificate,
  peerRole,
  type Role,
  requireRole,
  tlsClientOptions,
  tlsServerOptions,
} from './pki.ts';

/** The CN of the peer's verified certificate; undefined if the peer presented none or it did not verify. */
function peerName(socket: tls.TLSSocket): string | undefined {
  if (!socket.authorized) return undefined;
  const cn: unknown = socket.getPeerCertificate()?.subject?.CN;
  return typeof cn === 'string' && cn !== '' ? cn : undefined;
}

const OID_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const OID_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const DAY = 86_400_000;

let root = '';
let ca: ClusterCA;
let other: ClusterCA;
let agent: CertPaths;
let controller: CertPaths;
let cli: CertPaths;
let otherAgent: CertPaths;
let otherCli: CertPaths;
const servers: tls.Server[] = [];

/** A TLS server on loopback that answers every client with "<peer name> <peer role>". */
function listen(opts: tls.TlsOptions): Promise<number> {
  const server = tls.createServer(opts, (socket) => {
    socket.end(`${peerName(socket) ?? '<none>'} ${peerRole(socket) ?? '<none>'}`);
  });
  server.on('tlsClientError', () => {});
  servers.push(server);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

function dial(port: number, opts: tls.ConnectionOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'node-1', ...opts });
    let body = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      body += d;
    });
    socket.on('error', reject);
    // With TLS 1.3 the client's handshake completes before the server has checked the client's certificate;
    // a refusal then shows as a connection closed without the server's reply.
    socket.on('close', () =>
      body ? resolve(body) : reject(Object.assign(new Error('closed without a reply'), { code: 'ENOREPLY' })),
    );
    socket.setTimeout(5000, () => socket.destroy(new Error('timeout')));
  });
}

/** The server aborted the handshake: a TLS alert, a reset, or (TLS 1.3) a close before any reply. */
function refused(e: NodeJS.ErrnoException): boolean {
  return /^ERR_SSL_|^ECONNRESET$|^EPIPE$|^ENOREPLY$/.test(e.code ?? '');
}

async function mode(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

async function x509(path: string): Promise<X509Certificate> {
  return new X509Certificate(await readFile(path));
}

async function parsed(path: string): Promise<px.X509Certificate> {
  return new px.X509Certificate(await readFile(path, 'utf8'));
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'ferry-pki-'));
  ca = new ClusterCA(join(root, 'ca'));
  other = new ClusterCA(join(root, 'other'));
  await ca.ensure();
  [agent, controller, cli, otherAgent, otherCli] = await Promise.all([
    ca.issue('node-1', { role: 'agent', ips: ['127.0.0.1'] }),
    ca.issue('controller', { role: 'controller', ips: ['127.0.0.1', '10.9.0.1'] }),
    ca.issue('cli', { role: 'client' }),
    other.issue('node-1', { role: 'agent', ips: ['127.0.0.1'] }),
    other.issue('cli', { role: 'client' }),
  ]);
});

after(async () => {
  for (const s of servers) await new Promise((resolve) => s.close(resolve));
  if (root) await rm(root, { recursive: true, force: true });
});

describe('ClusterCA', () => {
  it('creates a P-256 CA with a private key', async () => {
    const c = await x509(join(root, 'ca', 'ca.crt'));
    assert.equal(c.subject, 'CN=ferry cluster CA');
    assert.equal(c.ca, true);
    assert.equal(c.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.ok(c.verify(c.publicKey));
    assert.ok(c.validFromDate.getTime() < Date.now() - 30 * 60_000, 'notBefore is backdated for clock skew');
    assert.ok(c.validToDate.getTime() > Date.now() + 9 * 365 * DAY);
    assert.ok(c.checkPrivateKey(createPrivateKey(await readFile(join(root, 'ca', 'ca.key')))));
    assert.equal(await mode(join(root, 'ca', 'ca.key')), 0o600);
    assert.equal(await mode(join(root, 'ca')), 0o700);
    const ku = (await parsed(join(root, 'ca', 'ca.crt'))).getExtension(px.KeyUsagesExtension);
    assert.equal(ku?.usages, px.KeyUsageFlags.keyCertSign | px.KeyUsageFlags.cRLSign);
    assert.equal(certificateRole(c), undefined, 'the CA has no role');
  });

  it('ensure() is idempotent', async () => {
    const first = await readFile(join(root, 'ca', 'ca.crt'), 'utf8');
    await ca.ensure();
    await ca.ensure();
    assert.equal(await readFile(join(root, 'ca', 'ca.crt'), 'utf8'), first);
  });

  it('refuses to replace a CA whose key is missing', async () => {
    const lone = new ClusterCA(join(root, 'lone'));
    await lone.ensure();
    await rm(join(root, 'lone', 'ca.key'));
    await assert.rejects(
      lone.ensure(),
      (e: unknown) => e instanceof FerryError && e.code === 'FERRY_E_INTERNAL',
    );
  });

  it('issues agent certificates: role, SANs, serverAuth+clientAuth, digitalSignature, 90 days', async () => {
    assert.deepEqual(agent, {
      cert: join(root, 'ca', 'node-1.crt'),
      key: join(root, 'ca', 'node-1.key'),
      ca: join(root, 'ca', 'ca.crt'),
    });
    const c = await x509(agent.cert);
    assert.equal(c.subject, 'CN=node-1');
    assert.equal(c.ca, false);
    assert.ok(c.checkIssued(await x509(agent.ca)));
    assert.ok(c.verify((await x509(agent.ca)).publicKey));
    assert.ok(c.checkPrivateKey(createPrivateKey(await readFile(agent.key))));
    assert.equal(c.subjectAltName, 'DNS:node-1, IP Address:127.0.0.1, URI:ferry://role/agent');
    assert.equal(c.checkIP('127.0.0.1'), '127.0.0.1');
    assert.equal(c.checkHost('node-1'), 'node-1');
    assert.deepEqual([...(c.keyUsage ?? [])].sort(), [OID_SERVER_AUTH, OID_CLIENT_AUTH]);
    const ku = (await parsed(agent.cert)).getExtension(px.KeyUsagesExtension);
    assert.equal(ku?.usages, px.KeyUsageFlags.digitalSignature);
    assert.equal(ku?.critical, true);
    assert.equal(certificateRole(await readFile(agent.cert)), 'agent');
    const days = (c.validToDate.getTime() - Date.now()) / DAY;
    assert.ok(days > 89.9 && days <= 90, `${days} days`);
    assert.equal(await mode(agent.key), 0o600);
  });

  it('issues controller certificates with their role and both usages', async () => {
    const c = await x509(controller.cert);
    assert.equal(
      c.subjectAltName,
      'DNS:controller, IP Address:127.0.0.1, IP Address:10.9.0.1, URI:ferry://role/controller',
    );
    assert.deepEqual([...(c.keyUsage ?? [])].sort(), [OID_SERVER_AUTH, OID_CLIENT_AUTH]);
    assert.equal(certificateRole(c), 'controller');
    assert.equal(await mode(controller.key), 0o600);
  });

  it('issues client certificates: clientAuth only, no host names, 30 days', async () => {
    const c = await x509(cli.cert);
    assert.equal(c.subject, 'CN=cli');
    assert.equal(c.subjectAltName, 'URI:ferry://role/client');
    assert.deepEqual(c.keyUsage, [OID_CLIENT_AUTH]);
    assert.equal(certificateRole(c.raw), 'client');
    const days = (certificateExpiry(c.raw).getTime() - Date.now()) / DAY;
    assert.ok(days > 29.9 && days <= 30, `${days} days`);
    assert.equal(await mode(cli.key), 0o600);
  });

  it('gives every certificate a random positive serial number', async () => {
    const serials = await Promise.all(
      [agent, controller, cli, otherAgent, otherCli].map(async (p) => (await x509(p.cert)).serialNumber),
    );
    assert.equal(new Set(serials).size, serials.length);
    for (const s of serials) {
      assert.ok(s.length >= 30, `serial ${s} carries ~128 random bits`);
      assert.ok(Number.parseInt(s.slice(0, 2), 16) < 0x80, 'positive');
    }
  });

  it('keeps a fitting certificate and reissues when the request changes', async () => {
    const a = await ca.issue('node-2', { role: 'agent', ips: ['10.0.0.2'], dns: ['node-2.example'] });
    const pem1 = await readFile(a.cert, 'utf8');
    await ca.issue('node-2', { role: 'agent', ips: ['10.0.0.2'] });
    assert.equal(await readFile(a.cert, 'utf8'), pem1, 'same request: kept');

    await ca.issue('node-2', { role: 'agent', ips: ['10.0.0.2', '::1'] });
    const pem2 = await readFile(a.cert, 'utf8');
    assert.notEqual(pem2, pem1, 'new IP: reissued');
    const c = await x509(a.cert);
    assert.ok(c.checkIP('::1'));
    assert.ok(c.checkIP('10.0.0.2'));

    await ca.issue('node-2', { role: 'controller', ips: ['10.0.0.2', '::1'] });
    assert.equal(certificateRole(await readFile(a.cert)), 'controller', 'role change: reissued');

    await ca.issue('node-2', { role: 'client' });
    assert.deepEqual((await x509(a.cert)).keyUsage, [OID_CLIENT_AUTH], 'role change: reissued');
  });

  it('rotate() replaces key and certificate under the same name, leaving no temporary files', async () => {
    const p = await ca.issue('node-3', { role: 'agent', ips: ['10.0.0.3'] });
    const [cert1, key1] = await Promise.all([readFile(p.cert, 'utf8'), readFile(p.key, 'utf8')]);
    const q = await ca.rotate('node-3', { role: 'agent', ips: ['10.0.0.3'] });
    assert.deepEqual(q, p);
    const [cert2, key2] = await Promise.all([readFile(p.cert, 'utf8'), readFile(p.key, 'utf8')]);
    assert.notEqual(cert2, cert1);
    assert.notEqual(key2, key1, 'a new key');
    const c = await x509(p.cert);
    assert.ok(c.checkPrivateKey(createPrivateKey(key2)));
    assert.equal(certificateRole(c), 'agent');
    assert.equal(await mode(p.key), 0o600);
    const left = (await readdir(join(root, 'ca'))).filter((f) => f.startsWith('.') || f.endsWith('.tmp'));
    assert.deepEqual(left, []);
  });

  it('reissues an expired certificate, which certificateExpired() detects', async () => {
    const dir = join(root, 'past');
    const past = Date.now() - 40 * DAY;
    const old = new ClusterCA(dir, { now: () => past });
    const p = await old.issue('late', { role: 'client', days: 30 });
    const pem = await readFile(p.cert);
    assert.ok(certificateExpiry(pem).getTime() < Date.now());
    assert.equal(certificateExpired(pem), true);
    assert.equal(certificateExpired(pem, past + DAY), false);
    await new ClusterCA(dir).issue('late', { role: 'client' });
    assert.equal(certificateExpired(await readFile(p.cert)), false, 'a fresh one replaced it');
  });

  it('serializes concurrent issues of one name (key matches cert)', async () => {
    const ps = await Promise.all(
      [1, 2, 3].map((i) => ca.issue('busy', { role: 'agent', ips: [`10.0.1.${i}`], force: true })),
    );
    const p = ps[0]!;
    assert.ok((await x509(p.cert)).checkPrivateKey(createPrivateKey(await readFile(p.key))));
  });

  it('rejects bad names and arguments', async () => {
    const code = (c: string) => (e: unknown) => e instanceof FerryError && e.code === c;
    await assert.rejects(ca.issue('../x', { role: 'client' }), code('FERRY_E_INPUT_NAME'));
    await assert.rejects(ca.issue('ca', { role: 'client' }), code('FERRY_E_INPUT_NAME'));
    await assert.rejects(ca.issue('h', { role: 'root' as Role }), code('FERRY_E_INPUT_ARGS'));
    await assert.rejects(ca.issue('h', { role: 'agent', ips: ['300.1.1.1'] }), code('FERRY_E_INPUT_ARGS'));
    await assert.rejects(ca.issue('h', { role: 'agent', dns: ['a\nb'] }), code('FERRY_E_INPUT_ARGS'));
    await assert.rejects(ca.issue('h', { role: 'agent', dns: ['a,IP:1.2.3.4'] }), code('FERRY_E_INPUT_ARGS'));
    await assert.rejects(ca.issue('h', { role: 'client', ips: ['1.2.3.4'] }), code('FERRY_E_INPUT_ARGS'));
    await assert.rejects(ca.issue('h', { role: 'agent', days: 0 }), code('FERRY_E_INPUT_ARGS'));
  });
});

describe('checkOwnCertificate', () => {
  const refused = (file: string, re: RegExp) => (e: FerryError) =>
    e instanceof FerryError &&
    e.code === 'FERRY_E_INPUT_ARGS' &&
    e.message.startsWith(file) &&
    re.test(e.message);

  it('passes a daemon its own certificate, of its role and name, and tells when it expires', () => {
    const r = checkOwnCertificate(agent, { role: 'agent', name: 'node-1' });
    assert.equal(r.name, 'node-1');
    assert.ok(r.notAfter.getTime() > Date.now());
    assert.equal(checkOwnCertificate(controller, { role: 'controller' }).name, 'controller');
  });

  it('refuses, naming the file: another role or name, a key of another, another CA, expired, missing', () => {
    assert.throws(
      () => checkOwnCertificate(cli, { role: 'agent' }),
      refused(cli.cert, /role client, not agent/),
    );
    assert.throws(
      () => checkOwnCertificate(agent, { role: 'agent', name: 'node-2' }),
      refused(agent.cert, /issued to node-1, not node-2/),
    );
    assert.throws(
      () => checkOwnCertificate({ ...agent, key: cli.key }, { role: 'agent' }),
      refused(cli.key, /is not the key of/),
    );
    assert.throws(
      () => checkOwnCertificate({ ...otherAgent, ca: agent.ca }, { role: 'agent' }),
      refused(otherAgent.cert, /is not signed by the CA/),
    );
    assert.throws(
      () => checkOwnCertificate(agent, { role: 'agent' }, Date.now() + 400 * DAY),
      refused(agent.cert, /expired on/),
    );
    assert.throws(
      () => checkOwnCertificate({ ...agent, cert: join(root, 'nope.crt') }, { role: 'agent' }),
      refused(join(root, 'nope.crt'), /cannot read it/),
    );
  });
});

describe('requireRole', () => {
  // Which certificates each group of endpoints accepts (the servers' contract).
  const groups: { group: string; allowed: Role[] }[] = [
    { group: "agent's migration-peer endpoints", allowed: ['agent'] },
    { group: "agent's user endpoints", allowed: ['client', 'controller'] },
    { group: "controller's heartbeat endpoint", allowed: ['agent'] },
    { group: "controller's user endpoints", allowed: ['client'] },
  ];
  const certs = (): Record<Role, CertPaths> => ({ agent, controller, client: cli });

  for (const { group, allowed } of groups) {
    for (const role of ['agent', 'controller', 'client'] as Role[]) {
      const ok = allowed.includes(role);
      it(`${group} ${ok ? 'accept' : 'refuse'} a ${role} certificate`, async () => {
        const pem = await readFile(certs()[role].cert);
        if (ok) {
          assert.equal(requireRole(pem, allowed), role);
          assert.equal(
            requireRole({ raw: new X509Certificate(pem).raw } as tls.PeerCertificate, allowed),
            role,
          );
          return;
        }
        assert.throws(
          () => requireRole(pem, allowed),
          (e: unknown) =>
            e instanceof FerryError &&
            e.code === 'FERRY_E_AUTH_ROLE' &&
            e.status === 403 &&
            e.message.includes(`role ${role} `) &&
            e.message.includes(`allowed: ${allowed.join(', ')}`),
        );
      });
    }
  }

  it('refuses a certificate without a role, and a peer without a certificate', async () => {
    const caPem = await readFile(join(root, 'ca', 'ca.crt'));
    assert.throws(
      () => requireRole(caPem, ['agent']),
      (e: unknown) => e instanceof FerryError && e.code === 'FERRY_E_AUTH_ROLE' && /\(none\)/.test(e.message),
    );
    for (const none of [undefined, null, {} as tls.PeerCertificate])
      assert.throws(
        () => requireRole(none, ['agent']),
        (e: unknown) => e instanceof FerryError && e.code === 'FERRY_E_AUTH',
      );
  });
});

describe('mutual TLS', () => {
  let port = 0;
  let foreignPort = 0;
  let clientCertPort = 0;
  let expiredCli: CertPaths;

  before(async () => {
    port = await listen(tlsServerOptions(agent));
    foreignPort = await listen(tlsServerOptions(otherAgent));
    // A server (wrongly) using a client certificate: clients must refuse it (no serverAuth usage).
    clientCertPort = await listen(tlsServerOptions(cli));
    // Same CA, issued with a clock 40 days back for 30 days: expired.
    const past = new ClusterCA(join(root, 'ca'), { now: () => Date.now() - 40 * 86_400_000 });
    expiredCli = await past.issue('old-cli', { role: 'client', days: 30 });
  });

  it('accepts a client certificate from the cluster CA and names the peer and its role', async () => {
    assert.equal(await dial(port, tlsClientOptions(cli)), 'cli client');
  });

  it('accepts agent and controller certificates as client certificates', async () => {
    assert.equal(await dial(port, tlsClientOptions(agent)), 'node-1 agent');
    assert.equal(await dial(port, tlsClientOptions(controller)), 'controller controller');
  });

  it('refuses a client without a certificate', async () => {
    await assert.rejects(dial(port, { ca: tlsClientOptions(cli).ca }), refused);
  });

  it('refuses a client certificate from another CA', async () => {
    // (without the other CA's revocation list, which would have this client refuse the server first)
    const { key, cert } = tlsClientOptions(otherCli);
    const opts = { key, cert, ca: tlsClientOptions(cli).ca };
    await assert.rejects(dial(port, opts), refused);
  });

  it('refuses an expired client certificate', async () => {
    await assert.rejects(dial(port, tlsClientOptions(expiredCli)), refused);
  });

  it('the client refuses a server certificate from another CA', async () => {
    // Node's server sends its CA along with its certificate, hence usually SELF_SIGNED_CERT_IN_CHAIN; with the
    // cluster's revocation list, OpenSSL's last word is that it has no list of that other CA (UNABLE_TO_GET_CRL).
    await assert.rejects(dial(foreignPort, tlsClientOptions(cli)), (e: NodeJS.ErrnoException) =>
      ['SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_CRL'].includes(
        e.code ?? '',
      ),
    );
  });

  it('the client refuses a server certificate without serverAuth', async () => {
    await assert.rejects(dial(clientCertPort, tlsClientOptions(agent)), { code: 'INVALID_PURPOSE' });
  });

  it('servername checks the host name when dialling an address', async () => {
    assert.equal(await dial(port, { ...tlsClientOptions(cli), servername: 'node-1' }), 'cli client');
    await assert.rejects(dial(port, { ...tlsClientOptions(cli), servername: 'node-9' }), {
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
  });
});
