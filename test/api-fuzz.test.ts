// Schema-driven fuzzing of every agent and controller endpoint, in process (fastify's inject, runc and the network
// faked): for each route, the schemas it was registered with give (1) every one-field-wrong variant of a valid
// request, each of which must be refused with 400 and an input code and change nothing on the host, (2) random
// valid requests and random JSON bodies, none of which may be answered with a 5xx INTERNAL or an undocumented code.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import fc from 'fast-check';
import { type RouteSchemas, routesOf } from '../src/api/http-server.ts';
import { ERRORS } from '../src/core/errors.ts';
import {
  type AgentFixture,
  agentFixture,
  type ControllerFixture,
  controllerFixture,
} from './support/api-fixture.ts';
import { badCases, validValues } from './support/schema-cases.ts';

/** Routes that take no input a schema could describe, and why they are not fuzzed here. */
const NO_INPUT: Record<string, string> = {
  'GET /v1/health': 'no input',
  'GET /v1/capabilities': 'no input',
  'GET /v1/containers': 'no input',
  'GET /v1/cluster': 'no input',
  'GET /v1/migrations': 'no input',
  'GET /v1/events': 'a server-sent event stream that never ends (no input either)',
  'PUT /v1/bandwidth': 'counts and drops any bytes (a limit, tested below)',
  'PUT /v1/restores':
    'a checkpoint archive as a raw stream, checked whole (test/integration/archive.test.ts)',
  'POST /v1/checkpoints/tokens':
    "no input: a one-time token proving a caller shares the agent's file system (host/archive-target.ts)",
  'PUT /v1/inspect':
    'a checkpoint archive as a raw stream, read and dropped (test/integration/archive.test.ts)',
};

const SEED = 4711;
const one = (s: TSchema) => fc.sample(validValues(s), { numRuns: 1, seed: SEED })[0];

function urlFor(r: RouteSchemas, params: Record<string, unknown>, query?: Record<string, unknown>): string {
  let url = r.url.replace(/:([a-z]+)/g, (_m, k: string) => encodeURIComponent(String(params[k])));
  if (query && Object.keys(query).length)
    url += `?${new URLSearchParams(Object.entries(query).map(([k, v]): [string, string] => [k, String(v)])).toString()}`;
  return url;
}

interface Answer {
  status: number;
  code: string | undefined;
  message: string;
}

async function send(
  app: AgentFixture['app'],
  r: RouteSchemas,
  parts: { params?: unknown; query?: unknown; body?: unknown },
): Promise<Answer> {
  const url = urlFor(
    r,
    (parts.params ?? {}) as Record<string, unknown>,
    parts.query as Record<string, unknown>,
  );
  let timer: NodeJS.Timeout | undefined;
  const res = await Promise.race([
    app.inject({
      method: r.method as 'GET',
      url,
      ...(r.body
        ? { payload: JSON.stringify(parts.body ?? null), headers: { 'content-type': 'application/json' } }
        : {}),
    }),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${r.method} ${url}: no answer within 5 s`)), 5000);
    }),
  ]).finally(() => clearTimeout(timer));
  let code: string | undefined;
  let message = '';
  if (res.statusCode >= 400) {
    const b = res.json() as { error?: { code?: string; message?: string } };
    code = b.error?.code;
    message = b.error?.message ?? '';
  }
  return { status: res.statusCode, code, message };
}

function assertDocumented(a: Answer, what: string): void {
  if (a.status < 400) return;
  assert.ok(a.code && a.code in ERRORS, `${what}: undocumented code ${a.code} (${a.status} ${a.message})`);
  assert.notEqual(a.code, 'FERRY_E_INTERNAL', `${what}: INTERNAL for ${a.message}`);
  assert.equal(a.status, ERRORS[a.code as keyof typeof ERRORS].status, `${what}: status of ${a.code}`);
}

const INPUT_CODES = new Set(['FERRY_E_INPUT_REQUEST', 'FERRY_E_INPUT_NAME']);

function fuzzServer(name: string, make: () => Promise<AgentFixture | ControllerFixture>) {
  describe(`${name} API, every endpoint`, () => {
    let fx: AgentFixture | ControllerFixture;
    before(async () => {
      fx = await make();
    });
    after(() => fx.close());
    const snap = () => ('snapshot' in fx ? fx.snapshot() : []);

    it('every route is fuzzed by its schemas or listed as taking no input', () => {
      const routes = routesOf(fx.app);
      assert.ok(routes.length >= 5, 'routes were recorded');
      for (const r of routes) {
        const key = `${r.method} ${r.url}`;
        assert.ok(r.params || r.querystring || r.body || key in NO_INPUT, `${key}: no schema and not listed`);
      }
    });

    it('one field wrong: 400 with an input code, nothing changed', async (t) => {
      let cases = 0;
      for (const r of routesOf(fx.app)) {
        const base = {
          params: r.params ? one(r.params) : {},
          query: r.querystring ? one(r.querystring) : undefined,
          body: r.body ? one(r.body) : undefined,
        };
        const variants: { what: string; parts: typeof base }[] = [];
        // path and query values are strings on the wire: a variant counts as it arrives (still invalid, and
        // still addressed to this route: an empty segment would name another one)
        const onWire = (schema: TSchema, v: unknown): Record<string, string> | undefined => {
          if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
          const out: Record<string, string> = {};
          for (const [k, x] of Object.entries(v)) {
            if (typeof x !== 'string' || x.includes('\u0000')) return undefined;
            out[k] = x;
          }
          return Value.Check(schema, out) ? undefined : out;
        };
        if (r.params)
          for (const c of badCases(r.params, base.params)) {
            const w = onWire(r.params, c.value);
            const full = w && Object.keys(w).length === Object.keys(base.params as object).length;
            if (full && Object.values(w).every((x) => x !== ''))
              variants.push({ what: `params ${c.what}`, parts: { ...base, params: w } });
          }
        if (r.querystring)
          for (const c of badCases(r.querystring, base.query)) {
            const w = onWire(r.querystring, c.value);
            if (w) variants.push({ what: `query ${c.what}`, parts: { ...base, query: w } });
          }
        if (r.body)
          for (const c of badCases(r.body, base.body))
            variants.push({ what: `body ${c.what}`, parts: { ...base, body: c.value } });
        for (const v of variants) {
          const before = snap();
          const a = await send(fx.app, r, v.parts);
          const what = `${r.method} ${r.url} ${v.what}`;
          assert.equal(a.status, 400, `${what}: ${a.status} ${a.code} ${a.message}`);
          assert.ok(INPUT_CODES.has(a.code ?? ''), `${what}: ${a.code}`);
          assert.doesNotMatch(
            a.message,
            /\/tmp\/|\/var\/lib|ferry-badinput/,
            `${what}: the answer shows a host path`,
          );
          assert.deepEqual(snap(), before, `${what}: the host changed`);
          cases++;
        }
      }
      assert.ok(cases >= 100, `only ${cases} cases derived`);
      t.diagnostic(`${cases} one-field-wrong requests`);
    });

    it('random valid requests: never INTERNAL, never an undocumented code', async (t) => {
      const statuses = new Map<number, number>();
      for (const r of routesOf(fx.app)) {
        if (!(r.params || r.querystring || r.body)) continue;
        const arb = fc.record({
          params: r.params ? validValues(r.params) : fc.constant({}),
          query: r.querystring ? validValues(r.querystring) : fc.constant(undefined),
          body: r.body ? validValues(r.body) : fc.constant(undefined),
        });
        await fc.assert(
          fc.asyncProperty(arb, async (parts) => {
            const a = await send(fx.app, r, parts);
            const key = a.status >= 400 ? `${a.status} ${a.code}` : a.status;
            statuses.set(key as number, (statuses.get(key as number) ?? 0) + 1);
            assertDocumented(a, `${r.method} ${r.url} ${JSON.stringify(parts)}`);
          }),
          { numRuns: 15, seed: SEED },
        );
      }
      t.diagnostic(`answers by status: ${JSON.stringify(Object.fromEntries(statuses))}`);
    });

    it('random JSON bodies: refused with an input code, nothing changed', async () => {
      for (const r of routesOf(fx.app)) {
        if (!r.body) continue;
        const params = r.params ? one(r.params) : {};
        await fc.assert(
          fc.asyncProperty(fc.jsonValue({ maxDepth: 3 }), async (body) => {
            const before = snap();
            const a = await send(fx.app, r, { params, body });
            assertDocumented(a, `${r.method} ${r.url} ${JSON.stringify(body)}`);
            if (a.status === 400) assert.deepEqual(snap(), before);
          }),
          { numRuns: 25, seed: SEED },
        );
      }
    });
  });
}

fuzzServer('agent', () => agentFixture());
fuzzServer('controller', () => controllerFixture());
