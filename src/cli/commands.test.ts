// What `ferry hosts` says of a certificate's expiry.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { expiresIn } from './commands.ts';

test('a certificate expiry reads as its date and the days left, or EXPIRED', () => {
  const now = Date.parse('2026-12-01T12:00:00Z');
  assert.equal(expiresIn('2027-03-01T12:00:00.000Z', now), '2027-03-01 (in 90 days)');
  assert.equal(expiresIn('2026-12-02T13:00:00.000Z', now), '2026-12-02 (in 1 day)');
  assert.equal(expiresIn('2026-12-01T13:00:00.000Z', now), '2026-12-01 (in 0 days)');
  assert.equal(expiresIn('2026-11-30T12:00:00.000Z', now), 'EXPIRED 2026-11-30');
});
