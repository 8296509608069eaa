import assert from 'node:assert/strict';
import { test } from 'node:test';
import { stopRule } from './stop-rule.ts';

const base = { round: 1, rateBytesPerMs: 100_000, budgetMs: 500, maxRounds: 5 };

test('stops when the round fits the downtime budget at the measured rate', () => {
  assert.deepEqual(stopRule({ ...base, roundBytes: [50_000_000] }), {
    stop: true,
    reason: 'round 1: 50000000 bytes fit the 500 ms budget',
  });
});

test('a slow measured rate counts as the floor rate (tiny rounds time badly)', () => {
  // 50 000 bytes/ms x 500 ms = 25 MB
  assert.equal(stopRule({ ...base, rateBytesPerMs: 1, roundBytes: [25_000_000] }).stop, true);
  assert.equal(stopRule({ ...base, rateBytesPerMs: 1, roundBytes: [25_000_001] }).stop, false);
});

test('--threshold replaces the budget', () => {
  assert.deepEqual(stopRule({ ...base, thresholdBytes: 5000, roundBytes: [4096] }), {
    stop: true,
    reason: 'round 1: 4096 bytes <= --threshold',
  });
  // would fit the budget, but not the threshold
  assert.deepEqual(stopRule({ ...base, thresholdBytes: 5000, roundBytes: [8192] }), { stop: false });
});

test('stops when the dirty set stopped shrinking by 10 %', () => {
  assert.deepEqual(stopRule({ ...base, round: 2, thresholdBytes: 1, roundBytes: [1000, 901] }), {
    stop: true,
    reason: 'round 2: the dirty set stopped shrinking (1000 -> 901 bytes)',
  });
  assert.deepEqual(stopRule({ ...base, round: 2, thresholdBytes: 1, roundBytes: [1000, 900] }), {
    stop: false,
  });
});

test('stops at --max-rounds when nothing else did', () => {
  assert.deepEqual(
    stopRule({ ...base, round: 5, thresholdBytes: 1, roundBytes: [5000, 4000, 3000, 2000, 1000] }),
    {
      stop: true,
      reason: '--max-rounds 5 reached',
    },
  );
  assert.deepEqual(stopRule({ ...base, round: 4, thresholdBytes: 1, roundBytes: [5000, 4000, 3000, 2000] }), {
    stop: false,
  });
});

test('fitting the budget wins over the other reasons', () => {
  assert.match(
    (
      stopRule({ ...base, round: 5, thresholdBytes: 2000, roundBytes: [1000, 999, 998, 997, 996] }) as {
        reason: string;
      }
    ).reason,
    /<= --threshold/,
  );
});
