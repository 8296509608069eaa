// Who may call what, over real mutual TLS against a testbed's agents and controller: each certificate role gets
// only its endpoints, a source is a known peer, a destination a host of the cluster, and a certificate that is
// expired, not yet valid, of another CA, of the wrong usage or replaced by `ferry ca rotate` is refused by both
// the agent and the controller with its documented code, naming whose certificate and why; a daemon whose own
// certificate does not fit refuses to start, naming the file. (The caller's side of a server's bad certificate:
// src/api/certificate-refusals.test.ts.)
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { HttpsClient } from '../../src/api/https-client.ts';
import type { ErrorCode } from '../../src/core/errors.ts';
import { type CertPaths, ClusterCA, tlsClientOptions } from '../../src/runtime/pki.ts';
import { issueOdd } from '../support/odd-certificates.ts';
import { hostDir, MAIN, skipUnlessReady, startBed, waitFor } from './helpers.ts';

const DAY = 86_400_000;

test('roles: agents, users and the controller each reach only their endpoints; bad certificates are refused with their code', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await startBed(['a', 'b'], { controller: { rebalanceIntervalMs: 0 } });
  const otherDir = mkdtempSync(join(tmpdir(), 'ferry-other-ca-'));
  const clients: HttpsClient[] = [];
  t.after(async () => {
    for (const c of clients) c.close();
    rmSync(otherDir, { recursive: true, force: true });
    await bed.down();
  });
  const [a, b] = bed.state.hosts;
  assert.ok(a && b);
  const pki = join(bed.state.dir, 'pki');
  const ca = new ClusterCA(pki);
  const agentA = ca.paths('a');
  const agentB = ca.paths('b');
  const cli = ca.paths('cli');
  const ctl = ca.paths('controller');
  // an agent of this CA that is not a host of the cluster
  const stranger = await ca.issue('z', { role: 'agent', ips: ['10.0.0.99'] });
  const expired = await new ClusterCA(pki, { now: () => Date.now() - 10 * DAY }).issue('old', {
    role: 'client',
    days: 1,
  });
  const other = new ClusterCA(otherDir);
  // a foreign certificate that trusts this cluster's CA, as an intruder who knows it would
  const foreign = { ...(await other.issue('cli', { role: 'client' })), ca: cli.ca };

  const agentApi = (host: 'a' | 'b', certs: CertPaths) => {
    const h = host === 'a' ? a : b;
    const c = new HttpsClient({ name: h.name, address: h.address, port: 7470 }, tlsClientOptions(certs), {
      timeoutMs: 10_000,
    });
    clients.push(c);
    return c;
  };
  const controllerApi = (certs: CertPaths) => {
    const ep = { name: 'controller', address: bed.state.bridgeAddress, port: 7480 };
    const c = new HttpsClient(ep, tlsClientOptions(certs), { timeoutMs: 10_000 });
    clients.push(c);
    return c;
  };
  const refused = async (p: Promise<unknown>, code: ErrorCode, re: RegExp) => {
    await assert.rejects(p, (err: Error & { code?: string }) => {
      assert.equal(err.code, code, err.message);
      assert.match(err.message, re);
      return true;
    });
  };

  // an agent's certificate cannot act as a user: not on another agent, not on the controller
  const fromA = agentApi('b', agentA);
  await refused(fromA.request('GET', '/v1/containers'), 'FERRY_E_AUTH_ROLE', /role agent is not allowed/);
  await refused(
    fromA.request('POST', '/v1/containers', { json: { name: 'x', command: ['/bin/true'] } }),
    'FERRY_E_AUTH_ROLE',
    /allowed: client, controller/,
  );
  await refused(
    fromA.request('POST', '/v1/containers/x/migrate', {
      json: { to: { name: 'a', address: a.address, port: 7470 } },
    }),
    'FERRY_E_AUTH_ROLE',
    /role agent/,
  );
  await refused(controllerApi(agentA).request('GET', '/v1/cluster'), 'FERRY_E_AUTH_ROLE', /allowed: client$/);
  // what a peer's plan phase reads stays open to it
  assert.equal((await fromA.request<{ host: string }>('GET', '/v1/health')).host, 'b');

  // a user's (or the controller's) certificate cannot play a source agent
  for (const certs of [cli, ctl]) {
    const api = agentApi('a', certs);
    await refused(
      api.request('POST', '/v1/incoming', {
        json: { id: 'm0123456789ab', name: 'x', from: 'b', record: {} },
      }),
      'FERRY_E_AUTH_ROLE',
      /allowed: agent$/,
    );
    await refused(
      api.request('PUT', '/v1/incoming/m0123456789ab/range?file=x'),
      'FERRY_E_AUTH_ROLE',
      /allowed: agent$/,
    );
    await refused(
      api.request('GET', '/v1/incoming/m0123456789ab/pages'),
      'FERRY_E_AUTH_ROLE',
      /allowed: agent$/,
    );
    await refused(api.request('PUT', '/v1/bandwidth'), 'FERRY_E_AUTH_ROLE', /allowed: agent$/);
  }
  // nor heartbeat for a host
  const beat = (host: string) => ({
    host,
    address: a.address,
    port: 7470,
    capacity: { cores: 1, memoryBytes: 1 << 30 },
    seq: 1,
    full: true,
    containers: [],
    removed: [],
  });
  await refused(
    controllerApi(cli).request('POST', '/v1/heartbeat', { json: beat('a') }),
    'FERRY_E_AUTH_ROLE',
    /allowed: agent$/,
  );
  // an agent heartbeats for itself only
  await refused(
    controllerApi(agentA).request('POST', '/v1/heartbeat', { json: beat('b') }),
    'FERRY_E_AUTH_PEER',
    /host a cannot speak for host b/,
  );
  // an agent of this CA that is not a host of the cluster is no source for a migration
  await refused(
    agentApi('a', stranger).request('POST', '/v1/incoming/m0123456789ab/commit'),
    'FERRY_E_AUTH_PEER',
    /host z is not a known peer/,
  );
  // a known peer is let through (and answers as the destination would: no such migration)
  await refused(
    agentApi('a', agentB).request('POST', '/v1/incoming/m0123456789ab/commit'),
    'FERRY_E_MIGRATION_UNKNOWN',
    /m0123456789ab/,
  );

  // a migration goes to a host of the cluster at its own address, nowhere else
  const user = agentApi('a', cli);
  await refused(
    user.request('POST', '/v1/containers/web/migrate', {
      json: { to: { name: 'b', address: '10.0.0.99', port: 7470 }, strategy: 'cold' },
    }),
    'FERRY_E_HOST_UNKNOWN',
    new RegExp(
      `host b is at ${b.address.replaceAll('.', '\\.')}:7470 in this cluster, not 10\\.0\\.0\\.99:7470`,
    ),
  );
  await refused(
    user.request('POST', '/v1/containers/web/migrate', {
      json: { to: { name: 'elsewhere', address: '10.0.0.99', port: 7470 }, strategy: 'cold' },
    }),
    'FERRY_E_HOST_UNKNOWN',
    /host elsewhere is not a host of this cluster/,
  );
  // the right certificate for the right endpoint goes through
  assert.deepEqual(await user.request('GET', '/v1/containers'), []);
  assert.equal((await controllerApi(cli).request<{ ok: boolean }>('GET', '/v1/health')).ok, true);

  // expired, foreign or missing certificates: refused before any route, the reason named
  for (const [host, api] of [
    ['agent', agentApi('a', expired)],
    ['controller', controllerApi(expired)],
  ] as const)
    await refused(
      api.request('GET', '/v1/health'),
      'FERRY_E_AUTH',
      /the certificate of old \(from [\d.]+\) has expired \(CERT_HAS_EXPIRED\)/,
    ).catch((err: Error) => assert.fail(`${host}: ${err.message}`));
  await refused(
    agentApi('a', foreign).request('GET', '/v1/containers'),
    'FERRY_E_AUTH',
    /host a refused this connection: the certificate of cli \(from [\d.]+\) is not signed by this cluster's CA/,
  );
  await refused(
    controllerApi(foreign).request('POST', '/v1/heartbeat', { json: beat('a') }),
    'FERRY_E_AUTH',
    /not signed by this cluster's CA/,
  );
  const noCert = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = https.request(
      { host: a.address, port: 7470, path: '/v1/containers', ca: readFileSync(cli.ca), servername: 'a' },
      (res) => {
        let body = '';
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
  assert.equal(noCert.status, 401);
  assert.equal(JSON.parse(noCert.body).error.code, 'FERRY_E_AUTH');

  // and the other way: a server this cluster's CA did not sign is not taken for a host
  const trustsOther = new HttpsClient(
    { name: 'a', address: a.address, port: 7470 },
    tlsClientOptions({ ...cli, ca: join(otherDir, 'ca.crt') }),
  );
  clients.push(trustsOther);
  await refused(
    trustsOther.request('GET', '/v1/health'),
    'FERRY_E_AUTH',
    /host a \([\d.]+:7470\) presented a certificate that is not signed by this cluster's CA/,
  );

  // the CLI itself, with an expired certificate in its cluster file: one line naming the host that refused it and why
  const staleCluster = join(otherDir, 'cluster.json');
  writeFileSync(
    staleCluster,
    JSON.stringify({ ...JSON.parse(readFileSync(bed.state.clusterFile, 'utf8')), tls: expired }),
  );
  for (const args of [['cluster'], ['ps', '--host', 'a']]) {
    const r = await bed.cli(['--cluster', staleCluster, ...args]);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.match(
      r.stderr,
      /FERRY_E_AUTH.*host (controller|a) refused this connection: the certificate of old \(from [\d.]+\) has expired \(CERT_HAS_EXPIRED\)/,
      args.join(' '),
    );
  }

  // every other bad certificate, on both daemons, from each kind of caller: a user (the CLI), an agent (to its
  // peer, to the controller) and the controller (to an agent)
  const now = Date.now();
  const notYet = await new ClusterCA(pki, { now: () => now + 10 * DAY }).issue('early', { role: 'client' });
  const odd = (name: string, o: Parameters<typeof issueOdd>[3]) => issueOdd(pki, otherDir, name, o);
  const valid = { notBefore: new Date(now - DAY), notAfter: new Date(now + DAY) };
  const serverOnly = await odd('srv-only', { role: 'client', usages: ['serverAuth'], ...valid });
  const expiredAgent = await odd('b', {
    role: 'agent',
    usages: ['serverAuth', 'clientAuth'],
    notBefore: new Date(now - 10 * DAY),
    notAfter: new Date(now - DAY),
  });
  const serverOnlyController = await odd('controller', {
    role: 'controller',
    usages: ['serverAuth'],
    ...valid,
  });
  const cases: [string, HttpsClient, string, RegExp][] = [
    [
      'a user, not yet valid, to an agent',
      agentApi('a', notYet),
      '/v1/health',
      /of early .*is not valid yet/,
    ],
    [
      'a user, not yet valid, to the controller',
      controllerApi(notYet),
      '/v1/health',
      /of early .*is not valid yet/,
    ],
    ['a server-only certificate to an agent', agentApi('a', serverOnly), '/v1/health', /not for TLS clients/],
    [
      'a server-only certificate to the controller',
      controllerApi(serverOnly),
      '/v1/health',
      /not for TLS clients/,
    ],
    ['an expired agent to its peer', agentApi('a', expiredAgent), '/v1/health', /of b .*has expired/],
    [
      'an expired agent to the controller',
      controllerApi(expiredAgent),
      '/v1/heartbeat',
      /of b .*has expired/,
    ],
    [
      'a server-only controller to an agent',
      agentApi('a', serverOnlyController),
      '/v1/containers',
      /of controller .*not for TLS clients \(its extended key usage lacks clientAuth\) \(INVALID_PURPOSE\)/,
    ],
  ];
  for (const [what, api, path, re] of cases)
    await refused(
      api.request(
        path === '/v1/heartbeat' ? 'POST' : 'GET',
        path,
        path === '/v1/heartbeat' ? { json: beat('b') } : {},
      ),
      'FERRY_E_AUTH',
      re,
    ).catch((err: Error) => assert.fail(`${what}: ${err.message}`));

  // revoked by rotation: copies of a user's and an agent's certificates from before `ferry ca rotate` stop working
  // on both daemons once they see the CA's new revocation list (they follow it without a restart)
  const keep = async (name: string, paths: CertPaths) => {
    const copy = { ...paths, cert: join(otherDir, `${name}.crt`), key: join(otherDir, `${name}.key`) };
    copyFileSync(paths.cert, copy.cert);
    copyFileSync(paths.key, copy.key);
    return copy;
  };
  const rotated = await ca.issue('leaver', { role: 'client' });
  const before = await keep('leaver', rotated);
  const agentBefore = await keep('z', stranger);
  assert.deepEqual(await agentApi('a', before).request('GET', '/v1/containers'), []);
  assert.equal((await agentApi('a', agentBefore).request<{ host: string }>('GET', '/v1/health')).host, 'a');
  for (const who of [
    ['--user', 'leaver'],
    ['--host', 'z'],
  ]) {
    const rot = await bed.cli(['ca', 'rotate', pki, ...who]);
    assert.equal(rot.code, 0, rot.stderr);
    assert.match(rot.stdout, /revoked the one it replaced \(serial [0-9A-F]+\) in .*ca\.crl/);
  }
  const revoked: [string, () => Promise<unknown>, string][] = [
    ['a user to an agent', () => agentApi('a', before).request('GET', '/v1/health'), 'leaver'],
    ['a user to the controller', () => controllerApi(before).request('GET', '/v1/health'), 'leaver'],
    ['an agent to its peer', () => agentApi('a', agentBefore).request('GET', '/v1/health'), 'z'],
    [
      'an agent to the controller',
      () => controllerApi(agentBefore).request('POST', '/v1/heartbeat', { json: beat('z') }),
      'z',
    ],
  ];
  for (const [what, call, name] of revoked) {
    const err = await waitFor(
      `${what} refused after the rotation`,
      () =>
        call().then(
          () => undefined,
          (e: Error) => e,
        ),
      20_000,
    );
    assert.match(
      err.message,
      new RegExp(
        `the certificate of ${name} \\(from [\\d.]+\\) was revoked \\(ferry ca rotate or issue replaced it\\) \\(CERT_REVOKED\\)`,
      ),
      what,
    );
  }
  assert.equal((await controllerApi(rotated).request<{ ok: boolean }>('GET', '/v1/health')).ok, true);

  // a daemon whose own certificate does not fit refuses to start, naming the file, and starts nothing
  const stateDir = mkdtempSync(join(tmpdir(), 'ferry-refused-state-'));
  t.after(() => rmSync(stateDir, { recursive: true, force: true }));
  const agentCfg = JSON.parse(readFileSync(join(hostDir(bed, 'a'), 'agent.json'), 'utf8'));
  const controllerCfg = JSON.parse(
    readFileSync(join(bed.state.dir, 'controller', 'controller.json'), 'utf8'),
  );
  const starts: [string, string, object, RegExp][] = [
    [
      'agent',
      'a key of another certificate',
      {
        ...agentCfg,
        listen: { address: '127.0.0.1', port: 7499 },
        stateDir,
        tls: { ...agentA, key: cli.key },
      },
      new RegExp(`${cli.key.replaceAll('.', '\\.')}: is not the key of`),
    ],
    [
      'controller',
      'a certificate of another CA',
      {
        ...controllerCfg,
        listen: { address: '127.0.0.1', port: 7498 },
        store: { kind: 'sqlite', path: join(stateDir, 'state.db') },
        tls: { ...(await other.issue('controller', { role: 'controller' })), ca: ctl.ca },
      },
      /controller\.crt: is not signed by the CA .*ca\.crt/,
    ],
  ];
  for (const [daemon, what, cfg, re] of starts) {
    const file = join(stateDir, `${daemon}.json`);
    writeFileSync(file, JSON.stringify(cfg), { mode: 0o600 });
    const r = spawnSync(process.execPath, ['--no-warnings', MAIN, daemon, '--config', file], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.status, 2, `${daemon} with ${what}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, re, `${daemon} with ${what}`);
  }
  assert.deepEqual(
    readdirSync(stateDir).filter((f) => !f.endsWith('.json')),
    [],
    'nothing started',
  );
  assert.ok(!existsSync(join(stateDir, 'state.db')));

  // every agent tells when its certificate expires (90 days for an agent)
  const hosts = await bed.cli(['hosts', '--json']);
  assert.equal(hosts.code, 0, hosts.stderr);
  for (const h of JSON.parse(hosts.stdout) as { certificateExpires?: string }[]) {
    const left = Date.parse(h.certificateExpires ?? '') - Date.now();
    assert.ok(left > 89 * DAY && left <= 90 * DAY, JSON.stringify(h));
  }

  // after all that, a migration between the two known peers still works
  const run = await bed.cli(['run', '--host', 'a', '--name', 'web', '--', '/bin/busybox', 'sleep', '600']);
  assert.equal(run.code, 0, run.stderr);
  const mig = await bed.cli(['migrate', 'web', '--to', 'b', '--strategy', 'cold', '--json']);
  assert.equal(mig.code, 0, mig.stdout + mig.stderr);
  const rm = await bed.cli(['rm', 'web']);
  assert.equal(rm.code, 0, rm.stderr);
});
