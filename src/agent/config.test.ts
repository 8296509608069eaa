// The agent config: the bundle policy's defaults and refusals; the deadlines (defaults from the engine, one may be
// set alone, FERRY_DEADLINES overrides); unknown fields and wrong types refused naming the file; advertise.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { FerryError } from '../core/errors.ts';
import { DEFAULT_DEADLINES } from '../migration/defaults.ts';
import { DEFAULT_BUNDLE_POLICY } from '../runtime/bundle-policy.ts';
import { advertisedAddress, loadAgentConfig, parseAgentConfig } from './config.ts';

const base = {
  host: 'a',
  advertise: '10.0.0.2',
  tls: { cert: '/p/a.crt', key: '/p/a.key', ca: '/p/ca.crt' },
};

test('the bundle policy defaults to refusing everything the policy knows', () => {
  assert.deepEqual(parseAgentConfig(base, {}).bundlePolicy, DEFAULT_BUNDLE_POLICY);
});

test('bundle policy exceptions default field by field', () => {
  const cfg = parseAgentConfig({ ...base, bundlePolicy: { allowMounts: ['/srv/data'] } }, {});
  assert.deepEqual(cfg.bundlePolicy, {
    allowHooks: false,
    allowMounts: ['/srv/data'],
    allowCapabilities: [],
    allowDevices: false,
  });
});

test('invalid bundle policies are refused at start-up', () => {
  const bad = (bundlePolicy: unknown, what: RegExp) =>
    assert.throws(
      () => parseAgentConfig({ ...base, bundlePolicy }, {}),
      (e: unknown) => e instanceof FerryError && e.code === 'FERRY_E_INPUT_ARGS' && what.test(e.message),
    );
  bad({ allowHooks: 'yes' }, /bundlePolicy\/allowHooks/);
  bad({ allowMounts: ['srv/data'] }, /bundlePolicy\/allowMounts/);
  bad({ allowMounts: ['/srv/../etc'] }, /not a plain absolute path/);
  bad({ allowMounts: ['/srv//data'] }, /not a plain absolute path/);
  bad({ allowCapabilities: ['SYS_ADMIN'] }, /bundlePolicy\/allowCapabilities/);
  bad({ allowDevice: true }, /bundlePolicy/);
});

test('deadlines: the engine defaults, one set alone keeps the others, FERRY_DEADLINES goes over both', () => {
  assert.deepEqual(parseAgentConfig(base, {}).deadlines, DEFAULT_DEADLINES);
  const one = parseAgentConfig({ ...base, deadlines: { commitMs: 5000 } }, {}).deadlines;
  assert.deepEqual(one, { ...DEFAULT_DEADLINES, commitMs: 5000 });
  const env = parseAgentConfig(
    { ...base, deadlines: { commitMs: 5000 } },
    { FERRY_DEADLINES: '{"freezeMs":9000}' },
  ).deadlines;
  assert.deepEqual(env, { ...DEFAULT_DEADLINES, commitMs: 5000, freezeMs: 9000 });
});

test('deadlines: out of range or not JSON is refused with FERRY_E_INPUT_ARGS', () => {
  const code = (c: string) => (err: unknown) => (err as { code?: string }).code === c;
  assert.throws(
    () => parseAgentConfig({ ...base, deadlines: { freezeMs: 5 } }, {}),
    code('FERRY_E_INPUT_ARGS'),
  );
  assert.throws(() => parseAgentConfig(base, { FERRY_DEADLINES: '{' }), code('FERRY_E_INPUT_ARGS'));
});

test('unknown fields, wrong types and a non-object are refused, naming the file and the field', () => {
  const refused = (raw: unknown, what: RegExp) =>
    assert.throws(
      () => parseAgentConfig(raw, {}, '/etc/ferry/agent.json'),
      (e: unknown) =>
        e instanceof FerryError &&
        e.code === 'FERRY_E_INPUT_ARGS' &&
        e.message.startsWith('/etc/ferry/agent.json: ') &&
        what.test(e.message),
    );
  refused({ ...base, listne: { port: 1 } }, /\/listne: unknown field/);
  refused({ ...base, listen: { address: '10.0.0.2', port: 7470, prot: 1 } }, /\/listen\/prot: unknown field/);
  refused({ ...base, heartbeat: { intervalMs: 'often' } }, /\/heartbeat/);
  refused({ ...base, logLevel: 'loud' }, /\/logLevel/);
  refused({ ...base, listen: { address: '10.0.0.2', port: 70000 } }, /\/listen\/port/);
  refused([base], /not a JSON object/);
  refused({ tls: base.tls }, /\/host/);
});

test('advertise: the listen address unless that is 0.0.0.0, when it must be given', () => {
  const { advertise: _, ...noAdvertise } = base;
  const at = (raw: object) => advertisedAddress(parseAgentConfig({ ...noAdvertise, ...raw }, {}));
  assert.equal(at({ listen: { address: '10.0.0.4', port: 7470 } }), '10.0.0.4');
  assert.equal(at({ advertise: '10.0.0.2' }), '10.0.0.2');
  assert.equal(parseAgentConfig({ ...noAdvertise, advertise: '10.0.0.2' }, {}).listen.address, '0.0.0.0');
  assert.throws(
    () => parseAgentConfig(noAdvertise, {}),
    /\/advertise is missing: an agent listening on 0\.0\.0\.0/,
  );
  assert.throws(() => parseAgentConfig({ ...base, advertise: '0.0.0.0' }, {}), /\/advertise 0\.0\.0\.0/);
  assert.throws(() => parseAgentConfig({ ...base, advertise: 'a.example' }, {}), /\/advertise a\.example/);
});

test('a config round-trips through its schema: what parses, written out, parses to the same', () => {
  const full = parseAgentConfig(
    {
      ...base,
      advertise: '10.0.0.2',
      peers: [{ name: 'b', address: '10.0.0.3', port: 7470 }],
      controller: { name: 'ctl', address: '10.0.0.1', port: 7480 },
      capacity: { cores: 2, memoryBytes: 1 << 30 },
      criu: { ghostLimitMiB: 16 },
    },
    {},
  );
  assert.deepEqual(parseAgentConfig(JSON.parse(JSON.stringify(full)), {}), full);
});

test('loadAgentConfig: a missing file and a file that is not JSON name the file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-agent-config-'));
  try {
    await assert.rejects(
      loadAgentConfig(join(dir, 'nope.json'), {}),
      /cannot read the agent config .*nope\.json: ENOENT/,
    );
    await writeFile(join(dir, 'bad.json'), '{"host": "a",');
    await assert.rejects(loadAgentConfig(join(dir, 'bad.json'), {}), /bad\.json: not JSON/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('FERRY_KEEP_LOGS: 0, false or empty is off, anything else on; unset leaves the config file its say', () => {
  const keep = (env: NodeJS.ProcessEnv, raw: object = base) => parseAgentConfig(raw, env).keepLogs;
  assert.equal(keep({}), false);
  assert.equal(keep({}, { ...base, keepLogs: true }), true);
  for (const off of ['0', 'false', 'FALSE', '', ' 0 '])
    assert.equal(keep({ FERRY_KEEP_LOGS: off }), false, off);
  for (const on of ['1', 'true', 'yes', 'on']) assert.equal(keep({ FERRY_KEEP_LOGS: on }), true, on);
  assert.equal(
    keep({ FERRY_KEEP_LOGS: '0' }, { ...base, keepLogs: true }),
    false,
    'the environment goes over',
  );
});
