// The agent config: the bundle policy's defaults and refusals; the deadlines (defaults from the engine, one may be
// set alone, FERRY_DEADLINES overrides).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FerryError } from '../core/errors.ts';
import { DEFAULT_DEADLINES } from '../migration/defaults.ts';
import { DEFAULT_BUNDLE_POLICY } from '../runtime/bundle-policy.ts';
import { parseAgentConfig } from './config.ts';

const base = {
  host: 'a',
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
