// The shared server setup's caller checks, through fastify's inject() with the caller's certificate given
// directly (the real handshake is tested in test/integration/trust.test.ts).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Type } from '@sinclair/typebox';
import type { FerryError } from '../core/errors.ts';
import { silentLogger } from '../core/log.ts';
import { ClusterCA } from '../runtime/pki.ts';
import { authorize, buildApiServer } from './http-server.ts';

let dir = '';
const pem: Record<string, string> = {};

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ferry-http-server-'));
  const ca = new ClusterCA(dir);
  await ca.ensure();
  for (const [name, role] of [
    ['a', 'agent'],
    ['b', 'agent'],
    ['controller', 'controller'],
    ['cli', 'client'],
  ] as const)
    pem[name] = readFileSync((await ca.issue(name, { role })).cert, 'utf8');
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('authorize', () => {
  it('returns the role and name of an allowed certificate', () => {
    assert.deepEqual(authorize(pem['a'], { roles: ['agent'] }), { role: 'agent', name: 'a' });
    assert.deepEqual(authorize(pem['cli'], { roles: ['client', 'controller'] }), {
      role: 'client',
      name: 'cli',
    });
  });

  it('refuses a role not allowed (FERRY_E_AUTH_ROLE) and no certificate (FERRY_E_AUTH)', () => {
    assert.throws(
      () => authorize(pem['cli'], { roles: ['agent'] }),
      (e: FerryError) => e.code === 'FERRY_E_AUTH_ROLE' && e.status === 403,
    );
    assert.throws(
      () => authorize(undefined, { roles: ['agent'] }),
      (e: FerryError) => e.code === 'FERRY_E_AUTH' && e.status === 401,
    );
  });

  it('takes only known peers on a route that asks for them (FERRY_E_AUTH_PEER)', () => {
    const known = (n: string) => n === 'a';
    assert.equal(authorize(pem['a'], { roles: ['agent'], knownPeer: true }, known).name, 'a');
    assert.throws(
      () => authorize(pem['b'], { roles: ['agent'], knownPeer: true }, known),
      (e: FerryError) => e.code === 'FERRY_E_AUTH_PEER' && e.status === 403 && /host b/.test(e.message),
    );
    // without a list of peers no one is known
    assert.throws(
      () => authorize(pem['a'], { roles: ['agent'], knownPeer: true }),
      (e: FerryError) => e.code === 'FERRY_E_AUTH_PEER',
    );
  });
});

describe('buildApiServer', () => {
  function server(caller: string | undefined) {
    const app = buildApiServer({
      log: silentLogger(),
      knownPeer: (n) => n === 'a',
      peerCertificate: () => (caller ? pem[caller] : undefined),
    });
    let handled = 0;
    app.post(
      '/peer',
      {
        config: {
          roles: ['agent'],
          knownPeer: true,
          claimedPeer: (req) => (req.body as { from: string }).from,
        },
        schema: { body: Type.Object({ from: Type.String() }) },
      },
      async (req) => {
        handled++;
        return { caller: req.caller };
      },
    );
    app.get('/user', { config: { roles: ['client', 'controller'] } }, async () => {
      handled++;
      return {};
    });
    return { app, handled: () => handled };
  }

  it('refuses a route that declares no roles, at registration', async () => {
    const app = buildApiServer({ log: silentLogger() });
    assert.throws(() => app.get('/open', async () => ({})), /declares no roles/);
    await app.close();
  });

  it('answers each caller by its role before the handler (and before the body is validated)', async () => {
    const cases: [string | undefined, string, unknown, number, string?][] = [
      ['a', '/peer', { from: 'a' }, 200],
      ['cli', '/peer', { from: 'a' }, 403, 'FERRY_E_AUTH_ROLE'],
      // the body is not even looked at: the role is refused first
      ['cli', '/peer', { nonsense: 1 }, 403, 'FERRY_E_AUTH_ROLE'],
      ['b', '/peer', { from: 'b' }, 403, 'FERRY_E_AUTH_PEER'],
      ['a', '/peer', { from: 'b' }, 403, 'FERRY_E_AUTH_PEER'],
      ['a', '/peer', { nonsense: 1 }, 400, 'FERRY_E_INPUT_REQUEST'],
      [undefined, '/peer', { from: 'a' }, 401, 'FERRY_E_AUTH'],
      ['cli', '/user', undefined, 200],
      ['controller', '/user', undefined, 200],
      ['a', '/user', undefined, 403, 'FERRY_E_AUTH_ROLE'],
    ];
    for (const [caller, url, body, status, code] of cases) {
      const { app, handled } = server(caller);
      const r = await app.inject({
        method: url === '/peer' ? 'POST' : 'GET',
        url,
        ...(body === undefined ? {} : { payload: body as object }),
      });
      const what = `${caller ?? 'nobody'} ${url} ${JSON.stringify(body)}`;
      assert.equal(r.statusCode, status, `${what}: ${r.body}`);
      if (code) {
        assert.equal(r.json().error.code, code, what);
        assert.equal(handled(), 0, `${what}: the handler did not run`);
      } else assert.equal(handled(), 1, what);
      if (url === '/peer' && status === 200) assert.deepEqual(r.json().caller, { role: 'agent', name: 'a' });
      await app.close();
    }
  });
});
