// The agent API's validation and error mapping, through fastify's inject() (no sockets, no runc).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { silentLogger } from '../core/log.ts';
import { ArchiveRestores } from '../host/archive-restore.ts';
import { Checkpoints } from '../host/checkpoints.ts';
import { ContainerHost } from '../host/containers.ts';
import { hostPaths } from '../host/paths.ts';
import { assessStrategies, type HostFacts } from '../migration/capabilities.ts';
import { IncomingMigrations } from '../migration/destination.ts';
import { MigrationSource } from '../migration/source.ts';
import type { NetworkLike } from '../network/identity.ts';
import type { RuncLike } from '../runtime/runc.ts';
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
  const versions = async () => ({ ferry: '0', criu: '4.2.1', runc: '1.1.5', kernel: '6' });
  app = buildAgentApp({
    host,
    checkpoints: new Checkpoints({ host, log, versions }),
    restores: new ArchiveRestores({ host, log, criuVersion: async () => '4.2.1' }),
    incoming: new IncomingMigrations(host, log),
    source: new MigrationSource({ host, log, capabilities }),
    capabilities,
    peerFor: () => {
      throw new Error('no peers in this test');
    },
    log,
    version: 'test',
  });
  await app.ready();
});

after(async () => {
  await app.close();
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
