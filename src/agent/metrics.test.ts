// The agent's metrics as a scraper reads them: the text prom-client writes, checked by Prometheus' promtool (its
// parser and naming linter), after reports of each outcome; and GET /metrics behind the roles (client and the
// controller, not agents).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  assertPromtoolAccepts,
  hasFamily,
  promtoolMissing,
  samples,
  value,
} from '../../test/support/prometheus.ts';
import { buildApiServer } from '../api/http-server.ts';
import { registerMetricsRoute } from '../api/metrics-route.ts';
import type { MigrationReport } from '../api/types.ts';
import { silentLogger } from '../core/log.ts';
import { ClusterCA } from '../runtime/pki.ts';
import { AgentMetrics } from './metrics.ts';

function report(over: Partial<MigrationReport>): MigrationReport {
  return {
    ok: true,
    id: 'm000000000001',
    container: 'web',
    from: 'a',
    to: 'b',
    strategy: 'postcopy',
    phases: [],
    freezeMs: 42,
    rounds: [],
    bytesSent: 1000,
    totalMs: 1500,
    criu: {},
    ...over,
  };
}

const metrics = () =>
  new AgentMetrics({
    host: 'a',
    version: '9.9.9',
    containers: async () => [{ status: 'running' }, { status: 'running' }, { status: 'stopped' }],
    certificateExpires: new Date('2027-01-01T00:00:00Z'),
  });

/** promtool is Prometheus' own: on this project's CI machine it is always there (make setup). */
function skipWithoutPromtool(t: { skip(why: string): void }): boolean {
  const why = promtoolMissing();
  if (why && process.env['CI']) assert.fail(why);
  if (why) t.skip(why);
  return !why;
}

describe('agent metrics', () => {
  it('a successful migration: its counter by one, its freeze and duration in seconds, its bytes', async (t) => {
    if (!skipWithoutPromtool(t)) return;
    const m = metrics();
    const before = samples(await m.registry.metrics());
    assert.equal(value(before, 'ferry_migrations_total', { strategy: 'postcopy', result: 'succeeded' }), 0);
    m.observe(
      report({ postcopy: { lastPageMs: 3200, pageServer: '10.0.0.1:27001', bytes: 1 << 30, rate: 335e6 } }),
    );
    const text = await m.registry.metrics();
    assertPromtoolAccepts(text);
    const after = samples(text);
    assert.equal(
      value(after, 'ferry_migrations_total', { strategy: 'postcopy', result: 'succeeded', host: 'a' }),
      1,
    );
    assert.ok(hasFamily(text, 'ferry_migration_freeze_seconds', 'histogram'));
    assert.equal(value(after, 'ferry_migration_freeze_seconds_count', { strategy: 'postcopy' }), 1);
    assert.equal(value(after, 'ferry_migration_freeze_seconds_sum', { strategy: 'postcopy' }), 0.042);
    assert.equal(
      value(after, 'ferry_migration_freeze_seconds_bucket', { strategy: 'postcopy', le: '0.025' }),
      0,
    );
    assert.equal(
      value(after, 'ferry_migration_freeze_seconds_bucket', { strategy: 'postcopy', le: '0.05' }),
      1,
    );
    assert.equal(
      value(after, 'ferry_migration_duration_seconds_count', { strategy: 'postcopy', result: 'succeeded' }),
      1,
    );
    assert.equal(value(after, 'ferry_migration_sent_bytes_total', { strategy: 'postcopy' }), 1000);
    assert.ok(hasFamily(text, 'ferry_postcopy_window_seconds', 'histogram'));
    assert.equal(value(after, 'ferry_postcopy_window_seconds_sum', { strategy: 'postcopy' }), 3.2);
    assert.equal(
      value(after, 'ferry_postcopy_window_seconds_bucket', { strategy: 'postcopy', le: '2.5' }),
      0,
    );
    assert.equal(value(after, 'ferry_postcopy_window_seconds_bucket', { strategy: 'postcopy', le: '5' }), 1);
    assert.equal(value(after, 'ferry_containers', { status: 'running' }), 2);
    assert.equal(value(after, 'ferry_containers', { status: 'stopped' }), 1);
    assert.equal(value(after, 'ferry_certificate_expiry_timestamp_seconds'), 1798761600);
    assert.equal(value(after, 'ferry_build_info', { version: '9.9.9', role: 'agent' }), 1);
  });

  it('each outcome is counted as what it is; rounds and rollbacks too', async () => {
    const m = metrics();
    m.observe(
      report({
        ok: false,
        strategy: 'precopy',
        rounds: [
          { bytes: 10, ms: 1 },
          { bytes: 5, ms: 1 },
        ],
        error: { code: 'FERRY_E_RESTORE_FAILED', message: 'x', phase: 'restore' },
        rollback: { sourceRunning: true, destinationCleaned: true, action: 'thawed' },
      }),
    );
    m.observe(
      report({
        ok: false,
        strategy: 'postcopy',
        error: { code: 'FERRY_E_POSTCOPY_FAILED', message: 'x', phase: 'pages' },
      }),
    );
    m.observe(
      report({
        ok: false,
        strategy: 'cold',
        error: { code: 'FERRY_E_PLAN_STRATEGY', message: 'x', phase: 'plan' },
      }),
    );
    const text = await m.registry.metrics();
    const f = samples(text);
    assert.equal(value(f, 'ferry_migrations_total', { strategy: 'precopy', result: 'rolled_back' }), 1);
    assert.equal(value(f, 'ferry_migrations_total', { strategy: 'postcopy', result: 'lost' }), 1);
    assert.equal(value(f, 'ferry_migrations_total', { strategy: 'cold', result: 'refused' }), 1);
    assert.equal(value(f, 'ferry_migrations_total', { strategy: 'cold', result: 'succeeded' }), 0);
    assert.equal(value(f, 'ferry_migration_rounds_total', { strategy: 'precopy' }), 2);
    assert.equal(value(f, 'ferry_migration_rollbacks_total', { phase: 'restore', result: 'rolled_back' }), 1);
    // only successful migrations have a freeze worth a histogram
    assert.equal(value(f, 'ferry_migration_freeze_seconds_count', { strategy: 'precopy' }), 0);
    assert.equal(
      value(f, 'ferry_migration_duration_seconds_count', { strategy: 'postcopy', result: 'lost' }),
      1,
    );
  });
});

describe('GET /metrics', () => {
  let dir = '';
  const pem: Record<string, string> = {};
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ferry-metrics-'));
    const ca = new ClusterCA(dir);
    await ca.ensure();
    for (const [name, role] of [
      ['a', 'agent'],
      ['controller', 'controller'],
      ['prometheus', 'client'],
    ] as const)
      pem[name] = readFileSync((await ca.issue(name, { role })).cert, 'utf8');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('answers a client or the controller in the text format; refuses an agent and no certificate', async () => {
    const m = metrics();
    let caller: string | undefined;
    const app = buildApiServer({
      log: silentLogger(),
      peerCertificate: () => (caller ? pem[caller] : undefined),
    });
    registerMetricsRoute(app, m.registry);
    for (const who of ['prometheus', 'controller']) {
      caller = who;
      const r = await app.inject({ method: 'GET', url: '/metrics' });
      assert.equal(r.statusCode, 200, who);
      assert.match(r.headers['content-type'] as string, /^text\/plain; version=0\.0\.4/);
      assert.ok(hasFamily(r.body, 'ferry_migrations_total', 'counter'));
    }
    caller = 'a';
    const agent = await app.inject({ method: 'GET', url: '/metrics' });
    assert.equal(agent.statusCode, 403);
    assert.equal(agent.json().error.code, 'FERRY_E_AUTH_ROLE');
    caller = undefined;
    const none = await app.inject({ method: 'GET', url: '/metrics' });
    assert.equal(none.statusCode, 401);
    await app.close();
  });
});
