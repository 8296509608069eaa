import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { MigrationJournal, type SourceJournalEntry, sourceRecovery } from './journal.ts';

const peer = { name: 'b', address: '10.0.0.2', port: 7470 };
const entry = (
  step: SourceJournalEntry['step'],
  extra: Partial<SourceJournalEntry> = {},
): SourceJournalEntry => ({
  id: 'm0123456789ab',
  role: 'source',
  container: 'web',
  peer,
  step,
  updatedAt: 1000,
  ...extra,
});

test('journal: entries are written 0600, atomically, listed after a restart; junk is dropped', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-journal-'));
  try {
    const j = new MigrationJournal(dir, () => 42);
    const e = await j.write({ id: 'm0123456789ab', role: 'source', container: 'web', peer, step: 'planned' });
    assert.equal(e.updatedAt, 42);
    await j.step(e, 'frozen');
    assert.equal((await stat(join(dir, 'm0123456789ab.json'))).mode & 0o777, 0o600);
    await writeFile(join(dir, 'mffffffffffff.json'), '{"half":');
    await writeFile(join(dir, 'm0123456789ab.json.9.1.tmp'), 'x');
    const again = await new MigrationJournal(dir).list();
    assert.deepEqual(
      again.map((x) => [x.id, x.step]),
      [['m0123456789ab', 'frozen']],
    );
    assert.deepEqual(await readdir(dir), ['m0123456789ab.json']);
    await j.remove('m0123456789ab');
    assert.deepEqual(await j.list(), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('journal: a name with / or .. is refused before any file is touched', async () => {
  const j = new MigrationJournal('/nonexistent');
  await assert.rejects(j.write({ id: '../x', role: 'source', container: 'web', peer, step: 'planned' }));
});

test('recovery: the destination decides once it answers; the source copy is thawed unless it confirmed', () => {
  assert.equal(sourceRecovery(entry('frozen'), 'committed', 0, 10_000).kind, 'finish');
  assert.equal(sourceRecovery(entry('committed'), undefined, 0, 10_000).kind, 'finish');
  assert.equal(sourceRecovery(entry('restore-requested'), 'uncommitted', 0, 10_000).kind, 'rollback');
  assert.equal(sourceRecovery(entry('commit-sent'), 'unknown', 0, 10_000).kind, 'rollback');
});

test('recovery: an unreachable destination is waited out only while it may hold an uncommitted copy', () => {
  assert.equal(sourceRecovery(entry('prepared'), undefined, 0, 10_000).kind, 'rollback');
  assert.equal(sourceRecovery(entry('frozen'), undefined, 0, 10_000).kind, 'rollback');
  const w = sourceRecovery(entry('restore-requested'), undefined, 5000, 10_000);
  assert.deepEqual(w.kind === 'wait' && w.untilMs, 11_000);
  assert.equal(sourceRecovery(entry('restore-requested'), undefined, 11_000, 10_000).kind, 'rollback');
  // after the commit was sent only the destination can tell: never resumed blindly
  assert.equal(sourceRecovery(entry('commit-sent'), undefined, 1e12, 10_000).kind, 'in-doubt');
});

test('recovery: a destination refusing connections for a few seconds has no agent: rolled back before its deadline', () => {
  // refusing, but not for long yet: still waited
  assert.equal(sourceRecovery(entry('restore-requested'), undefined, 5000, 10_000, 1000).kind, 'wait');
  const r = sourceRecovery(entry('restore-requested'), undefined, 5000, 10_000, 3000);
  assert.equal(r.kind, 'rollback');
  assert.match(r.why, /refuses connections: its agent is gone/);
  // a sent commit has no switch left to kill the copy: still in doubt
  assert.equal(sourceRecovery(entry('commit-sent'), undefined, 5000, 10_000, 60_000).kind, 'in-doubt');
});

test('recovery: post-copy past the point of no return stays on the destination or is reported lost', () => {
  assert.equal(
    sourceRecovery(entry('commit-sent', { pointOfNoReturn: true }), 'uncommitted', 0, 1).kind,
    'finish',
  );
  assert.equal(sourceRecovery(entry('commit-sent', { pointOfNoReturn: true }), undefined, 0, 1).kind, 'lost');
});
