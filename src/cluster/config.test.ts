// The controller config: defaults, unknown fields and wrong types refused naming the file, a round trip.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FerryError } from '../core/errors.ts';
import { CONTROLLER_FILE_DEFAULTS, parseControllerConfig } from './config.ts';

const base = { name: 'ctl', tls: { cert: '/p/c.crt', key: '/p/c.key', ca: '/p/ca.crt' } };

test('the defaults fill everything but the name and the certificates', () => {
  assert.deepEqual(parseControllerConfig(base), { ...CONTROLLER_FILE_DEFAULTS, ...base });
});

test('unknown fields, wrong types and a bad store are refused, naming the file and the field', () => {
  const refused = (raw: unknown, what: RegExp) =>
    assert.throws(
      () => parseControllerConfig(raw, '/etc/ferry/controller.json'),
      (e: unknown) =>
        e instanceof FerryError &&
        e.code === 'FERRY_E_INPUT_ARGS' &&
        e.message.startsWith('/etc/ferry/controller.json: ') &&
        what.test(e.message),
    );
  refused({ ...base, targetPercnt: 50 }, /\/targetPercnt: unknown field/);
  refused({ ...base, targetPercent: 150 }, /\/targetPercent/);
  refused({ ...base, store: { kind: 'redis' } }, /\/store/);
  refused({ ...base, store: { kind: 'sqlite', path: '/x', extra: 1 } }, /\/store/);
  refused({ ...base, strategy: 'teleport' }, /\/strategy/);
  refused({ tls: base.tls }, /\/name/);
  refused('ctl', /not a JSON object/);
});

test('a config round-trips through its schema', () => {
  const full = parseControllerConfig({
    ...base,
    store: { kind: 'etcd', endpoint: 'http://10.0.0.5:2379', prefix: '/ferry/', leaderTtlSeconds: 5 },
    concurrency: 3,
  });
  assert.deepEqual(parseControllerConfig(JSON.parse(JSON.stringify(full))), full);
});
