// Who may call the controller's API, through fastify's inject() with the caller's certificate given directly and
// a controller that only answers (the real handshake: test/integration/trust.test.ts).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { silentLogger } from '../core/log.ts';
import { ClusterCA } from '../runtime/pki.ts';
import type { Controller } from './controller.ts';
import { buildControllerApp } from './server.ts';

let dir = '';
let app: FastifyInstance;
let caller = '';
const certs: Record<string, string> = {};
const calls: string[] = [];

const controller = {
  isLeader: () => true,
  heartbeat: async (b: { host: string }) => {
    calls.push(`heartbeat ${b.host}`);
    return { ok: true };
  },
  summary: async () => ({ hosts: [] }),
  rebalance: async () => ({ plan: { moves: [] } }),
  drain: async () => ({ plan: { moves: [] } }),
  place: async () => 'a',
  history: async () => [],
} as unknown as Controller;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-controller-api-'));
  const ca = new ClusterCA(dir);
  for (const [name, role] of [
    ['a', 'agent'],
    ['controller', 'controller'],
    ['cli', 'client'],
  ] as const)
    certs[name] = readFileSync((await ca.issue(name, { role })).cert, 'utf8');
  app = buildControllerApp(controller, silentLogger(), { peerCertificate: () => certs[caller] });
  await app.ready();
});

after(async () => {
  await app.close();
  await rm(dir, { recursive: true, force: true });
});

const beat = (host: string) => ({
  host,
  address: '10.0.0.10',
  port: 7470,
  capacity: { cores: 1, memoryBytes: 1 << 30 },
  seq: 1,
  full: true,
  containers: [],
  removed: [],
});

test('users reach every endpoint but the heartbeat; agents only the heartbeat', async () => {
  const userRoutes: [string, string, unknown?][] = [
    ['GET', '/v1/health'],
    ['GET', '/v1/cluster'],
    ['POST', '/v1/rebalance', {}],
    ['POST', '/v1/drain', { host: 'a' }],
    ['POST', '/v1/place', { name: 'x' }],
    ['GET', '/v1/migrations'],
    ['GET', '/v1/batches/b1'],
  ];
  for (const [method, url, payload] of userRoutes) {
    for (const who of ['a', 'controller']) {
      caller = who;
      const r = await app.inject({ method: method as 'GET', url, ...(payload ? { payload } : {}) });
      assert.equal(r.statusCode, 403, `${who} ${method} ${url}: ${r.body}`);
      assert.equal(r.json().error.code, 'FERRY_E_AUTH_ROLE');
    }
    caller = 'cli';
    const r = await app.inject({ method: method as 'GET', url, ...(payload ? { payload } : {}) });
    assert.ok(!String(r.json()?.error?.code).startsWith('FERRY_E_AUTH'), `cli ${method} ${url}: ${r.body}`);
  }
  for (const who of ['cli', 'controller']) {
    caller = who;
    const r = await app.inject({ method: 'POST', url: '/v1/heartbeat', payload: beat('a') });
    assert.equal(r.statusCode, 403, r.body);
    assert.equal(r.json().error.code, 'FERRY_E_AUTH_ROLE');
  }
  caller = 'a';
  assert.equal(
    (await app.inject({ method: 'POST', url: '/v1/heartbeat', payload: beat('a') })).statusCode,
    200,
  );
  assert.deepEqual(calls, ['heartbeat a']);
});

test('an agent heartbeats for its own host only', async () => {
  caller = 'a';
  const r = await app.inject({ method: 'POST', url: '/v1/heartbeat', payload: beat('b') });
  assert.equal(r.statusCode, 403, r.body);
  assert.equal(r.json().error.code, 'FERRY_E_AUTH_PEER');
  assert.match(r.json().error.message, /host a cannot speak for host b/);
  assert.deepEqual(calls, ['heartbeat a']);
});
