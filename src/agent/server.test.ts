// The agent API's validation and error mapping, through fastify's inject() (no sockets, no runc).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { silentLogger } from '../core/log.ts';
import { ArchiveRestores } from '../host/archive-restore.ts';
import { Checkpoints } from '../host/checkpoints.ts';
import { ContainerHost } from '../host/containers.ts';
import { hostPaths } from '../host/paths.ts';
import { Uploads } from '../host/uploads.ts';
import { assessStrategies, type HostFacts } from '../migration/capabilities.ts';
import { IncomingMigrations } from '../migration/destination.ts';
import { MigrationSource } from '../migration/source.ts';
import type { NetworkLike } from '../network/identity.ts';
import { ClusterCA } from '../runtime/pki.ts';
import type { RuncLike } from '../runtime/runc.ts';
import { Reservations } from './reservations.ts';
import { buildAgentApp } from './server.ts';

const runc = {
  root: '/fake',
  state: async () => undefined,
  list: async () => [],
  destroy: async () => {},
} as unknown as RuncLike;
const network = { netnsPath: (n: string) => `/run/netns/${n}` } as unknown as NetworkLike;
const facts: HostFacts = {
  host: 'a',
  kernel: '6.18',
  criuVersion: '4.2.1',
  runcVersion: '1.1.5',
  criuCheck: { ok: true, message: '' },
  features: {},
  pipeMaxSize: 4 << 20,
  root: true,
};

let dir: string;
let app: FastifyInstance;
/** The same API with its callers checked: `caller` names the certificate the next request presents. */
let checked: FastifyInstance;
let caller = '';
const certs: Record<string, string> = {};
const PEERS = [{ name: 'b', address: '10.0.0.2', port: 7470 }];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ferry-api-'));
  const log = silentLogger();
  const host = new ContainerHost({
    hostName: 'a',
    paths: hostPaths(dir),
    runc,
    cgroupParent: '/t',
    network,
    log,
  });
  await host.init();
  const capabilities = async () => ({ facts, strategies: assessStrategies(facts) });
  const incoming = new IncomingMigrations(host, log);
  const versions = async () => ({ ferry: '0', criu: '4.2.1', runc: '1.1.5', kernel: '6' });
  const deps = {
    host,
    peers: PEERS,
    uploads: new Uploads(host.paths),
    reservations: new Reservations({
      host,
      arriving: (n: string) => incoming.isReserved(n),
      reservedAddresses: ['10.0.0.1'],
      peers: [],
      log,
    }),
    lan: { member: '10.0.0.1', prefixLen: 24 },
    checkpoints: new Checkpoints({ host, log, versions }),
    restores: new ArchiveRestores({ host, log, criuVersion: async () => '4.2.1' }),
    incoming,
    source: new MigrationSource({ host, log, capabilities }),
    capabilities,
    peerFor: () => {
      throw new Error('no peers in this test');
    },
    log,
    version: 'test',
  };
  app = buildAgentApp(deps);
  await app.ready();
  const ca = new ClusterCA(join(dir, 'pki'));
  await ca.ensure();
  for (const [name, role] of [
    ['b', 'agent'],
    ['z', 'agent'],
    ['controller', 'controller'],
    ['cli', 'client'],
  ] as const)
    certs[name] = readFileSync((await ca.issue(name, { role })).cert, 'utf8');
  checked = buildAgentApp(deps, { peerCertificate: () => certs[caller] });
  await checked.ready();
});

after(async () => {
  await app.close();
  await checked.close();
  rmSync(dir, { recursive: true, force: true });
});

test('health and capabilities answer', async () => {
  const h = await app.inject({ method: 'GET', url: '/v1/health' });
  assert.equal(h.statusCode, 200);
  assert.equal(h.json().host, 'a');
  const c = await app.inject({ method: 'GET', url: '/v1/capabilities' });
  assert.equal(c.json().strategies.cold.ok, true);
});

test('malformed bodies and parameters get 400 FERRY_E_INPUT_REQUEST with the field named', async () => {
  for (const [method, url, payload] of [
    ['POST', '/v1/containers', { name: 5 }],
    ['POST', '/v1/containers', { name: 'ok', command: [] }],
    ['POST', '/v1/containers', { name: 'ok', command: ['/bin/true'], surprise: true }],
    ['POST', '/v1/containers/ok/migrate', { to: { name: 'b', address: 'nope', port: 1 }, strategy: 'cold' }],
    ['POST', '/v1/containers/ok/migrate', { to: { name: 'b', address: '10.0.0.2', port: 7470 } }],
    ['POST', '/v1/incoming', { id: 'x', name: 'n', from: 'a', record: {} }],
  ] as const) {
    const r = await app.inject({ method, url, ...(payload ? { payload } : {}) });
    assert.equal(r.statusCode, 400, `${method} ${url}: ${r.body}`);
    assert.equal(r.json().error.code, 'FERRY_E_INPUT_REQUEST');
    assert.match(r.json().error.message, /^malformed request: /);
  }
});

test('a name with .. passes the pattern but not the name check: 400 FERRY_E_INPUT_NAME', async () => {
  const r = await app.inject({ method: 'GET', url: '/v1/containers/a..b' });
  assert.equal(r.statusCode, 400);
  assert.equal(r.json().error.code, 'FERRY_E_INPUT_NAME');
});

test('unknown things are 404 with their own codes; unknown endpoints too', async () => {
  const c = await app.inject({ method: 'GET', url: '/v1/containers/nosuch' });
  assert.equal(c.statusCode, 404);
  assert.equal(c.json().error.code, 'FERRY_E_CONTAINER_UNKNOWN');
  const m = await app.inject({ method: 'POST', url: '/v1/incoming/m0123456789ab/commit' });
  assert.equal(m.statusCode, 404);
  assert.equal(m.json().error.code, 'FERRY_E_MIGRATION_UNKNOWN');
  const e = await app.inject({ method: 'GET', url: '/v2/anything' });
  assert.equal(e.statusCode, 404);
  assert.equal(e.json().error.code, 'FERRY_E_INPUT_REQUEST');
});

test('migrating a container to its own host is refused before anything starts', async () => {
  const r = await app.inject({
    method: 'POST',
    url: '/v1/containers/nosuch/migrate',
    payload: { to: { name: 'a', address: '10.0.0.1', port: 7470 }, strategy: 'cold' },
  });
  assert.equal(r.statusCode, 404, 'an unknown container is named first');
  assert.equal(r.json().error.code, 'FERRY_E_CONTAINER_UNKNOWN');
});

test('a migration goes only to a host of the cluster, at its own address: FERRY_E_HOST_UNKNOWN', async () => {
  for (const [to, re] of [
    [{ name: 'c', address: '10.0.0.3', port: 7470 }, /host c is not a host of this cluster/],
    [
      { name: 'b', address: '10.0.0.9', port: 7470 },
      /host b is at 10\.0\.0\.2:7470 in this cluster, not 10\.0\.0\.9:7470/,
    ],
    [{ name: 'b', address: '10.0.0.2', port: 22 }, /not 10\.0\.0\.2:22/],
  ] as const) {
    // checked before the container: nothing about this host's containers is told for a bad destination
    const r = await app.inject({
      method: 'POST',
      url: '/v1/containers/nosuch/migrate',
      payload: { to, strategy: 'cold' },
    });
    assert.equal(r.statusCode, 404, r.body);
    assert.equal(r.json().error.code, 'FERRY_E_HOST_UNKNOWN');
    assert.match(r.json().error.message, re);
    assert.match(r.json().error.hint, /b \(10\.0\.0\.2:7470\)/);
  }
});

describe('who may call what', () => {
  const PEER = ['b'];
  const USERS = ['cli', 'controller'];
  // any agent of the CA, a host of the cluster or not, may read these facts
  const ALL = ['b', 'z', 'cli', 'controller'];
  const routes: [string, string, string[]][] = [
    ['GET', '/v1/health', ALL],
    ['GET', '/v1/capabilities', ALL],
    ['GET', '/v1/containers/nosuch', ALL],
    ['PUT', '/v1/bandwidth', PEER],
    ['GET', '/v1/containers', USERS],
    ['POST', '/v1/containers', USERS],
    ['DELETE', '/v1/containers/nosuch', USERS],
    ['PUT', '/v1/uploads/nosuch', USERS],
    ['POST', '/v1/containers/nosuch/migrate', USERS],
    ['POST', '/v1/incoming', PEER],
    ['PUT', '/v1/incoming/m1/images', PEER],
    ['PUT', '/v1/incoming/m1/range', PEER],
    ['PUT', '/v1/incoming/m1/blocks', PEER],
    ['POST', '/v1/incoming/m1/hold', PEER],
    ['POST', '/v1/incoming/m1/announce', PEER],
    ['POST', '/v1/incoming/m1/restore', PEER],
    ['GET', '/v1/incoming/m1/pages', PEER],
    ['POST', '/v1/incoming/m1/commit', PEER],
    ['DELETE', '/v1/incoming/m1', PEER],
  ];
  for (const [method, url, allowed] of routes)
    test(`${method} ${url}: ${allowed.join(', ')}`, async () => {
      for (const who of ['b', 'z', 'cli', 'controller']) {
        caller = who;
        const r = await checked.inject({ method: method as 'GET', url });
        const code = r.json()?.error?.code;
        if (allowed.includes(who))
          assert.ok(!String(code).startsWith('FERRY_E_AUTH'), `${who} ${method} ${url}: ${r.body}`);
        else {
          assert.equal(r.statusCode, 403, `${who} ${method} ${url}: ${r.body}`);
          // z is an agent of the CA, not a host of this cluster
          assert.equal(code, who === 'z' && allowed === PEER ? 'FERRY_E_AUTH_PEER' : 'FERRY_E_AUTH_ROLE');
        }
      }
    });

  test('a source speaks for itself only', async () => {
    caller = 'b';
    const r = await checked.inject({
      method: 'POST',
      url: '/v1/incoming',
      payload: {
        id: 'm0123456789ab',
        name: 'web',
        from: 'c',
        record: { name: 'web', createdAt: 'now', net: 'host', origin: { kind: 'run' } },
      },
    });
    assert.equal(r.statusCode, 403, r.body);
    assert.equal(r.json().error.code, 'FERRY_E_AUTH_PEER');
    assert.match(r.json().error.message, /host b cannot speak for host c/);
  });
});
