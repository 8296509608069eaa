// /metrics of real agents and a real controller, scraped over mutual TLS around real migrations (one by the CLI,
// its events streamed with --json --events; one by the controller's drain): promtool accepts every answer, and
// each counter went up by exactly one.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HttpsClient } from '../../src/api/https-client.ts';
import type { Endpoint } from '../../src/api/types.ts';
import { ClusterCA, tlsClientOptions } from '../../src/runtime/pki.ts';
import {
  assertPromtoolAccepts,
  promtoolMissing,
  type Sample,
  samples,
  value,
} from '../support/prometheus.ts';
import { controllerPlacement, counterCommand, skipUnlessReady, startBed, waitFor } from './helpers.ts';

test('metrics: a migration by the CLI and one by a drain each count once, on the source agent and the controller', async (t) => {
  if (!skipUnlessReady(t)) return;
  const noPromtool = promtoolMissing();
  if (noPromtool && process.env['CI']) assert.fail(noPromtool);
  if (noPromtool) return t.skip(noPromtool);
  const bed = await startBed(['a', 'b'], { controller: { rebalanceIntervalMs: 0, heartbeatMs: 500 } });
  const clients: HttpsClient[] = [];
  t.after(async () => {
    for (const c of clients) c.close();
    await bed.down();
  });
  const ca = new ClusterCA(`${bed.state.dir}/pki`);
  const client = (ep: Endpoint, who: string) => {
    const c = new HttpsClient(ep, tlsClientOptions(ca.paths(who)), { timeoutMs: 10_000 });
    clients.push(c);
    return c;
  };
  const endpoint = (host: string): Endpoint => {
    const h = bed.state.hosts.find((x) => x.name === host)!;
    return { name: h.name, address: h.address, port: 7470 };
  };
  const controller = { name: 'controller', address: bed.state.bridgeAddress, port: 7480 };
  // a scraper holds a user's certificate of the cluster CA (the testbed's CLI certificate here)
  const scrape = async (ep: Endpoint): Promise<Sample[]> => {
    const res = await client(ep, 'cli').open('GET', '/metrics');
    let text = '';
    for await (const chunk of res) text += chunk;
    assert.equal(res.statusCode, 200, text);
    assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    assertPromtoolAccepts(text);
    return samples(text);
  };
  const migrations = (s: Sample[], result: string) =>
    value(s, 'ferry_migrations_total', { strategy: 'cold', result });

  const run = await bed.cli([
    'run',
    '--host',
    'a',
    '--name',
    'svc',
    '--',
    ...counterCommand(`met-${bed.name}`),
  ]);
  assert.equal(run.code, 0, run.stderr);
  const a0 = await scrape(endpoint('a'));
  const b0 = await scrape(endpoint('b'));
  const c0 = await scrape(controller);
  assert.equal(value(a0, 'ferry_containers', { status: 'running' }), 1);
  assert.equal(value(c0, 'ferry_host_up', { host: 'a' }), 1);

  // a migration by the CLI, its events streamed (--json --events): counted once on its source, a
  const m = await bed.cli(['migrate', 'svc', '--to', 'b', '--strategy', 'cold', '--json', '--events']);
  assert.equal(m.code, 0, m.stdout);
  const events = m.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; phase?: string; state?: string; report?: unknown });
  assert.equal(events.at(-1)?.type, 'result', 'the report ends the stream');
  assert.deepEqual(
    events.filter((e) => e.type === 'phase' && e.state === 'end').map((e) => e.phase),
    ['plan', 'prepare', 'checkpoint', 'transfer', 'restore', 'confirm', 'cleanup'],
  );
  assert.ok(
    events.some((e) => e.type === 'progress' && e.phase === 'transfer'),
    'transfer progress',
  );
  const a1 = await scrape(endpoint('a'));
  assert.equal(migrations(a1, 'succeeded'), migrations(a0, 'succeeded') + 1);
  assert.equal(migrations(a1, 'rolled_back'), migrations(a0, 'rolled_back'));
  assert.equal(
    value(a1, 'ferry_migration_freeze_seconds_count', { strategy: 'cold' }),
    value(a0, 'ferry_migration_freeze_seconds_count', { strategy: 'cold' }) + 1,
  );
  const report = events.at(-1)!.report as { bytesSent: number; freezeMs: number };
  assert.equal(
    value(a1, 'ferry_migration_sent_bytes_total', { strategy: 'cold' }) -
      value(a0, 'ferry_migration_sent_bytes_total', { strategy: 'cold' }),
    report.bytesSent,
  );
  assert.equal(value(a1, 'ferry_migration_freeze_seconds_sum', { strategy: 'cold' }), report.freezeMs / 1000);
  assert.equal(value(a1, 'ferry_containers', { status: 'running' }), 0);
  const b1 = await scrape(endpoint('b'));
  assert.equal(value(b1, 'ferry_containers', { status: 'running' }), 1);
  // the destination ran none as a source
  assert.equal(migrations(b1, 'succeeded'), migrations(b0, 'succeeded'));

  // the controller sees it by the next heartbeat
  await waitFor(
    'the controller counts svc on b',
    async () => value(await scrape(controller), 'ferry_host_containers', { host: 'b' }) === 1 || undefined,
    15_000,
  );
  const c1 = await scrape(controller);
  for (const host of ['a', 'b']) {
    assert.equal(value(c1, 'ferry_host_up', { host }), 1);
    const age = value(c1, 'ferry_host_heartbeat_age_seconds', { host });
    assert.ok(age >= 0 && age < 60, `heartbeat age of ${host}: ${age}`);
  }
  assert.equal(value(c1, 'ferry_controller_leader'), 1);

  // a migration by the controller (drain b): once on its source, b, and once on the controller. (A heartbeat can
  // count svc on b before it reports it running: the drain would leave it in place as not migratable then. And a's
  // last heartbeat may still list svc: a holds a container of that name then, and the drain finds no room there.)
  await waitFor(
    'the controller sees svc running on b and gone from a',
    async () => {
      const where = await controllerPlacement(bed);
      return (where.includes('svc@b:running') && !where.some((w) => w.startsWith('svc@a:'))) || undefined;
    },
    15_000,
  );
  const drain = await bed.cli(['drain', 'b', '--json']);
  assert.equal(drain.code, 0, drain.stdout + drain.stderr);
  const b2 = await scrape(endpoint('b'));
  const moved = (s: Sample[]) =>
    ['cold', 'precopy', 'postcopy', 'hybrid'].reduce(
      (n, strategy) => n + value(s, 'ferry_migrations_total', { strategy, result: 'succeeded' }),
      0,
    );
  assert.equal(moved(b2), moved(b1) + 1, `b counted no move of the drain: ${drain.stdout}`);
  const c2 = await scrape(controller);
  assert.equal(
    value(c2, 'ferry_controller_migrations_total', { result: 'done' }),
    value(c0, 'ferry_controller_migrations_total', { result: 'done' }) + 1,
  );

  // an agent's certificate is no scraper's
  const res = await client(endpoint('b'), 'a').open('GET', '/metrics');
  let body = '';
  for await (const chunk of res) body += chunk;
  assert.equal(res.statusCode, 403);
  assert.equal(JSON.parse(body).error.code, 'FERRY_E_AUTH_ROLE');
});
