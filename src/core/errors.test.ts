import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { asFerryError, ERRORS, FerryError, inPhase } from './errors.ts';

test('every error code is documented in docs/errors.md, and nothing undocumented is listed', () => {
  const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  const documented = new Set([...doc.matchAll(/`(FERRY_E_[A-Z_]+)`/g)].map((m) => m[1]));
  for (const code of Object.keys(ERRORS))
    assert.ok(documented.has(code), `${code} missing from docs/errors.md`);
  for (const code of documented) assert.ok(code! in ERRORS, `${code} documented but not in the catalogue`);
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
  assert.equal(inPhase(w, 'restore').phase, 'restore');
});
