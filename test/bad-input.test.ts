// Bad input, case by case, over the agent and controller APIs (in process, runc and the network faked) and the
// CLI (run as a child, against a cluster whose agents cannot be reached: every refusal here must come before
// anything is asked of an agent). Each is answered with its documented code (docs/errors.md), never INTERNAL,
// and changes nothing: the agent's state directory is the same file for file before and after.
// Over 400 lines and still one file: it is a table of cases, read top to bottom, over three surfaces that share
// its helpers; split by surface, the tables would drift apart.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { ERRORS } from '../src/core/errors.ts';
import { encodeTree } from '../src/transport/image-stream/index.ts';
import {
  AGENT_ADDRESS,
  type AgentFixture,
  agentFixture,
  type ControllerFixture,
  controllerFixture,
} from './support/api-fixture.ts';
import { pool } from './support/pool.ts';

type Code = keyof typeof ERRORS;

interface ApiCase {
  what: string;
  method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH';
  url: string;
  json?: unknown;
  raw?: Buffer | string;
  headers?: Record<string, string>;
  code: Code;
  status?: number;
  re?: RegExp;
}

const cmd = ['/bin/sh', '-c', 'sleep 1000'];
const migrate = (extra: Record<string, unknown>) => ({
  to: { name: 'b', address: '10.0.0.2', port: 7470 },
  strategy: 'cold',
  ...extra,
});
const PREPARED = 'm000000000001';
const UNKNOWN_ID = 'mffffffffffff';
const record = (name: string) => ({
  name,
  createdAt: '2026-01-01T00:00:00.000Z',
  net: 'none',
  command: cmd,
  origin: { kind: 'run' },
});

async function bundleStream(files: Record<string, string>): Promise<Buffer> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bundle-'));
  try {
    for (const [p, text] of Object.entries(files)) {
      mkdirSync(join(dir, p, '..'), { recursive: true });
      writeFileSync(join(dir, p), text);
    }
    const chunks: Buffer[] = [];
    for await (const c of encodeTree([{ root: dir, prefix: '' }])) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const long = (n: number) => 'x'.repeat(n);

function apiCases(stream: Buffer, big: Buffer): ApiCase[] {
  const truncated = stream.subarray(0, Math.floor(stream.length / 2));
  const corrupted = Buffer.from(stream);
  // a byte of file content (past the stream header): its checksum no longer matches
  corrupted[corrupted.length - 40]! ^= 0xff;
  const c = (what: string, method: ApiCase['method'], url: string, json: unknown, code: Code, re?: RegExp) =>
    ({ what, method, url, json, code, ...(re ? { re } : {}) }) as ApiCase;
  const create = (what: string, body: unknown, code: Code, re?: RegExp) =>
    c(`create: ${what}`, 'POST', '/v1/containers', body, code, re);
  const mig = (what: string, extra: Record<string, unknown>, code: Code = 'FERRY_E_INPUT_REQUEST') =>
    c(`migrate: ${what}`, 'POST', '/v1/containers/web/migrate', migrate(extra), code);
  return [
    // names and paths
    c('name with an encoded slash', 'GET', '/v1/containers/a%2Fb', undefined, 'FERRY_E_INPUT_REQUEST'),
    {
      ...c(
        'name .. (resolves to no endpoint)',
        'GET',
        '/v1/containers/..',
        undefined,
        'FERRY_E_INPUT_REQUEST',
      ),
      status: 404,
    },
    c('name with ..', 'GET', '/v1/containers/a..b', undefined, 'FERRY_E_INPUT_NAME'),
    c('name of 65 characters', 'GET', `/v1/containers/${long(65)}`, undefined, 'FERRY_E_INPUT_REQUEST'),
    c('name with a NUL', 'GET', '/v1/containers/a%00b', undefined, 'FERRY_E_INPUT_REQUEST'),
    c('name with a space', 'GET', '/v1/containers/a%20b', undefined, 'FERRY_E_INPUT_REQUEST'),
    c('unknown container', 'GET', '/v1/containers/nosuch', undefined, 'FERRY_E_CONTAINER_UNKNOWN'),
    c('remove: name with ..', 'DELETE', '/v1/containers/a..b', undefined, 'FERRY_E_INPUT_NAME'),
    c('remove: unknown container', 'DELETE', '/v1/containers/nosuch', undefined, 'FERRY_E_CONTAINER_UNKNOWN'),
    create('name with a slash', { name: 'x/y', command: cmd }, 'FERRY_E_INPUT_REQUEST', /name/),
    create('name with ..', { name: 'a..b', command: cmd }, 'FERRY_E_INPUT_NAME'),
    create('name starting with a dot', { name: '.hidden', command: cmd }, 'FERRY_E_INPUT_REQUEST'),
    create('name taken', { name: 'web', command: cmd }, 'FERRY_E_CONTAINER_EXISTS'),
    create('neither command nor upload', { name: 'n1' }, 'FERRY_E_INPUT_REQUEST', /give a command/),
    create(
      'upload: true but nothing uploaded',
      { name: 'n1', upload: true },
      'FERRY_E_INPUT_REQUEST',
      /no bundle was uploaded for n1$/,
    ),
    create(
      'upload and command',
      { name: 'n1', upload: true, command: cmd },
      'FERRY_E_INPUT_REQUEST',
      /not both/,
    ),
    // types and sizes
    create('empty command', { name: 'n1', command: [] }, 'FERRY_E_INPUT_REQUEST'),
    create('257 arguments', { name: 'n1', command: Array(257).fill('a') }, 'FERRY_E_INPUT_REQUEST'),
    create('an argument of 4097 bytes', { name: 'n1', command: [long(4097)] }, 'FERRY_E_INPUT_REQUEST'),
    create('command as a string', { name: 'n1', command: 'sleep 1' }, 'FERRY_E_INPUT_REQUEST'),
    create('command with a number', { name: 'n1', command: [1] }, 'FERRY_E_INPUT_REQUEST'),
    create('upload as a string', { name: 'n1', upload: 'yes' }, 'FERRY_E_INPUT_REQUEST'),
    create('unknown network mode', { name: 'n1', command: cmd, net: 'bridge' }, 'FERRY_E_INPUT_REQUEST'),
    // addresses
    create(
      'own network without an address',
      { name: 'n1', command: cmd, net: 'own' },
      'FERRY_E_INPUT_REQUEST',
      /needs an address/,
    ),
    create(
      'no network with an address',
      { name: 'n1', command: cmd, net: 'none', ip: '10.0.0.60' },
      'FERRY_E_INPUT_REQUEST',
    ),
    create(
      'address not IPv4',
      { name: 'n1', command: cmd, net: 'own', ip: '999.1.1.1' },
      'FERRY_E_INPUT_REQUEST',
    ),
    create(
      'address off the LAN',
      { name: 'n1', command: cmd, net: 'own', ip: '10.0.1.5' },
      'FERRY_E_INPUT_REQUEST',
      /not on the LAN 10\.0\.0\.0\/24/,
    ),
    create(
      'address off the LAN, far',
      { name: 'n1', command: cmd, net: 'host', ip: '8.8.8.8' },
      'FERRY_E_INPUT_REQUEST',
      /not on the LAN/,
    ),
    create(
      "the agent's own address",
      { name: 'n1', command: cmd, net: 'own', ip: AGENT_ADDRESS },
      'FERRY_E_ADDRESS_TAKEN',
    ),
    create(
      'a reserved address (the client)',
      { name: 'n1', command: cmd, net: 'own', ip: '10.0.0.100' },
      'FERRY_E_ADDRESS_TAKEN',
    ),
    create(
      'the network address',
      { name: 'n1', command: cmd, net: 'own', ip: '10.0.0.0' },
      'FERRY_E_INPUT_REQUEST',
      /network address/,
    ),
    create(
      'the broadcast address',
      { name: 'n1', command: cmd, net: 'own', ip: '10.0.0.255' },
      'FERRY_E_INPUT_REQUEST',
      /broadcast/,
    ),
    create(
      "another container's address",
      { name: 'n1', command: cmd, net: 'own', ip: '10.0.0.50' },
      'FERRY_E_ADDRESS_TAKEN',
      /taken by web/,
    ),
    // bodies
    create('unknown field', { name: 'n1', command: cmd, privileged: true }, 'FERRY_E_INPUT_REQUEST'),
    create('body is an array', [{ name: 'n1' }], 'FERRY_E_INPUT_REQUEST'),
    create('body is null', null, 'FERRY_E_INPUT_REQUEST'),
    {
      what: 'create: body is not JSON',
      method: 'POST',
      url: '/v1/containers',
      raw: '{"name": "n1",',
      headers: { 'content-type': 'application/json' },
      code: 'FERRY_E_INPUT_REQUEST',
    },
    {
      what: 'create: body of 2 MiB',
      method: 'POST',
      url: '/v1/containers',
      raw: JSON.stringify({ name: 'n1', command: [long(2 << 20)] }),
      headers: { 'content-type': 'application/json' },
      code: 'FERRY_E_INPUT_TOO_LARGE',
      status: 413,
    },
    {
      what: 'create: body as text/plain (a string, not the object)',
      method: 'POST',
      url: '/v1/containers',
      raw: 'name=n1',
      headers: { 'content-type': 'text/plain' },
      code: 'FERRY_E_INPUT_REQUEST',
    },
    // migration options: numbers, ranges, types
    mig('unknown strategy', { strategy: 'teleport' }),
    mig('max downtime 0', { maxDowntimeMs: 0 }),
    mig('max downtime over 10 minutes', { maxDowntimeMs: 600_001 }),
    mig('max downtime as a string', { maxDowntimeMs: '500' }),
    mig('threshold 1e99', { thresholdBytes: 1e99 }),
    mig('threshold over 1 TiB', { thresholdBytes: 2 ** 40 + 1 }),
    mig('negative threshold', { thresholdBytes: -1 }),
    mig('101 rounds', { maxRounds: 101 }),
    mig('17 streams', { streams: 17 }),
    mig('1.5 streams', { streams: 1.5 }),
    mig('unknown compression', { compress: 'maybe' }),
    mig('port 70000', { to: { name: 'b', address: '10.0.0.2', port: 70000 } }),
    mig('address not IPv4', { to: { name: 'b', address: '10.0.0', port: 7470 } }),
    mig('host name ../b', { to: { name: '../b', address: '10.0.0.2', port: 7470 } }),
    mig('no destination', { to: undefined }),
    mig('unknown field', { force: true }),
    c(
      'migrate: unknown container',
      'POST',
      '/v1/containers/nosuch/migrate',
      migrate({}),
      'FERRY_E_CONTAINER_UNKNOWN',
    ),
    c('migrate: name with ..', 'POST', '/v1/containers/a..b/migrate', migrate({}), 'FERRY_E_INPUT_NAME'),
    // the destination half: ids, parts, ranges, replays
    c(
      'incoming: id with a path',
      'POST',
      '/v1/incoming',
      { id: '../../x', name: 'n', from: 'a', record: record('n') },
      'FERRY_E_INPUT_REQUEST',
    ),
    c(
      'incoming: record missing',
      'POST',
      '/v1/incoming',
      { id: 'm000000000002', name: 'n', from: 'a' },
      'FERRY_E_INPUT_REQUEST',
    ),
    c(
      'incoming: replayed prepare',
      'POST',
      '/v1/incoming',
      { id: PREPARED, name: 'arriving', from: 'b', record: record('arriving') },
      'FERRY_E_CONTAINER_EXISTS',
    ),
    c(
      'incoming: second migration of the name',
      'POST',
      '/v1/incoming',
      { id: 'm000000000003', name: 'arriving', from: 'b', record: record('arriving') },
      'FERRY_E_CONTAINER_EXISTS',
    ),
    c(
      'incoming: migration of a name in use',
      'POST',
      '/v1/incoming',
      { id: 'm000000000004', name: 'web', from: 'b', record: record('web') },
      'FERRY_E_CONTAINER_EXISTS',
    ),
    c('incoming: unknown part', 'PUT', `/v1/incoming/${PREPARED}/etc`, undefined, 'FERRY_E_INPUT_REQUEST'),
    c(
      'incoming: range offset not a number',
      'PUT',
      `/v1/incoming/${PREPARED}/range?file=pages-1.img&offset=x&length=1&total=1`,
      undefined,
      'FERRY_E_INPUT_REQUEST',
    ),
    c(
      'incoming: range offset of 16 digits',
      'PUT',
      `/v1/incoming/${PREPARED}/range?file=pages-1.img&offset=1234567890123456&length=1&total=1`,
      undefined,
      'FERRY_E_INPUT_REQUEST',
    ),
    c(
      'incoming: range file with a path',
      'PUT',
      `/v1/incoming/${PREPARED}/range?file=..%2Fx&offset=0&length=1&total=1`,
      undefined,
      'FERRY_E_INPUT_REQUEST',
    ),
    c(
      'incoming: range with an unknown parameter',
      'PUT',
      `/v1/incoming/${PREPARED}/range?file=a&offset=0&length=1&total=1&x=1`,
      undefined,
      'FERRY_E_INPUT_REQUEST',
    ),
    c(
      'incoming: blocks of an unknown migration',
      'PUT',
      `/v1/incoming/${UNKNOWN_ID}/blocks`,
      undefined,
      'FERRY_E_MIGRATION_UNKNOWN',
    ),
    c(
      'incoming: restore of an unknown migration',
      'POST',
      `/v1/incoming/${UNKNOWN_ID}/restore`,
      { neighbours: [] },
      'FERRY_E_MIGRATION_UNKNOWN',
    ),
    c(
      'incoming: commit of an unknown migration',
      'POST',
      `/v1/incoming/${UNKNOWN_ID}/commit`,
      undefined,
      'FERRY_E_MIGRATION_UNKNOWN',
    ),
    c(
      'incoming: commit before restore',
      'POST',
      `/v1/incoming/${PREPARED}/commit`,
      undefined,
      'FERRY_E_INPUT_REQUEST',
      /cannot commit/,
    ),
    {
      what: 'incoming: unsupported content encoding',
      method: 'PUT',
      url: `/v1/incoming/${PREPARED}/images`,
      raw: stream,
      headers: { 'content-type': 'application/octet-stream', 'content-encoding': 'br' },
      code: 'FERRY_E_INPUT_REQUEST',
    },
    // uploads: names, size, truncated and corrupted streams
    {
      what: 'upload: name with ..',
      method: 'PUT',
      url: '/v1/uploads/a..b',
      raw: stream,
      headers: octet,
      code: 'FERRY_E_INPUT_NAME',
    },
    {
      what: 'upload: name of a container',
      method: 'PUT',
      url: '/v1/uploads/web',
      raw: stream,
      headers: octet,
      code: 'FERRY_E_CONTAINER_EXISTS',
    },
    {
      what: 'upload: garbage',
      method: 'PUT',
      url: '/v1/uploads/n2',
      raw: Buffer.from('not a stream at all'),
      headers: octet,
      code: 'FERRY_E_TRANSFER_CORRUPT',
    },
    {
      what: 'upload: empty',
      method: 'PUT',
      url: '/v1/uploads/n2',
      raw: Buffer.alloc(0),
      headers: octet,
      code: 'FERRY_E_TRANSFER_CORRUPT',
    },
    {
      what: 'upload: truncated stream',
      method: 'PUT',
      url: '/v1/uploads/n2',
      raw: truncated,
      headers: octet,
      code: 'FERRY_E_TRANSFER_CORRUPT',
    },
    {
      what: 'upload: corrupted stream',
      method: 'PUT',
      url: '/v1/uploads/n2',
      raw: corrupted,
      headers: octet,
      code: 'FERRY_E_TRANSFER_CORRUPT',
    },
    {
      what: 'upload: over the limit',
      method: 'PUT',
      url: '/v1/uploads/n2',
      raw: big,
      headers: octet,
      code: 'FERRY_E_INPUT_TOO_LARGE',
      re: /exceeds this host's limit/,
    },
    // claims
    c(
      'claim: a name in use',
      'POST',
      '/v1/claims',
      { token: 'r0123456789abcdef', name: 'web', host: 'b' },
      'FERRY_E_CONTAINER_EXISTS',
    ),
    c(
      "claim: the agent's address",
      'POST',
      '/v1/claims',
      { token: 'r0123456789abcdef', name: 'n3', host: 'b', ip: AGENT_ADDRESS },
      'FERRY_E_ADDRESS_TAKEN',
    ),
    c(
      'claim: token with a path',
      'POST',
      '/v1/claims',
      { token: '../r', name: 'n3', host: 'b' },
      'FERRY_E_INPUT_REQUEST',
    ),
    c('claim release: token with a path', 'DELETE', '/v1/claims/..%2Fr', undefined, 'FERRY_E_INPUT_REQUEST'),
    // endpoints
    {
      ...c('unknown endpoint', 'GET', '/v1/nothing', undefined, 'FERRY_E_INPUT_REQUEST', /no such endpoint/),
      status: 404,
    },
    {
      ...c(
        'wrong method',
        'PATCH',
        '/v1/containers',
        { name: 'n1' },
        'FERRY_E_INPUT_REQUEST',
        /no such endpoint/,
      ),
      status: 404,
    },
  ];
}

const octet = { 'content-type': 'application/octet-stream' };

describe('bad input to the agent API', () => {
  let fx: AgentFixture;
  let cases: ApiCase[] = [];
  before(async () => {
    fx = await agentFixture({ uploadLimitBytes: 64 << 10 });
    const ok = await fx.app.inject({
      method: 'POST',
      url: '/v1/containers',
      payload: { name: 'web', command: cmd, net: 'own', ip: '10.0.0.50' },
    });
    assert.equal(ok.statusCode, 201, ok.body);
    const prep = await fx.app.inject({
      method: 'POST',
      url: '/v1/incoming',
      payload: { id: PREPARED, name: 'arriving', from: 'b', record: record('arriving') },
    });
    assert.equal(prep.statusCode, 201, prep.body);
    const stream = await bundleStream({ 'config.json': '{}', 'rootfs/etc/motd': long(5000) });
    const big = await bundleStream({ 'config.json': '{}', 'rootfs/big': long(100 << 10) });
    cases = apiCases(stream, big);
  });
  after(() => fx.close());

  it('at least 60 cases', (t) => {
    assert.ok(cases.length >= 60, `${cases.length}`);
    t.diagnostic(`${cases.length} agent API cases`);
  });

  it('each answered with its documented code and status, nothing changed', async () => {
    for (const k of cases) {
      const before = fx.snapshot();
      const res = await fx.app.inject({
        method: k.method,
        url: k.url,
        ...(k.raw !== undefined
          ? { payload: k.raw, headers: k.headers ?? {} }
          : k.json !== undefined
            ? { payload: JSON.stringify(k.json), headers: { 'content-type': 'application/json' } }
            : {}),
      });
      const err = (res.json() as { error?: { code: string; message: string } }).error;
      assert.ok(err, `${k.what}: no error (${res.statusCode} ${res.body.slice(0, 200)})`);
      assert.equal(err.code, k.code, `${k.what}: ${err.code} ${err.message}`);
      assert.equal(res.statusCode, k.status ?? ERRORS[k.code].status, `${k.what}: status`);
      if (k.re) assert.match(err.message, k.re, k.what);
      assert.doesNotMatch(
        err.message,
        /ferry-badinput|\/tmp\/|\/var\/lib/,
        `${k.what}: a host path in the answer`,
      );
      assert.deepEqual(fx.snapshot(), before, `${k.what}: the agent's state changed`);
    }
  });

  it('a truncated or corrupted image stream is refused; the abort that follows leaves nothing', async () => {
    const stream = await bundleStream({ 'config.json': '{}', 'rootfs/etc/motd': long(5000) });
    const corrupted = Buffer.from(stream);
    corrupted[corrupted.length - 40]! ^= 0xff;
    for (const [what, body] of [
      ['truncated', stream.subarray(0, stream.length - 100)],
      ['corrupted', corrupted],
      ['garbage', Buffer.from('GET / HTTP/1.1\r\n\r\n')],
    ] as const) {
      const before = fx.snapshot();
      const id = 'm0000000000aa';
      const prep = await fx.app.inject({
        method: 'POST',
        url: '/v1/incoming',
        payload: { id, name: 'moving', from: 'b', record: record('moving') },
      });
      assert.equal(prep.statusCode, 201, prep.body);
      for (const part of ['bundle', 'images']) {
        const r = await fx.app.inject({
          method: 'PUT',
          url: `/v1/incoming/${id}/${part}`,
          payload: body,
          headers: octet,
        });
        assert.equal(r.json().error?.code, 'FERRY_E_TRANSFER_CORRUPT', `${what} ${part}: ${r.body}`);
        assert.equal(r.statusCode, 400);
      }
      const restore = await fx.app.inject({
        method: 'POST',
        url: `/v1/incoming/${id}/restore`,
        payload: { neighbours: [] },
      });
      assert.notEqual(restore.statusCode, 200, `${what}: restored from a broken stream`);
      assert.equal((await fx.app.inject({ method: 'DELETE', url: `/v1/incoming/${id}` })).statusCode, 204);
      assert.deepEqual(fx.snapshot(), before, `${what}: the aborted migration left something`);
      // a replay of the aborted migration's parts finds nothing to write into
      const replay = await fx.app.inject({
        method: 'PUT',
        url: `/v1/incoming/${id}/images`,
        payload: stream,
        headers: octet,
      });
      assert.equal(replay.json().error.code, 'FERRY_E_MIGRATION_UNKNOWN');
    }
  });

  it('a full disk answers FERRY_E_NO_SPACE (507) and leaves nothing of the container', async () => {
    const before = fx.snapshot();
    const runc = fx.host.runc as unknown as { run: (id: string) => Promise<void> };
    const real = runc.run;
    runc.run = async () => {
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    };
    try {
      const res = await fx.app.inject({
        method: 'POST',
        url: '/v1/containers',
        payload: { name: 'full', command: cmd },
      });
      assert.equal(res.statusCode, 507, res.body);
      assert.equal(res.json().error.code, 'FERRY_E_NO_SPACE');
      assert.match(res.json().error.hint, /free space/);
    } finally {
      runc.run = real;
    }
    assert.deepEqual(fx.snapshot(), before);
  });

  it('an upload followed by its create is consumed; one never followed is swept', async () => {
    const before = fx.snapshot();
    const stream = await bundleStream({ 'config.json': '{}' });
    const up = await fx.app.inject({
      method: 'PUT',
      url: '/v1/uploads/later',
      payload: stream,
      headers: octet,
    });
    assert.equal(up.statusCode, 200, up.body);
    assert.notDeepEqual(fx.snapshot(), before);
    // (a config.json of {} is no usable bundle: the create fails, and the upload is gone with it)
    const res = await fx.app.inject({
      method: 'POST',
      url: '/v1/containers',
      payload: { name: 'later', upload: true },
    });
    assert.equal(res.json().error.code, 'FERRY_E_BUNDLE_INVALID', res.body);
    assert.deepEqual(fx.snapshot(), before, 'a failed create leaves no upload behind');
    const again = await fx.app.inject({
      method: 'POST',
      url: '/v1/containers',
      payload: { name: 'later', upload: true },
    });
    assert.equal(again.json().error.code, 'FERRY_E_INPUT_REQUEST', 'an upload is taken once');
  });
});

describe('bad input to the controller API', () => {
  let fx: ControllerFixture;
  before(async () => {
    fx = await controllerFixture();
    const hb = await fx.app.inject({
      method: 'POST',
      url: '/v1/heartbeat',
      payload: {
        host: 'a',
        address: '10.0.0.1',
        port: 7470,
        capacity: { cores: 1, memoryBytes: 1 << 30 },
        seq: 1,
        full: true,
        containers: [{ name: 'web', cpuPercent: 1, memoryBytes: 1, status: 'running', ip: '10.0.0.50' }],
        removed: [],
      },
    });
    assert.equal(hb.statusCode, 200, hb.body);
  });
  after(() => fx.close());

  const cases: ApiCase[] = [
    {
      what: 'heartbeat: negative seq',
      method: 'POST',
      url: '/v1/heartbeat',
      json: { host: 'a' },
      code: 'FERRY_E_INPUT_REQUEST',
    },
    {
      what: 'rebalance: target 0',
      method: 'POST',
      url: '/v1/rebalance',
      json: { targetPercent: 0 },
      code: 'FERRY_E_INPUT_REQUEST',
    },
    {
      what: 'rebalance: target 101',
      method: 'POST',
      url: '/v1/rebalance',
      json: { targetPercent: 101 },
      code: 'FERRY_E_INPUT_REQUEST',
    },
    {
      what: 'drain: host ../a',
      method: 'POST',
      url: '/v1/drain',
      json: { host: '../a' },
      code: 'FERRY_E_INPUT_REQUEST',
    },
    {
      what: 'drain: unknown host',
      method: 'POST',
      url: '/v1/drain',
      json: { host: 'zz' },
      code: 'FERRY_E_HOST_UNKNOWN',
    },
    {
      what: 'place: name with ..',
      method: 'POST',
      url: '/v1/place',
      json: { name: 'a..b' },
      code: 'FERRY_E_INPUT_NAME',
    },
    { what: 'batch: not a batch id', method: 'GET', url: '/v1/batches/x', code: 'FERRY_E_INPUT_REQUEST' },
    {
      what: 'claim: a name in use',
      method: 'POST',
      url: '/v1/claims',
      json: { token: 'r0123456789abcdef', name: 'web', host: 'b' },
      code: 'FERRY_E_CONTAINER_EXISTS',
    },
    {
      what: 'claim: an address in use',
      method: 'POST',
      url: '/v1/claims',
      json: { token: 'r0123456789abcdef', name: 'n', host: 'b', ip: '10.0.0.50' },
      code: 'FERRY_E_ADDRESS_TAKEN',
    },
    {
      what: "claim: a host's address",
      method: 'POST',
      url: '/v1/claims',
      json: { token: 'r0123456789abcdef', name: 'n', host: 'b', ip: '10.0.0.1' },
      code: 'FERRY_E_ADDRESS_TAKEN',
    },
  ];

  it('each answered with its documented code', async () => {
    for (const k of cases) {
      const res = await fx.app.inject({
        method: k.method,
        url: k.url,
        ...(k.json !== undefined ? { payload: k.json as object } : {}),
      });
      const err = res.json().error;
      assert.ok(err, `${k.what}: ${res.statusCode} ${res.body}`);
      assert.equal(err.code, k.code, `${k.what}: ${err.message}`);
      assert.equal(res.statusCode, ERRORS[k.code].status, k.what);
    }
  });

  it('a claim holds a name until a heartbeat shows the container, then the picture does', async () => {
    const claim = (token: string, name: string) =>
      fx.app.inject({ method: 'POST', url: '/v1/claims', payload: { token, name, host: 'a' } });
    assert.equal((await claim('r0000000000000001', 'race')).statusCode, 201);
    const second = await claim('r0000000000000002', 'race');
    assert.equal(second.statusCode, 409);
    assert.match(second.json().error.message, /being created on host a/);
    assert.equal(
      (await claim('r0000000000000001', 'race')).statusCode,
      201,
      'the same token may claim again',
    );
  });
});

// ---- the CLI ----

const FERRY = new URL('../bin/ferry', import.meta.url).pathname;
const run = promisify(execFile);

interface CliCase {
  args: string[];
  code: Code;
  exit?: number;
  re?: RegExp;
}

const CLI_CASES: CliCase[] = [
  { args: ['migrate', 'web', '--to', 'b', '--max-downtime', '0'], code: 'FERRY_E_INPUT_ARGS' },
  {
    args: ['migrate', 'web', '--to', 'b', '--max-downtime', '600001'],
    code: 'FERRY_E_INPUT_ARGS',
    re: /--max-downtime 600001/,
  },
  {
    args: ['migrate', 'web', '--to', 'b', '--threshold', '1e99'],
    code: 'FERRY_E_INPUT_ARGS',
    re: /--threshold/,
  },
  {
    args: ['migrate', 'web', '--to', 'b', '--threshold', '2000000000000'],
    code: 'FERRY_E_INPUT_ARGS',
    re: /--threshold/,
  },
  {
    args: ['migrate', 'web', '--to', 'b', '--max-rounds', '101'],
    code: 'FERRY_E_INPUT_ARGS',
    re: /--max-rounds/,
  },
  { args: ['migrate', 'web', '--to', 'b', '--streams', '17'], code: 'FERRY_E_INPUT_ARGS', re: /--streams/ },
  { args: ['migrate', 'web', '--to', 'b', '--streams', '1.5'], code: 'FERRY_E_INPUT_ARGS' },
  { args: ['migrate', 'web', '--to', 'b', '--streams', '-1'], code: 'FERRY_E_INPUT_ARGS' },
  { args: ['migrate', 'web', '--to', 'b', '--strategy', 'teleport'], code: 'FERRY_E_INPUT_ARGS', exit: 2 },
  { args: ['migrate', 'we/b', '--to', 'b'], code: 'FERRY_E_INPUT_NAME' },
  { args: ['migrate', 'web', '--to', '../b'], code: 'FERRY_E_INPUT_NAME' },
  { args: ['run', '--name', 'x/../y', '--', '/bin/true'], code: 'FERRY_E_INPUT_NAME' },
  { args: ['run', '--name', long(65), '--', '/bin/true'], code: 'FERRY_E_INPUT_NAME' },
  { args: ['run', '--name', 'ok'], code: 'FERRY_E_INPUT_ARGS', re: /give a command/ },
  {
    args: ['run', '--name', 'ok', '--bundle', '/tmp', '--', '/bin/true'],
    code: 'FERRY_E_INPUT_ARGS',
    re: /not both/,
  },
  {
    args: ['run', '--name', 'ok', '--ip', '300.1.1.1', '--', '/bin/true'],
    code: 'FERRY_E_INPUT_ARGS',
    re: /not an IPv4/,
  },
  {
    args: ['run', '--name', 'ok', '--net', 'none', '--ip', '10.9.0.60', '--', '/bin/true'],
    code: 'FERRY_E_INPUT_ARGS',
  },
  {
    args: ['run', '--name', 'ok', '--ip', '10.99.0.5', '--', '/bin/true'],
    code: 'FERRY_E_INPUT_ARGS',
    re: /not on the LAN 10\.9\.0\.0\/24/,
  },
  {
    args: ['run', '--name', 'ok', '--ip', '10.9.0.255', '--', '/bin/true'],
    code: 'FERRY_E_INPUT_ARGS',
    re: /broadcast/,
  },
  {
    args: ['run', '--name', 'ok', '--ip', '10.9.0.2', '--', '/bin/true'],
    code: 'FERRY_E_ADDRESS_TAKEN',
    re: /host a/,
  },
  {
    args: ['run', '--name', 'ok', '--ip', '10.9.0.100', '--', '/bin/true'],
    code: 'FERRY_E_ADDRESS_TAKEN',
    re: /client/,
  },
  {
    args: ['run', '--name', 'ok', '--ip', '10.9.0.1', '--', '/bin/true'],
    code: 'FERRY_E_ADDRESS_TAKEN',
    re: /gateway/,
  },
  {
    args: ['run', '--name', 'ok', '--net', 'bridge', '--', '/bin/true'],
    code: 'FERRY_E_INPUT_ARGS',
    exit: 2,
  },
  { args: ['run', '--host', 'zz', '--name', 'ok', '--', '/bin/true'], code: 'FERRY_E_HOST_UNKNOWN' },
  { args: ['rm', 'a..b'], code: 'FERRY_E_INPUT_NAME' },
  { args: ['rebalance', '--target', '0'], code: 'FERRY_E_INPUT_ARGS' },
  { args: ['rebalance', '--target', '0x10'], code: 'FERRY_E_INPUT_ARGS' },
  { args: ['rebalance', '--target', '101'], code: 'FERRY_E_INPUT_ARGS' },
  { args: ['check', '--host', '../a'], code: 'FERRY_E_INPUT_NAME' },
  { args: ['testbed', 'up', '--rate', '100'], code: 'FERRY_E_INPUT_ARGS', re: /--rate/ },
  { args: ['testbed', 'up', '--rate', 'zz=1gbit'], code: 'FERRY_E_HOST_UNKNOWN' },
  { args: ['--cluster', '/nonexistent/cluster.json', 'ps'], code: 'FERRY_E_TESTBED_NONE' },
  { args: ['teleport'], code: 'FERRY_E_INPUT_ARGS', exit: 2 },
  {
    args: ['--cluster', 'NOCERT', 'ps'],
    code: 'FERRY_E_TESTBED_NONE',
    re: /client certificate of cluster nowhere/,
  },
];

describe('bad input to the CLI: refused before anything is printed or sent', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-badcli-'));
    // agents nobody can reach: a refusal that asked one would say FERRY_E_HOST_UNREACHABLE instead
    const cluster = {
      name: 'nowhere',
      tls: { ca: join(dir, 'ca.crt'), cert: join(dir, 'cli.crt'), key: join(dir, 'cli.key') },
      hosts: [
        { name: 'a', address: '10.9.0.2', port: 1 },
        { name: 'b', address: '10.9.0.3', port: 1 },
      ],
      client: { netns: 'none', address: '10.9.0.100' },
      lan: { subnet: '10.9.0', prefixLen: 24 },
    };
    writeFileSync(join(dir, 'cluster.json'), JSON.stringify(cluster));
    for (const f of ['ca.crt', 'cli.crt', 'cli.key']) writeFileSync(join(dir, f), 'not a certificate\n');
    writeFileSync(
      join(dir, 'nocert.json'),
      JSON.stringify({ ...cluster, tls: { ca: '/x', cert: '/x', key: '/x' } }),
    );
    env = { ...process.env, FERRY_CLUSTER: join(dir, 'cluster.json'), FERRY_STATE: dir };
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it(`${CLI_CASES.length} command lines, each with its code, one error line, no "migrating"`, async () => {
    const results = await pool(CLI_CASES, 6, async (k) => {
      const args = k.args.map((a) => (a === 'NOCERT' ? join(dir, 'nocert.json') : a));
      const r = await run(FERRY, args, { env, timeout: 20_000 }).then(
        (x) => ({ code: 0, ...x }),
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
      return { k, r };
    });
    for (const { k, r } of results) {
      const what = k.args.join(' ');
      // docs/errors.md, exit status: 2 for a command line refused as such, 1 for any other refusal
      const usage = k.code === 'FERRY_E_INPUT_ARGS' || k.code === 'FERRY_E_INPUT_NAME';
      assert.equal(r.code, k.exit ?? (usage ? 2 : 1), `${what}: exit ${r.code}\n${r.stderr}`);
      const lines = r.stderr.split('\n').filter((l) => l.startsWith('ferry: '));
      assert.equal(lines.length, 1, `${what}: ${r.stderr}`);
      assert.match(lines[0]!, new RegExp(`^ferry: ${k.code}: `), what);
      if (k.re) assert.match(lines[0]!, k.re, what);
      assert.doesNotMatch(`${r.stdout}${r.stderr}`, /migrating/, `${what}: printed as if it started`);
    }
  });
});
