import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { every } from '../../test/support/exhaustive.ts';
import type { MigrationPhase } from '../migration/types.ts';
import { asFerryError, ERRORS, FerryError, type Phase } from './errors.ts';

const MIGRATION_PHASES = every<MigrationPhase>()(
  'plan',
  'prepare',
  'rounds',
  'checkpoint',
  'transfer',
  'restore',
  'confirm',
  'pages',
  'cleanup',
);
const PHASES = every<Phase>()(
  ...(MIGRATION_PHASES as MigrationPhase[]),
  'input',
  'rollback',
  'run',
  'testbed',
  'agent',
  'check',
);
const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');

test('every error code is documented in docs/errors.md, and nothing undocumented is listed', () => {
  const documented = new Set([...doc.matchAll(/`(FERRY_E_[A-Z_]+)`/g)].map((m) => m[1]));
  for (const code of Object.keys(ERRORS))
    assert.ok(documented.has(code), `${code} missing from docs/errors.md`);
  for (const code of documented) assert.ok(code! in ERRORS, `${code} documented but not in the catalogue`);
});

test('every migration phase has a row in the phase table of docs/errors.md, in order, and no other', () => {
  const section = doc.slice(doc.indexOf('## Migration errors name their phase'));
  const rows = [...section.matchAll(/^\| `([a-z]+)` \| .* \| `(FERRY_E_[A-Z_]+)` \|$/gm)];
  assert.deepEqual(
    rows.map((m) => m[1]),
    [...MIGRATION_PHASES],
  );
  for (const m of rows) assert.ok(m[2]! in ERRORS, `${m[1]}: ${m[2]} is not a code`);
});

test('every other phase an error can carry is named in docs/errors.md', () => {
  for (const p of PHASES) assert.ok(doc.includes(`\`${p}\``), `phase ${p} missing from docs/errors.md`);
});

test('codes follow FERRY_E_<WHAT> and carry an HTTP status', () => {
  for (const [code, e] of Object.entries(ERRORS)) {
    assert.match(code, /^FERRY_E_[A-Z_]+$/);
    assert.ok(e.status >= 400 && e.status < 600);
  }
});

test('FerryError round-trips through JSON with phase and hint', () => {
  const e = new FerryError('FERRY_E_RESTORE_FAILED', 'boom', { phase: 'restore', hint: 'look' });
  const back = FerryError.fromJSON(JSON.parse(JSON.stringify(e.toJSON())));
  assert.equal(back.code, 'FERRY_E_RESTORE_FAILED');
  assert.equal(back.phase, 'restore');
  assert.equal(back.hint, 'look');
  assert.equal(back.status, 500);
});

test('unknown codes from a peer become internal errors; plain errors are wrapped with their cause', () => {
  assert.equal(FerryError.fromJSON({ code: 'NOPE' as never, message: 'x' }).code, 'FERRY_E_INTERNAL');
  const cause = new Error('disk full');
  const w = asFerryError(cause, 'FERRY_E_TRANSFER_FAILED', 'transfer');
  assert.equal(w.code, 'FERRY_E_TRANSFER_FAILED');
  assert.equal(w.phase, 'transfer');
  assert.equal(w.cause, cause);
});
