// The migrations an agent runs, as their callers see them: the id from the first event, the phase, the report.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { MigrationEvent, MigrationReport } from '../api/types.ts';
import { FerryError } from '../core/errors.ts';
import { MigrationStatuses } from './migrations.ts';

test('a migration is known by the id of its first event, follows its phases, and keeps its report', () => {
  const statuses = new MigrationStatuses();
  const seen: MigrationEvent[] = [];
  const emit = statuses.track('web', 'b', (e) => seen.push(e));
  emit({ type: 'started', id: 'm000000000001' });
  assert.deepEqual(statuses.get('m000000000001'), {
    id: 'm000000000001',
    name: 'web',
    to: 'b',
    state: 'running',
    phase: 'plan',
  });
  emit({ type: 'phase', phase: 'transfer', state: 'start' });
  assert.equal(statuses.get('m000000000001').phase, 'transfer');
  const report = { ok: true } as MigrationReport;
  emit({ type: 'result', report });
  assert.equal(statuses.get('m000000000001').state, 'done');
  assert.equal(statuses.get('m000000000001').report, report);
  assert.equal(seen.length, 3, 'every event still reaches the caller');
});

test('an id this agent never ran (or ran before a restart) is FERRY_E_MIGRATION_UNKNOWN', () => {
  assert.throws(
    () => new MigrationStatuses().get('m000000000009'),
    (e: unknown) => e instanceof FerryError && e.code === 'FERRY_E_MIGRATION_UNKNOWN',
  );
});
