import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ProcessInfo } from '../api/dashboard.ts';
import type { MigrationRecord } from '../api/types.ts';
import { buildTree, containerMatches, foldProgress, freezeSeries, outcomeOf, visiblePids } from './model.ts';

const proc = (pid: number, ppid: number, comm: string, cmdline = comm, nsPid?: number): ProcessInfo => ({
  pid,
  ppid,
  comm,
  cmdline,
  state: 'S',
  rssBytes: 0,
  threads: 1,
  ...(nsPid !== undefined ? { nsPid } : {}),
});

const LIST = [
  proc(100, 50, 'sh', 'sh -c serve', 1),
  proc(101, 100, 'python3', 'python3 server.py', 2),
  proc(102, 100, 'sleep', 'sleep 100', 3),
  proc(103, 101, 'worker', 'python3 worker', 4),
];

test('buildTree: the init is the root, every other process under its parent', () => {
  const roots = buildTree(LIST);
  assert.deepEqual(
    roots.map((r) => r.p.pid),
    [100],
  );
  assert.deepEqual(
    roots[0]?.children.map((c) => c.p.pid),
    [101, 102],
  );
  assert.deepEqual(
    roots[0]?.children[0]?.children.map((c) => c.p.pid),
    [103],
  );
});

test('filter: by name, command or pid (host or in the container); a match shows with its ancestors', () => {
  assert.deepEqual([...visiblePids(LIST, 'worker')].sort(), [100, 101, 103]);
  assert.deepEqual([...visiblePids(LIST, '102')].sort(), [100, 102]);
  assert.deepEqual([...visiblePids(LIST, '3')].sort(), [100, 102], 'a number is a pid, not a substring');
  assert.deepEqual([...visiblePids(LIST, 'SERVE')].sort(), [100, 101]);
  assert.ok(containerMatches('web', LIST, 'sleep'));
  assert.ok(containerMatches('web', undefined, 'we'));
  assert.ok(!containerMatches('web', LIST, 'redis'));
  assert.ok(containerMatches('web', LIST, '  '));
});

test('foldProgress: phases, bytes and a rate from consecutive events', () => {
  const ev = (event: Parameters<typeof foldProgress>[1]['event'], at: number) => ({
    id: 'm',
    container: 'web',
    event,
    at,
  });
  let p = foldProgress(undefined, ev({ type: 'phase', phase: 'plan', state: 'start' }, 0));
  p = foldProgress(p, ev({ type: 'phase', phase: 'plan', state: 'end', ms: 12 }, 12));
  p = foldProgress(p, ev({ type: 'phase', phase: 'transfer', state: 'start' }, 20));
  p = foldProgress(p, ev({ type: 'progress', phase: 'transfer', bytes: 1000, total: 4000 }, 1000));
  p = foldProgress(p, ev({ type: 'progress', phase: 'transfer', bytes: 3000, total: 4000 }, 2000));
  assert.equal(p.phase, 'transfer');
  assert.equal(p.bytes, 3000);
  assert.equal(p.total, 4000);
  assert.equal(p.rate, 2000);
  assert.deepEqual(p.done, [{ name: 'plan', ms: 12 }]);
  // post-copy: the source's rate and the pages still to come, down to none
  p = foldProgress(p, ev({ type: 'phase', phase: 'pages', state: 'start' }, 2100));
  p = foldProgress(
    p,
    ev({ type: 'progress', phase: 'pages', bytes: 0, total: 8192, pagesTotal: 2, pagesRemaining: 2 }, 2200),
  );
  assert.equal(p.pagesRemaining, 2);
  p = foldProgress(
    p,
    ev(
      {
        type: 'progress',
        phase: 'pages',
        bytes: 8192,
        total: 8192,
        pagesTotal: 2,
        pagesRemaining: 0,
        rate: 9,
      },
      2300,
    ),
  );
  assert.equal(p.phase, 'pages');
  assert.equal(p.pagesRemaining, 0);
  assert.equal(p.pagesTotal, 2);
  assert.equal(p.rate, 9);
});

const rec = (over: Partial<MigrationRecord>): MigrationRecord => ({
  id: 'x',
  container: 'web',
  from: 'a',
  to: 'b',
  status: 'done',
  reason: 'asked for',
  createdAt: 0,
  ...over,
});

test('outcomeOf: the figures of a success; the code, phase and source state of a failure', () => {
  const ok = outcomeOf(
    rec({
      freezeMs: 310,
      report: { strategy: 'cold', totalMs: 900, memoryBytes: 8 << 20, phases: [{ name: 'plan', ms: 5 }] },
    }),
  );
  assert.deepEqual([ok.ok, ok.freezeMs, ok.totalMs, ok.strategy], [true, 310, 900, 'cold']);
  const failed = outcomeOf(
    rec({
      status: 'failed',
      report: {
        error: { code: 'FERRY_E_HOST_UNREACHABLE', phase: 'plan', message: 'b does not answer' },
        rollback: { sourceRunning: true, destinationCleaned: true },
      },
    }),
  );
  assert.deepEqual(failed.error, {
    code: 'FERRY_E_HOST_UNREACHABLE',
    phase: 'plan',
    message: 'b does not answer',
  });
  assert.equal(failed.sourceRunning, true);
  const refused = outcomeOf(rec({ status: 'failed', error: 'FERRY_E_CONTAINER_BUSY: web is busy' }));
  assert.deepEqual(refused.error, { code: 'FERRY_E_CONTAINER_BUSY', phase: 'input', message: 'web is busy' });
});

test('freezeSeries: one series per strategy over memory, gaps elsewhere', () => {
  const s = freezeSeries([
    rec({ id: '1', freezeMs: 300, report: { strategy: 'cold', memoryBytes: 64 << 20 } }),
    rec({ id: '2', freezeMs: 350, report: { strategy: 'postcopy', memoryBytes: 16 << 20 } }),
    rec({ id: '3', status: 'failed', report: { strategy: 'cold', memoryBytes: 1 << 20 } }),
  ]);
  assert.deepEqual(s.strategies, ['cold', 'postcopy']);
  assert.deepEqual(s.xs, [16, 64]);
  assert.deepEqual(s.ys, [
    [null, 300],
    [350, null],
  ]);
});
