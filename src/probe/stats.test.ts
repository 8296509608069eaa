import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { gapStats, ProbeStats } from './stats.ts';

describe('gapStats', () => {
  test('fewer than two replies: no gap', () => {
    assert.deepEqual(gapStats([]), { maxGapMs: 0, p99GapMs: 0 });
    assert.deepEqual(gapStats([42]), { maxGapMs: 0, p99GapMs: 0 });
  });

  test('longest gap and nearest-rank p99', () => {
    assert.deepEqual(gapStats([0, 2, 4, 10]), { maxGapMs: 6, p99GapMs: 6 });
    const times = Array.from({ length: 1000 }, (_, i) => i);
    times.push(1049); // one 50 ms gap among 999 gaps of 1 ms
    assert.deepEqual(gapStats(times), { maxGapMs: 50, p99GapMs: 1 });
    const spread = [0];
    for (let i = 1; i <= 100; i++) spread.push((spread[i - 1] as number) + i); // gaps 1..100
    assert.deepEqual(gapStats(spread), { maxGapMs: 100, p99GapMs: 99 });
  });

  test('unsorted input is sorted first and left untouched', () => {
    const times = [10, 0, 4, 2];
    assert.deepEqual(gapStats(times), { maxGapMs: 6, p99GapMs: 6 });
    assert.deepEqual(times, [10, 0, 4, 2]);
  });
});

describe('ProbeStats server values (udp)', () => {
  test('a reordered reply does not read as a jump in the counter', () => {
    const s = new ProbeStats('udp');
    // requests 1..4; the server handles 1, 3, 2, 4 (2 was held during a move): counters 1, 2, 3, 4
    s.trackValue(1, 1);
    s.trackValue(2, 3);
    s.trackValue(3, 2); // reordered: skipped, but counted by the server
    s.trackValue(4, 4);
    const r = s.summary({ target: 'x', intervalMs: 1, startedAt: 0, stoppedAt: 0 });
    assert.equal(r.serverValues?.continuous, true, r.notes.join('; '));
  });

  test('a counter that moves further than the requests sent is a discontinuity', () => {
    const s = new ProbeStats('udp');
    s.trackValue(1, 1);
    s.trackValue(4, 2);
    const r = s.summary({ target: 'x', intervalMs: 1, startedAt: 0, stoppedAt: 0 });
    assert.equal(r.serverValues?.continuous, false);
    assert.equal(r.serverValues?.monotonic, true);
  });

  test('a counter that goes back is neither continuous nor monotonic', () => {
    const s = new ProbeStats('udp');
    s.trackValue(5, 1);
    s.trackValue(2, 2);
    const r = s.summary({ target: 'x', intervalMs: 1, startedAt: 0, stoppedAt: 0 });
    assert.equal(r.serverValues?.monotonic, false);
  });
});
