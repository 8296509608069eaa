// The controller's etcd store against real etcds over TLS, the ways docs/operations.md sets one up: client
// certificates (etcd's --client-cert-auth), etcd's users and passwords, and both at once (a password user, or the
// certificate's name as the user). The store and the leader election work through the controller's config; a
// missing client certificate, a server of another CA, a wrong password and a user without permission are refused
// with a message saying which.
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FerryError } from '../../core/errors.ts';
import { ClusterCA } from '../../runtime/pki.ts';
import { parseControllerConfig } from '../config.ts';
import { openStore } from '../main.ts';
import { EtcdClient } from './client.ts';
import { EtcdLeaderElection } from './leader.ts';

const missing =
  spawnSync('etcd', ['--version']).error || spawnSync('etcdctl', ['version']).error
    ? 'needs etcd and etcdctl (scripts/setup.sh installs etcd-server and etcd-client)'
    : undefined;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface RunningEtcd {
  endpoint: string;
  proc: ChildProcess;
  etcdctl: (...args: string[]) => string;
}

const etcdEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD')));

/** An etcd on free loopback ports, serving TLS with `server`'s certificate; client certificates required or not. */
async function startEtcd(
  dir: string,
  server: { cert: string; key: string; ca: string },
  client: { cert: string; key: string; ca: string },
  clientCertAuth: boolean,
): Promise<RunningEtcd> {
  const [cport, pport] = [await freePort(), await freePort()];
  const endpoint = `https://127.0.0.1:${cport}`;
  const peer = `http://127.0.0.1:${pport}`;
  const proc = spawn(
    'etcd',
    [
      '--name=ferry-tls',
      `--data-dir=${dir}`,
      `--listen-client-urls=${endpoint}`,
      `--advertise-client-urls=${endpoint}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=ferry-tls=${peer}`,
      `--cert-file=${server.cert}`,
      `--key-file=${server.key}`,
      // a CA for client certificates only where they are asked for (etcd asks for one whenever it has the CA)
      ...(clientCertAuth ? [`--trusted-ca-file=${server.ca}`, '--client-cert-auth'] : []),
      '--log-level=warn',
    ],
    { env: etcdEnv, stdio: 'ignore' },
  );
  const etcdctl = (...args: string[]) =>
    execFileSync(
      'etcdctl',
      [
        `--endpoints=${endpoint}`,
        `--cacert=${client.ca}`,
        `--cert=${client.cert}`,
        `--key=${client.key}`,
        ...args,
      ],
      { env: { ...etcdEnv, ETCDCTL_API: '3' }, encoding: 'utf8', timeout: 20_000, stdio: 'pipe' },
    );
  for (let t0 = Date.now(); ; ) {
    try {
      etcdctl('endpoint', 'health');
      break;
    } catch (err) {
      if (Date.now() - t0 > 30_000) {
        proc.kill('SIGKILL');
        throw err;
      }
    }
    await sleep(200);
  }
  return { endpoint, proc, etcdctl };
}

describe('etcd over TLS', { skip: missing && !process.env['CI'] ? missing : false }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-etcd-tls-'));
  const ca = new ClusterCA(join(dir, 'pki'));
  const pem = (f: string) => readFileSync(f);
  let tls: { ca: Buffer; cert: Buffer; key: Buffer };
  let ctlPaths: { ca: string; cert: string; key: string };
  /** --client-cert-auth: the controller's certificate is its credential. */
  let mtls: RunningEtcd | undefined;
  /** TLS and etcd's users: the controller logs in with a password. */
  let users: RunningEtcd | undefined;

  before(async () => {
    if (missing) assert.fail(`${missing}; CI is set, so this is an error`);
    await ca.ensure();
    const server = await ca.issue('etcd', { role: 'controller', ips: ['127.0.0.1'] });
    ctlPaths = await ca.issue('ctl', { role: 'controller' });
    tls = { ca: pem(ctlPaths.ca), cert: pem(ctlPaths.cert), key: pem(ctlPaths.key) };
    mtls = await startEtcd(join(dir, 'mtls'), server, ctlPaths, true);
    users = await startEtcd(join(dir, 'users'), server, ctlPaths, false);
    // etcd's authentication, as an operator turns it on: root, a ferry user allowed the ferry prefix
    users.etcdctl('user', 'add', 'root:rootpw');
    users.etcdctl('user', 'grant-role', 'root', 'root');
    users.etcdctl('role', 'add', 'ferry');
    users.etcdctl('role', 'grant-permission', 'ferry', '--prefix=true', 'readwrite', '/ferry/');
    users.etcdctl('user', 'add', 'ferry:s3cret');
    users.etcdctl('user', 'grant-role', 'ferry', 'ferry');
    users.etcdctl('auth', 'enable');
  });

  after(() => {
    mtls?.proc.kill('SIGKILL');
    users?.proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  /** The store and the election, opened from a controller config as `ferry controller` opens them. */
  async function throughConfig(store: Record<string, unknown>): Promise<void> {
    const cfg = parseControllerConfig({
      name: 'ctl',
      tls: ctlPaths,
      store: { kind: 'etcd', prefix: '/ferry/test/', leaderTtlSeconds: 2, ...store },
    });
    const opened = await openStore(cfg);
    try {
      await opened.store.setMeta('probe', 'over tls');
      assert.equal(await opened.store.getMeta('probe'), 'over tls');
      assert.ok(opened.election);
      await opened.election.campaign('ctl-1');
      assert.equal(opened.election.isLeader(), true);
      await opened.election.resign();
    } finally {
      await opened.store.close();
    }
  }

  it('client certificates: the store and the election work from the controller config', async () => {
    await throughConfig({ endpoints: [mtls!.endpoint], tls: ctlPaths });
  });

  it("etcd's users: the store and the election work with a password file", async () => {
    writeFileSync(join(dir, 'etcd-password'), 's3cret\n', { mode: 0o600 });
    await throughConfig({
      endpoint: users!.endpoint,
      tls: { ca: ctlPaths.ca },
      auth: { user: 'ferry', passwordFile: join(dir, 'etcd-password') },
    });
  });

  it('a follower takes over as soon as the leader resigns (it watches the key)', async () => {
    const opts = { endpoints: mtls!.endpoint, tls, prefix: '/ferry/w/' };
    const one = new EtcdLeaderElection({ ...opts, ttlSeconds: 30, retryMs: 60_000 });
    const two = new EtcdLeaderElection({ ...opts, ttlSeconds: 30, retryMs: 60_000 });
    await one.campaign('one');
    let twoLeads = false;
    void two.campaign('two').then(() => {
      twoLeads = true;
    });
    await sleep(1000);
    assert.equal(twoLeads, false, 'one leads, two waits');
    await one.resign();
    // retryMs is a minute and the lease 30 s: only the watch can wake two this soon
    for (let t0 = Date.now(); !twoLeads && Date.now() - t0 < 10_000; ) await sleep(50);
    assert.equal(twoLeads, true);
    await two.resign();
    await one.client.close();
    await two.client.close();
  });

  it('refused, saying which: no client certificate, an etcd of another CA, a wrong password', async () => {
    const refused = async (client: EtcdClient, re: RegExp, code = 'FERRY_E_AUTH') => {
      await assert.rejects(client.get('/ferry/x'), (e: FerryError) => {
        assert.equal(e.code, code, e.message);
        assert.match(`${e.message} (hint: ${e.hint})`, re);
        return true;
      });
      await client.close();
    };
    await refused(
      new EtcdClient({ endpoints: mtls!.endpoint, tls: { ca: tls.ca } }),
      /wants a client certificate .*TLS handshake failed: etcd sent the alert "bad certificate"/,
    );
    const other = new ClusterCA(join(dir, 'other'));
    await other.ensure();
    await refused(
      new EtcdClient({ endpoints: mtls!.endpoint, tls: { ...tls, ca: pem(other.caCert) } }),
      /TLS handshake failed: .*(unable to verify|self.signed|certificate)/i,
    );
    await refused(
      new EtcdClient({
        endpoints: users!.endpoint,
        tls: { ca: tls.ca },
        auth: { user: 'ferry', password: 'wrong' },
      }),
      /etcd refused user ferry: .*authentication failed/,
    );
  });

  it("client certificates and etcd's users at once: a password user, or the certificate's name as the user", async () => {
    // set up while etcd still takes every certificate of its CA (etcdctl's is the controller's, CN ctl)
    const ctl = mtls!.etcdctl;
    ctl('user', 'add', 'root:rootpw');
    ctl('user', 'grant-role', 'root', 'root');
    ctl('role', 'add', 'ferry');
    ctl('role', 'grant-permission', 'ferry', '--prefix=true', 'readwrite', '/ferry/');
    ctl('user', 'add', 'ferry:s3cret');
    ctl('user', 'grant-role', 'ferry', 'ferry');
    // the controller's certificate names the etcd user ctl, which has no password (etcd takes the CN)
    ctl('user', 'add', 'ctl', '--no-password');
    ctl('user', 'grant-role', 'ctl', 'ferry');
    ctl('user', 'add', 'nobody:nopw');
    ctl('auth', 'enable');
    writeFileSync(join(dir, 'ferry-password'), 's3cret\n', { mode: 0o600 });
    // both at once: TLS with the client certificate, and the user ferry's password
    await throughConfig({
      endpoints: [mtls!.endpoint],
      tls: ctlPaths,
      auth: { user: 'ferry', passwordFile: join(dir, 'ferry-password') },
    });
    // the certificate alone: etcd takes its name (CN ctl) as the user
    await throughConfig({ endpoints: [mtls!.endpoint], tls: ctlPaths });
    // a user without a role on the prefix, a wrong password: refused, saying which
    const refused = async (client: EtcdClient, re: RegExp) => {
      await assert.rejects(client.put('/ferry/x', 'y'), (e: FerryError) => {
        assert.equal(e.code, 'FERRY_E_AUTH', e.message);
        assert.match(`${e.message} (hint: ${e.hint})`, re);
        return true;
      });
      await client.close();
    };
    await refused(
      new EtcdClient({ endpoints: mtls!.endpoint, tls, auth: { user: 'nobody', password: 'nopw' } }),
      /etcd refused put to user nobody: .*permission denied.*grant the user a role/,
    );
    await refused(
      new EtcdClient({ endpoints: mtls!.endpoint, tls, auth: { user: 'ferry', password: 'wrong' } }),
      /etcd refused user ferry: .*authentication failed/,
    );
    // a certificate of etcd's CA whose name is no etcd user
    const stranger = await ca.issue('stranger', { role: 'controller' });
    await refused(
      new EtcdClient({
        endpoints: mtls!.endpoint,
        tls: { ca: tls.ca, cert: pem(stranger.cert), key: pem(stranger.key) },
      }),
      /etcd refused put to user stranger \(the client certificate's name\): etcdserver: permission denied/,
    );
  });
});
