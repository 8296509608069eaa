// The state-changing routes a user reaches, fuzzed in process (fastify's inject, a real controller on an in-memory
// store, agents faked): the controller's POST /v1/moves and the dashboard's moves, dry run, rebalance and drain.
// Malformed JSON, a body that is not an object, fields of the wrong type, unknown fields, names with `/` or `..`,
// a wrong content type and bodies over the limit: each one gets one 4xx answer with a documented code and the
// status docs/errors.md gives it, and nothing is queued, moved or marked. One valid move is accepted, so the
// fixture can change state and "nothing changed" means something.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { TObject, TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { DashboardDrainBody, DashboardRebalanceBody, MoveBody } from '../src/api/dashboard.ts';
import type { HeartbeatBody, MigrationReport } from '../src/api/types.ts';
import type { ControllerFileConfig } from '../src/cluster/config.ts';
import { CONTROLLER_DEFAULTS, Controller } from '../src/cluster/controller.ts';
import type { DashboardAssets } from '../src/cluster/dashboard/assets.ts';
import { startDashboard } from '../src/cluster/dashboard/index.ts';
import { buildDashboardApp } from '../src/cluster/dashboard/server.ts';
import { DashboardLogins } from '../src/cluster/dashboard/sessions.ts';
import { buildControllerApp } from '../src/cluster/server.ts';
import { SqliteStore } from '../src/cluster/store-sqlite.ts';
import { ERRORS, type ErrorCode } from '../src/core/errors.ts';
import { silentLogger } from '../src/core/log.ts';

const SEED = 1312;
const RUNS = 150;

const beat = (host: string, containers: HeartbeatBody['containers']): HeartbeatBody => ({
  host,
  address: `10.0.0.${host === 'a' ? 10 : 11}`,
  port: 7470,
  capacity: { cores: 1, memoryBytes: 1 << 30 },
  seq: 1,
  full: true,
  containers,
  removed: [],
});

interface Fixture {
  api: FastifyInstance;
  dash: FastifyInstance;
  /** Headers of a logged-in dashboard page (its session cookie, CSRF token and origin). */
  session: Record<string, string>;
  snapshot(): Promise<string>;
  /** Moves the agents were asked to run. */
  asked: string[];
  close(): Promise<void>;
}

async function fixture(): Promise<Fixture> {
  const log = silentLogger();
  const store = new SqliteStore(':memory:');
  const asked: string[] = [];
  let release: () => void = () => {};
  const held = new Promise<void>((r) => {
    release = r;
  });
  const controller = new Controller({
    store,
    agents: {
      containers: async () => [],
      // a move that was queued waits here until the end: its record stays as it was queued
      migrate: async (from, container, to): Promise<MigrationReport> => {
        asked.push(`${container} ${from.name}->${to.name}`);
        await held;
        throw new Error('the test ended');
      },
      canMigrate: async () => true,
    },
    cfg: { ...CONTROLLER_DEFAULTS, rebalanceIntervalMs: 0 },
    log,
  });
  const stat = { name: 'web', cpuPercent: 5, memoryBytes: 1 << 20, status: 'running' };
  await controller.heartbeat(beat('a', [stat]));
  await controller.heartbeat(beat('b', []));
  const agents = {
    capabilities: async () => {
      throw new Error('no agents in this test');
    },
    processes: async () => {
      throw new Error('no agents in this test');
    },
  };
  // the controller's API with the move route as a controller registers it (no dashboard port configured)
  const api = buildControllerApp(controller, log);
  await startDashboard({
    cfg: {} as ControllerFileConfig,
    api,
    controller,
    agents,
    tls: { key: Buffer.alloc(0), cert: Buffer.alloc(0) },
    log,
  });
  await api.ready();
  const logins = new DashboardLogins();
  const assets = {
    get: async () => ({ body: Buffer.from('x'), type: 'text/javascript' }),
  } as unknown as DashboardAssets;
  const dash = buildDashboardApp({ controller, agents, logins, assets, log });
  await dash.ready();
  const { token } = logins.issueToken();
  const login = await dash.inject({ method: 'GET', url: `/login?token=${token}` });
  const cookie = String(login.headers['set-cookie']).split(';')[0] ?? '';
  const page = await dash.inject({ method: 'GET', url: '/', headers: { cookie } });
  const csrf = /name="ferry-csrf" content="([^"]+)"/.exec(page.body)?.[1] ?? '';
  assert.ok(csrf, 'the page carries its CSRF token');
  const host = 'dash.example:7481';
  const session = { cookie, 'x-ferry-csrf': csrf, host, origin: `https://${host}` };
  return {
    api,
    dash,
    session,
    asked,
    snapshot: async () =>
      JSON.stringify({ migrations: await store.listMigrations(), hosts: await store.listHosts(), asked }),
    async close() {
      release();
      await api.close();
      await dash.close();
      await store.close();
    },
  };
}

interface Route {
  app: 'api' | 'dash';
  url: string;
  schema: TObject;
  valid: Record<string, unknown>;
}

const ROUTES: Route[] = [
  { app: 'api', url: '/v1/moves', schema: MoveBody, valid: { container: 'web', to: 'b', strategy: 'auto' } },
  {
    app: 'dash',
    url: '/api/moves',
    schema: MoveBody,
    valid: { container: 'web', to: 'b', strategy: 'cold' },
  },
  {
    app: 'dash',
    url: '/api/moves/plan',
    schema: MoveBody,
    valid: { container: 'web', to: 'b', strategy: 'auto', maxDowntimeMs: 300 },
  },
  { app: 'dash', url: '/api/rebalance', schema: DashboardRebalanceBody, valid: { dryRun: true } },
  { app: 'dash', url: '/api/drain', schema: DashboardDrainBody, valid: { host: 'b', dryRun: true } },
];

/** One request as it goes on the wire: a raw payload and its content type. */
interface Case {
  what: string;
  payload: string;
  type?: string;
}

const json = (what: string, body: unknown): Case => ({ what, payload: JSON.stringify(body) });

/** Names a path could be made of: separators, parent references, control characters, the empty and the long. */
const BAD_NAMES = [
  '..',
  '.',
  '../b',
  'a/b',
  '/etc/passwd',
  'a/../b',
  'b/',
  '..%2fb',
  'b\u0000',
  'b\n',
  ' b',
  '',
  'x'.repeat(65),
  'Web',
  'a b',
];

const WRONG_VALUES: unknown[] = [
  0,
  -1,
  1.5,
  2 ** 53 + 2,
  true,
  false,
  null,
  [],
  ['b'],
  {},
  { a: 1 },
  'x',
  '',
];

function cases(r: Route): fc.Arbitrary<Case> {
  const props = Object.keys(r.schema.properties);
  const nameProps = props.filter((k) => (r.schema.properties[k] as TSchema & { pattern?: string }).pattern);
  const malformed = fc
    .oneof(
      fc.constantFrom('{', '{"container":', '{"a":1,}', "{'container':'web'}", 'nul', '[1,2', '}{', '"'),
      fc.string(),
    )
    .filter((s) => {
      try {
        JSON.parse(s);
        return false;
      } catch {
        return true;
      }
    })
    .map((payload): Case => ({ what: `malformed JSON ${JSON.stringify(payload)}`, payload }));
  const notObject = fc
    .constantFrom<unknown>(null, [], [r.valid], 'web', 42, true)
    .map((b) => json(`a body that is no object: ${JSON.stringify(b)}`, b));
  const wrongType = fc
    .tuple(
      fc.constantFrom(...props),
      fc.oneof(fc.constantFrom(...WRONG_VALUES), fc.jsonValue({ maxDepth: 2 })),
    )
    .map(([k, v]) => ({ k, body: { ...r.valid, [k]: v } }))
    .filter(({ body }) => !Value.Check(r.schema, body))
    .map(({ k, body }) => json(`${k} of the wrong type or value: ${JSON.stringify(body[k])}`, body));
  const unknownField = fc
    .tuple(
      fc.oneof(
        fc.constantFrom('__proto__', 'constructor', 'prototype', 'from', 'force', 'hosts'),
        fc.string(),
      ),
      fc.jsonValue({ maxDepth: 2 }),
    )
    .filter(([k]) => !props.includes(k))
    .map(([k, v]) => {
      // (a literal "__proto__" key, as JSON.parse reads it: an own property, not the prototype)
      const payload = `${JSON.stringify(r.valid).slice(0, -1)},${JSON.stringify(k)}:${JSON.stringify(v ?? null)}}`;
      return { what: `unknown field ${JSON.stringify(k)}`, payload };
    });
  const arbs: fc.Arbitrary<Case>[] = [malformed, notObject, wrongType, unknownField];
  if (nameProps.length)
    arbs.push(
      fc
        .tuple(
          fc.constantFrom(...nameProps),
          fc.oneof(
            fc.constantFrom(...BAD_NAMES),
            fc
              .tuple(
                fc.string({ maxLength: 8 }),
                fc.constantFrom('/', '..', '\\', '\u0000'),
                fc.string({ maxLength: 8 }),
              )
              .map(([a, sep, b]) => `${a}${sep}${b}`),
          ),
        )
        .filter(([k, v]) => !Value.Check(r.schema, { ...r.valid, [k]: v }))
        .map(([k, v]) => json(`${k} ${JSON.stringify(v)}`, { ...r.valid, [k]: v })),
    );
  return fc.oneof(...arbs);
}

/** Bodies the route must refuse whatever generator: too large, or not JSON at all. */
function fixedCases(r: Route, limit: number): Case[] {
  return [
    { what: 'an empty JSON body', payload: '' },
    { what: 'a text/plain body', payload: JSON.stringify(r.valid), type: 'text/plain' },
    {
      what: 'a body over the limit',
      payload: JSON.stringify({ ...r.valid, padding: 'x'.repeat(limit + 1) }),
    },
    {
      what: 'a name over the limit',
      payload: JSON.stringify({ ...r.valid, container: 'w'.repeat(limit + 1), host: 'h'.repeat(limit + 1) }),
    },
  ];
}

interface Answer {
  status: number;
  code: string | undefined;
  message: string;
}

async function send(fx: Fixture, r: Route, c: Case): Promise<Answer> {
  const app = r.app === 'api' ? fx.api : fx.dash;
  const res = await app.inject({
    method: 'POST',
    url: r.url,
    payload: c.payload,
    headers: { 'content-type': c.type ?? 'application/json', ...(r.app === 'dash' ? fx.session : {}) },
  });
  let body: { error?: { code?: string; message?: string } } = {};
  try {
    body = res.json();
  } catch {
    // checked below: every refusal is JSON
  }
  return { status: res.statusCode, code: body.error?.code, message: body.error?.message ?? '' };
}

function assertRefused(a: Answer, what: string): void {
  assert.ok(a.status >= 400 && a.status < 500, `${what}: ${a.status} ${a.code} ${a.message}`);
  assert.ok(a.code && a.code in ERRORS, `${what}: undocumented code ${a.code} (${a.status} ${a.message})`);
  assert.equal(a.status, ERRORS[a.code as ErrorCode].status, `${what}: the status of ${a.code}`);
  assert.ok(a.message.length > 0 && !a.message.includes('\n'), `${what}: one clear line: ${a.message}`);
}

describe('moves, rebalance and drain: bad requests are refused with one 4xx each, nothing changed', () => {
  let fx: Fixture;
  before(async () => {
    fx = await fixture();
  });
  after(() => fx.close());

  for (const r of ROUTES) {
    it(`POST ${r.url}: generated bad bodies`, async (t) => {
      const before = await fx.snapshot();
      const codes = new Map<string, number>();
      await fc.assert(
        fc.asyncProperty(cases(r), async (c) => {
          const a = await send(fx, r, c);
          assertRefused(a, `POST ${r.url} ${c.what}`);
          codes.set(`${a.status} ${a.code}`, (codes.get(`${a.status} ${a.code}`) ?? 0) + 1);
        }),
        { numRuns: RUNS, seed: SEED },
      );
      const limit = r.app === 'api' ? 1 << 20 : 64 * 1024;
      for (const c of fixedCases(r, limit)) {
        const a = await send(fx, r, c);
        assertRefused(a, `POST ${r.url} ${c.what}`);
        if (c.what.includes('over the limit')) assert.equal(a.code, 'FERRY_E_INPUT_TOO_LARGE', c.what);
        codes.set(`${a.status} ${a.code}`, (codes.get(`${a.status} ${a.code}`) ?? 0) + 1);
      }
      assert.equal(await fx.snapshot(), before, 'nothing was queued, moved or marked');
      t.diagnostic(`answers: ${JSON.stringify(Object.fromEntries(codes))}`);
    });
  }

  it('the same fixture takes a valid move (so "nothing changed" above could have failed)', async () => {
    const before = await fx.snapshot();
    const a = await fx.api.inject({
      method: 'POST',
      url: '/v1/moves',
      payload: { container: 'web', to: 'b', strategy: 'auto' },
    });
    assert.equal(a.statusCode, 202, a.body);
    assert.notEqual(await fx.snapshot(), before);
  });
});
