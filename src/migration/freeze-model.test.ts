import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_FREEZE_MODEL, FreezeCalibration, predictFreezeMs } from './freeze-model.ts';

const MiB = 1 << 20;

test('without measurements the prediction is the default model', () => {
  const c = new FreezeCalibration();
  assert.deepEqual(c.model(), DEFAULT_FREEZE_MODEL);
});

test('measured freezes calibrate the fixed part, the memory rate and post-copy', () => {
  const c = new FreezeCalibration();
  for (const ms of [900, 1000, 5000]) c.add({ strategy: 'cold', memoryBytes: 1 * MiB, freezeMs: ms });
  // a median: one freeze slowed by a burst of load does not move it
  const fixed = c.model().fixedMs;
  assert.ok(fixed > 950 && fixed < 1000, String(fixed));
  // post-copy: cold's fixed part plus what post-copy adds to it
  assert.equal(c.model().postcopyMs, fixed + DEFAULT_FREEZE_MODEL.postcopyMs - DEFAULT_FREEZE_MODEL.fixedMs);
  // 64 MiB took 800 ms beyond the fixed part: dumped and restored at 2 × 64 MiB / 0.8 s
  c.add({ strategy: 'cold', memoryBytes: 64 * MiB, freezeMs: fixed + 800 });
  assert.ok(Math.abs(c.model().memoryRate - (2 * 64 * MiB) / 0.8) < 1);
  const predicted = predictFreezeMs('cold', 64 * MiB, Number.POSITIVE_INFINITY, c.model());
  assert.ok(Math.abs(predicted - (fixed + 800)) <= 1, String(predicted));
  // pre-copy's freeze depends on what changed since its last round: it teaches nothing
  const before = c.model();
  c.add({ strategy: 'precopy', memoryBytes: 64 * MiB, freezeMs: 99_000 });
  assert.deepEqual(c.model(), before);
});

test('post-copy freezes calibrate cold too: a destination auto sends only post-copy for still follows the load', () => {
  const c = new FreezeCalibration();
  c.add({ strategy: 'cold', memoryBytes: 0, freezeMs: 3000 });
  for (let i = 0; i < 3; i++) c.add({ strategy: 'postcopy', memoryBytes: 256 * MiB, freezeMs: 800 });
  assert.equal(predictFreezeMs('postcopy', 256 * MiB, undefined, c.model()), 800);
  // the lazy dump's walk over 256 MiB (at the idle rate) is not part of cold's fixed part
  const walk = ((256 * MiB) / DEFAULT_FREEZE_MODEL.lazyRate) * 1000;
  assert.equal(
    predictFreezeMs('cold', 0, undefined, c.model()),
    Math.round(800 - walk - (DEFAULT_FREEZE_MODEL.postcopyMs - DEFAULT_FREEZE_MODEL.fixedMs)),
  );
});

test('the calibration follows the load: only the last few freezes count', () => {
  const c = new FreezeCalibration();
  for (let i = 0; i < 10; i++) c.add({ strategy: 'postcopy', memoryBytes: 0, freezeMs: 2000 });
  for (let i = 0; i < 3; i++) c.add({ strategy: 'postcopy', memoryBytes: 0, freezeMs: 500 });
  assert.equal(c.model().postcopyMs, 500);
});

test("once cold moves were measured, their rate holds the link's share: the agents' link probe is left out", () => {
  const c = new FreezeCalibration();
  c.add({ strategy: 'cold', memoryBytes: 0, freezeMs: 300 });
  // before: a probe of the agents' stream at 100 MB/s bounds the pages' way
  const slowProbe = 100e6;
  const unmeasured = predictFreezeMs('cold', 1 << 30, slowProbe, c.model());
  assert.ok(unmeasured > 300 + ((1 << 30) / slowProbe) * 1000, String(unmeasured));
  // a 1 GiB cold move froze 2.3 s: its pages went at the page server's speed, whatever the probe said
  c.add({ strategy: 'cold', memoryBytes: 1 << 30, freezeMs: 2300 });
  assert.equal(c.model().memoryRateMeasured, true);
  assert.equal(predictFreezeMs('cold', 1 << 30, slowProbe, c.model()), 2300);
});
