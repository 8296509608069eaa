import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FerryError } from '../core/errors.ts';
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
