// The dashboard's doors, through fastify's inject() and a controller that only records what it is asked: no
// session no data, a login token works once and only for five minutes, and a state-changing call needs the
// session's CSRF token and this origin (the browser's view of the same: test/integration/dashboard.test.ts).
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { get, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { silentLogger } from '../../core/log.ts';
import type { Controller } from '../controller.ts';
import type { DashboardAssets } from './assets.ts';
import { buildDashboardApp } from './server.ts';
import { DashboardLogins, LOGIN_TOKEN_TTL_MS } from './sessions.ts';

function fixture(o: { history?: () => Promise<unknown[]> } = {}) {
  let now = 1_000_000;
  const calls: string[] = [];
  const controller = Object.assign(new EventEmitter(), {
    summary: async () => ({ hosts: [] }),
    history: o.history ?? (async () => []),
    move: async (b: { container: string; to: string }) => {
      calls.push(`move ${b.container} ${b.to}`);
      return { id: 'c1', batch: 'move-00000000' };
    },
    rebalance: async (b: { dryRun?: boolean }) => {
      calls.push(`rebalance ${b.dryRun === true}`);
      return { plan: { moves: [], before: {}, after: {}, notes: [] } };
    },
    drain: async (h: string) => {
      calls.push(`drain ${h}`);
      return { plan: { moves: [], before: {}, after: {}, notes: [] } };
    },
  }) as unknown as Controller;
  const logins = new DashboardLogins({ now: () => now });
  const assets = {
    get: async () => ({ body: Buffer.from('x'), type: 'text/javascript' }),
  } as unknown as DashboardAssets;
  const app = buildDashboardApp({
    controller,
    agents: {
      capabilities: async () => {
        throw new Error('not here');
      },
      processes: async () => {
        throw new Error('not here');
      },
    },
    logins,
    assets,
    log: silentLogger(),
  });
  const advance = (ms: number) => {
    now += ms;
  };
  const controllerEmit = (e: unknown) => controller.emit('event', e);
  return { app, logins, calls, advance, controllerEmit };
}

async function login(f: ReturnType<typeof fixture>): Promise<{ cookie: string; csrf: string }> {
  const { token } = f.logins.issueToken();
  const r = await f.app.inject({ method: 'GET', url: `/login?token=${token}` });
  assert.equal(r.statusCode, 303);
  const set = String(r.headers['set-cookie']);
  const cookie = set.split(';')[0] ?? '';
  const page = await f.app.inject({ method: 'GET', url: '/', headers: { cookie } });
  const csrf = /name="ferry-csrf" content="([^"]+)"/.exec(page.body)?.[1] ?? '';
  return { cookie, csrf };
}

const HOST = 'dash.example:7481';

test('dashboard: nothing without a session; the page tells how to log in', async () => {
  const f = fixture();
  const page = await f.app.inject({ method: 'GET', url: '/' });
  assert.equal(page.statusCode, 401);
  assert.match(page.body, /ferry dashboard/);
  for (const url of ['/api/cluster', '/api/history', '/api/events', '/assets/app.js']) {
    const r = await f.app.inject({ method: 'GET', url });
    assert.equal(r.statusCode, 401, url);
  }
  const api = await f.app.inject({
    method: 'GET',
    url: '/api/cluster',
    headers: { cookie: 'ferry_session=forged' },
  });
  assert.equal(api.json().error.code, 'FERRY_E_AUTH');
});

test('dashboard: a login token becomes an HttpOnly, Secure, SameSite=Strict session once; a used or old token is refused', async () => {
  const f = fixture();
  const { token } = f.logins.issueToken();
  const r = await f.app.inject({ method: 'GET', url: `/login?token=${token}` });
  assert.equal(r.statusCode, 303);
  assert.equal(r.headers.location, '/');
  const set = String(r.headers['set-cookie']);
  for (const attr of ['HttpOnly', 'Secure', 'SameSite=Strict', 'Path=/']) assert.ok(set.includes(attr), set);
  assert.equal(r.headers['referrer-policy'], 'no-referrer');
  const again = await f.app.inject({ method: 'GET', url: `/login?token=${token}` });
  assert.equal(again.statusCode, 401, 'a token works once');
  const old = f.logins.issueToken();
  f.advance(LOGIN_TOKEN_TTL_MS + 1);
  assert.equal((await f.app.inject({ method: 'GET', url: `/login?token=${old.token}` })).statusCode, 401);
  assert.equal((await f.app.inject({ method: 'GET', url: '/login' })).statusCode, 401);
  const cookie = set.split(';')[0] ?? '';
  const ok = await f.app.inject({ method: 'GET', url: '/api/cluster', headers: { cookie } });
  assert.equal(ok.statusCode, 200);
  assert.deepEqual(ok.json().cluster, { hosts: [] });
  assert.match(String(ok.headers['content-security-policy']), /default-src 'self'/);
});

test('dashboard: a state-changing call needs the CSRF token and this origin; a forged one changes nothing', async () => {
  const f = fixture();
  const { cookie, csrf } = await login(f);
  assert.ok(csrf.length > 20);
  const body = { container: 'web', to: 'b', strategy: 'auto' };
  const forged = [
    { cookie, host: HOST },
    { cookie, host: HOST, 'x-ferry-csrf': 'guess' },
    { cookie, host: HOST, 'x-ferry-csrf': csrf, origin: 'https://evil.example' },
    { cookie, host: HOST, 'x-ferry-csrf': csrf, 'sec-fetch-site': 'cross-site' },
  ];
  for (const headers of forged) {
    const r = await f.app.inject({ method: 'POST', url: '/api/moves', headers, payload: body });
    assert.equal(r.statusCode, 403, JSON.stringify(headers));
    assert.equal(r.json().error.code, 'FERRY_E_AUTH_CSRF');
  }
  // no session at all: refused before the CSRF check
  const anon = await f.app.inject({
    method: 'POST',
    url: '/api/drain',
    headers: { 'x-ferry-csrf': csrf },
    payload: { host: 'a' },
  });
  assert.equal(anon.statusCode, 401);
  assert.deepEqual(f.calls, [], 'nothing reached the controller');
  const good = {
    cookie,
    host: HOST,
    'x-ferry-csrf': csrf,
    origin: `https://${HOST}`,
    'sec-fetch-site': 'same-origin',
  };
  const bad = await f.app.inject({
    method: 'POST',
    url: '/api/moves',
    headers: good,
    payload: { ...body, to: '../x' },
  });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error.code, 'FERRY_E_INPUT_REQUEST');
  assert.deepEqual(f.calls, [], 'bad input changes nothing');
  const r = await f.app.inject({ method: 'POST', url: '/api/moves', headers: good, payload: body });
  assert.equal(r.statusCode, 202);
  assert.deepEqual(r.json(), { id: 'c1', batch: 'move-00000000' });
  await f.app.inject({ method: 'POST', url: '/api/rebalance', headers: good, payload: { dryRun: true } });
  assert.deepEqual(f.calls, ['move web b', 'rebalance true']);
  const out = await f.app.inject({ method: 'POST', url: '/api/logout', headers: good, payload: {} });
  assert.equal(out.statusCode, 204);
  assert.equal(
    (await f.app.inject({ method: 'GET', url: '/api/cluster', headers: { cookie } })).statusCode,
    401,
  );
});

test('dashboard: the event stream opens with the cluster and every record, passes migrations on after them, and does not hold the close', async (t) => {
  const running = {
    id: 'c1',
    container: 'web',
    from: 'a',
    to: 'b',
    status: 'running',
    reason: 'x',
    createdAt: 1,
  };
  // the records are read slowly: what happens meanwhile must reach this stream after them, never before
  let readHistory: () => void = () => {};
  const historyRead = new Promise<void>((r) => {
    readHistory = r;
  });
  const f = fixture({
    history: async () => {
      await historyRead;
      return [running];
    },
  });
  t.after(() => {
    readHistory();
    return f.app.close();
  });
  const { cookie } = await login(f);
  await f.app.listen({ host: '127.0.0.1', port: 0 });
  const port = (f.app.server.address() as AddressInfo).port;
  const received: string[] = [];
  const res = await new Promise<IncomingMessage>((resolve, reject) =>
    get({ host: '127.0.0.1', port, path: '/api/events', headers: { cookie } }, resolve).on('error', reject),
  );
  assert.equal(res.headers['content-type'], 'text/event-stream');
  res.on('data', (d: Buffer) => received.push(d.toString()));
  const until = (what: RegExp) => waitUntil(() => what.test(received.join('')));
  await until(/ferry dashboard events/);
  f.controllerEmit({ type: 'migration', migration: { ...running, status: 'done' } });
  await new Promise((r) => setTimeout(r, 50));
  assert.doesNotMatch(received.join(''), /event: migration/, 'held until the opening picture is out');
  readHistory();
  await until(/event: migration/);
  const events = [...received.join('').matchAll(/^event: (\w+)\ndata: (.*)$/gm)].map((m) => ({
    type: m[1],
    data: JSON.parse(m[2]!) as { migrations?: { status: string }[]; migration?: { status: string } },
  }));
  // (the migration's end also asks for a new cluster picture, which follows)
  assert.deepEqual(
    events.slice(0, 3).map((e) => e.type),
    ['cluster', 'history', 'migration'],
  );
  assert.equal(events[1]!.data.migrations![0]!.status, 'running');
  assert.equal(events[2]!.data.migration!.status, 'done', 'the newer record comes after');
  // the close: an open stream does not hold it (t.after closes the app)
});

/** Waits (up to 5 s) until `ok` holds. */
async function waitUntil(ok: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}
