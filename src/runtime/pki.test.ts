import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { FerryError } from '../core/errors.ts';
import { ProcessRunner } from './exec.ts';
import { type CertPaths, ClusterCA, tlsClientOptions, tlsServerOptions } from './pki.ts';

/** The CN of the peer's verified certificate; undefined if the peer presented none or it did not verify. */
function peerName(socket: TLSSocket): string | undefined {
  if (!socket.authorized) return undefined;
  const cn: unknown = socket.getPeerCertificate()?.subject?.CN;
  return typeof cn === 'string' && cn !== '' ? cn : undefined;
}

const OID_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const OID_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

let root = '';
let ca: ClusterCA;
let other: ClusterCA;
let host: CertPaths;
let cli: CertPaths;
let otherHost: CertPaths;
let otherCli: CertPaths;
const servers: https.Server[] = [];

function listen(opts: https.ServerOptions): Promise<number> {
  const server = https.createServer(opts, (req, res) => {
    res.end(peerName(req.socket as TLSSocket) ?? '<none>');
  });
  servers.push(server);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

function get(port: number, opts: https.RequestOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, path: '/', agent: false, ...opts }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

/** The server aborted the handshake: a TLS alert, or a reset (TLS 1.3 finishes the client's side first). */
function refused(e: NodeJS.ErrnoException): boolean {
  return /^ERR_SSL_|^ECONNRESET$|^EPIPE$/.test(e.code ?? '');
}

async function mode(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

async function x509(path: string): Promise<X509Certificate> {
  return new X509Certificate(await readFile(path));
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'ferry-pki-'));
  const runner = new ProcessRunner();
  ca = new ClusterCA(join(root, 'ca'), runner);
  other = new ClusterCA(join(root, 'other'), runner);
  await ca.ensure();
  [host, cli, otherHost, otherCli] = await Promise.all([
    ca.issue('node-1', { kind: 'host', ips: ['127.0.0.1'] }),
    ca.issue('cli', { kind: 'client' }),
    other.issue('node-1', { kind: 'host', ips: ['127.0.0.1'] }),
    other.issue('cli', { kind: 'client' }),
  ]);
});

after(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((resolve) => s.close(resolve));
  }
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
    assert.ok(c.validToDate.getTime() > Date.now() + 9 * 365 * 86400_000);
    assert.equal(await mode(join(root, 'ca', 'ca.key')), 0o600);
    assert.equal(await mode(join(root, 'ca')), 0o700);
  });

  it('ensure() is idempotent', async () => {
    const first = await readFile(join(root, 'ca', 'ca.crt'), 'utf8');
    await ca.ensure();
    await ca.ensure();
    assert.equal(await readFile(join(root, 'ca', 'ca.crt'), 'utf8'), first);
  });

  it('refuses to replace a CA whose key is missing', async () => {
    const lone = new ClusterCA(join(root, 'lone'), new ProcessRunner());
    await lone.ensure();
    await rm(join(root, 'lone', 'ca.key'));
    await assert.rejects(
      lone.ensure(),
      (e: unknown) => e instanceof FerryError && e.code === 'FERRY_E_INTERNAL',
    );
  });

  it('issues host certificates with SANs and both extended key usages', async () => {
    assert.deepEqual(host, {
      cert: join(root, 'ca', 'node-1.crt'),
      key: join(root, 'ca', 'node-1.key'),
      ca: join(root, 'ca', 'ca.crt'),
    });
    const c = await x509(host.cert);
    assert.equal(c.subject, 'CN=node-1');
    assert.equal(c.ca, false);
    assert.ok(c.checkIssued(await x509(host.ca)));
    assert.equal(c.checkIP('127.0.0.1'), '127.0.0.1');
    assert.equal(c.checkHost('node-1'), 'node-1');
    assert.deepEqual([...(c.keyUsage ?? [])].sort(), [OID_SERVER_AUTH, OID_CLIENT_AUTH]);
    assert.equal(await mode(host.key), 0o600);
  });

  it('issues client certificates with clientAuth only', async () => {
    const c = await x509(cli.cert);
    assert.equal(c.subject, 'CN=cli');
    assert.equal(c.subjectAltName, undefined);
    assert.deepEqual(c.keyUsage, [OID_CLIENT_AUTH]);
    assert.equal(await mode(cli.key), 0o600);
  });

  it('keeps a fitting certificate and reissues when the request changes', async () => {
    const a = await ca.issue('node-2', { kind: 'host', ips: ['10.0.0.2'], dns: ['node-2.example'] });
    const pem1 = await readFile(a.cert, 'utf8');
    await ca.issue('node-2', { kind: 'host', ips: ['10.0.0.2'] });
    assert.equal(await readFile(a.cert, 'utf8'), pem1, 'same request: kept');

    await ca.issue('node-2', { kind: 'host', ips: ['10.0.0.2', '::1'] });
    const pem2 = await readFile(a.cert, 'utf8');
    assert.notEqual(pem2, pem1, 'new IP: reissued');
    const c = await x509(a.cert);
    assert.ok(c.checkIP('::1'));
    assert.ok(c.checkIP('10.0.0.2'));

    await ca.issue('node-2', { kind: 'host', ips: ['::1'], force: true });
    assert.notEqual(await readFile(a.cert, 'utf8'), pem2, 'force: reissued');

    await ca.issue('node-2', { kind: 'client' });
    assert.deepEqual((await x509(a.cert)).keyUsage, [OID_CLIENT_AUTH], 'kind change: reissued');
  });

  it('serializes concurrent issues of one name (key matches cert)', async () => {
    const ps = await Promise.all(
      [1, 2, 3].map((i) => ca.issue('busy', { kind: 'host', ips: [`10.0.1.${i}`], force: true })),
    );
    const p = ps[0]!;
    assert.ok((await x509(p.cert)).checkPrivateKey(createPrivateKey(await readFile(p.key))));
  });

  it('rejects bad names and arguments', async () => {
    const code = (c: string) => (e: unknown) => e instanceof FerryError && e.code === c;
    await assert.rejects(ca.issue('../x', { kind: 'client' }), code('FERRY_E_INPUT_NAME'));
    await assert.rejects(ca.issue('ca', { kind: 'client' }), code('FERRY_E_INPUT_NAME'));
    await assert.rejects(ca.issue('h', { kind: 'host', ips: ['300.1.1.1'] }), code('FERRY_E_INPUT_ARGS'));
    await assert.rejects(ca.issue('h', { kind: 'host', dns: ['a\nb'] }), code('FERRY_E_INPUT_ARGS'));
    await assert.rejects(ca.issue('h', { kind: 'host', dns: ['a,IP:1.2.3.4'] }), code('FERRY_E_INPUT_ARGS'));
    await assert.rejects(ca.issue('h', { kind: 'client', ips: ['1.2.3.4'] }), code('FERRY_E_INPUT_ARGS'));
  });
});

describe('mutual TLS', () => {
  let port = 0;
  let foreignPort = 0;
  let clientCertPort = 0;

  before(async () => {
    port = await listen(tlsServerOptions(host));
    foreignPort = await listen(tlsServerOptions(otherHost));
    // A server (wrongly) using a client certificate: clients must refuse it (no serverAuth usage).
    clientCertPort = await listen(tlsServerOptions(cli));
  });

  it('accepts a client certificate from the cluster CA and names the peer', async () => {
    assert.equal(await get(port, tlsClientOptions(cli)), 'cli');
  });

  it('accepts a host certificate as a client certificate', async () => {
    assert.equal(await get(port, tlsClientOptions(host)), 'node-1');
  });

  it('refuses a client without a certificate', async () => {
    const { ca: caPem } = tlsClientOptions(cli);
    await assert.rejects(get(port, { ca: caPem }), refused);
  });

  it('refuses a client certificate from another CA', async () => {
    const opts = { ...tlsClientOptions(otherCli), ca: tlsClientOptions(cli).ca };
    await assert.rejects(get(port, opts), refused);
  });

  it('the client refuses a server certificate from another CA', async () => {
    // Node's server sends its CA along with its certificate, hence usually SELF_SIGNED_CERT_IN_CHAIN.
    await assert.rejects(get(foreignPort, tlsClientOptions(cli)), (e: NodeJS.ErrnoException) =>
      ['SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'].includes(e.code ?? ''),
    );
  });

  it('the client refuses a server certificate without serverAuth', async () => {
    await assert.rejects(get(clientCertPort, tlsClientOptions(host)), { code: 'INVALID_PURPOSE' });
  });

  it('servername checks the host name when dialling an address', async () => {
    assert.equal(await get(port, { ...tlsClientOptions(cli), servername: 'node-1' }), 'cli');
    await assert.rejects(get(port, { ...tlsClientOptions(cli), servername: 'node-9' }), {
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
  });
});
