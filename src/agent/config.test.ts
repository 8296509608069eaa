// The agent config's deadlines: defaults from the engine, one may be set alone, FERRY_DEADLINES overrides.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_DEADLINES } from '../migration/defaults.ts';
import { parseAgentConfig } from './config.ts';

const base = {
  host: 'a',
  tls: { cert: 'c', key: 'k', ca: 'ca' },
};

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
