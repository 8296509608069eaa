import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { FerryError } from '../core/errors.ts';
import { assessStrategies, type HostFacts } from './capabilities.ts';
import { DEFAULT_FREEZE_MODEL } from './freeze-model.ts';
import {
  estimateColdFreezeMs,
  linkRateMatters,
  planStrategy,
  precopyRounds,
  predictFreezeMs,
} from './plan.ts';

function facts(over: Partial<HostFacts> = {}): HostFacts {
  return {
    host: 'h',
    kernel: '6.18',
    criuVersion: '4.2.1',
    runcVersion: '1.1.5',
    criuCheck: { ok: true, message: 'Looks good.' },
    features: {
      uffd: { ok: true, message: '' },
      mem_dirty_track: { ok: false, message: 'Dirty tracking is OFF' },
    },
    pipeMaxSize: 4 << 20,
    root: true,
    ...over,
  };
}

const plan = (requested: Parameters<typeof planStrategy>[0]['requested'], a: HostFacts, b: HostFacts) =>
  planStrategy({
    requested,
    source: assessStrategies(a),
    destination: assessStrategies(b),
    sourceHost: 'a',
    destinationHost: 'b',
  });

test('cold works wherever CRIU 4.2+ and runc work; auto picks it and says why', () => {
  assert.deepEqual(plan('cold', facts(), facts()), {
    strategy: 'cold',
    reason: 'requested',
    predictedFreezeMs: estimateColdFreezeMs(0),
  });
  const auto = plan('auto', facts(), facts());
  assert.equal(auto.strategy, 'cold');
  assert.match(auto.reason, /^auto: /);
});

test('an old CRIU on either side is named with its host and version', () => {
  assert.throws(
    () => plan('cold', facts(), facts({ criuVersion: '3.17.1' })),
    (e: FerryError) =>
      e.code === 'FERRY_E_CRIU_TOO_OLD' && /host b: CRIU 3\.17\.1 is older than 4\.2/.test(e.message),
  );
  assert.throws(
    () => plan('auto', facts({ criuVersion: '4.1.1' }), facts()),
    (e: FerryError) => /host a/.test(e.message),
  );
});

test('a strategy that cannot work says why and lists what does', () => {
  assert.throws(
    () => plan('postcopy', facts(), facts({ pipeMaxSize: 1 << 20 })),
    (e: FerryError) =>
      e.code === 'FERRY_E_PLAN_STRATEGY' && e.phase === 'plan' && /strategies that work/.test(e.hint ?? ''),
  );
});

test('missing criu, missing runc, not root and a failing criu check are all reasons', () => {
  for (const [f, re] of [
    [facts({ criuVersion: undefined as never }), /criu is not installed/],
    [facts({ runcVersion: undefined as never }), /runc is not installed/],
    [facts({ root: false }), /not running as root/],
    [facts({ criuCheck: { ok: false, message: 'Error (x)' } }), /criu check failed/],
  ] as const) {
    const s = assessStrategies(f);
    assert.equal(s.cold.ok, false);
    assert.match(s.cold.why ?? '', re);
  }
});

test('without soft-dirty, pre-copy is the content-delta kind; post-copy needs userfaultfd and a 4 MiB pipe', () => {
  const s = assessStrategies(facts());
  assert.match(s.precopy.why ?? s.precopy.mode ?? '', /content delta/);
  const noUffd = assessStrategies(facts({ features: { uffd: { ok: false, message: '' } } }));
  assert.match(noUffd.postcopy.why ?? '', /userfaultfd/);
  const smallPipe = assessStrategies(facts({ pipeMaxSize: 1 << 20 }));
  assert.match(smallPipe.postcopy.why ?? '', /fs\.pipe-max-size/);
  assert.match(smallPipe.hybrid.why ?? '', /post-copy part unavailable/);
});

/** An `auto` plan between hosts a and b that both have `caps`. */
function autoBetween(caps: ReturnType<typeof assessStrategies>) {
  return {
    requested: 'auto' as const,
    source: caps,
    destination: caps,
    sourceHost: 'a',
    destinationHost: 'b',
  };
}

test('auto: cold while it fits the downtime budget, post-copy beyond, with the numbers in the reason', () => {
  const base = autoBetween(assessStrategies(facts()));
  const small = planStrategy({ ...base, memoryBytes: 0 });
  assert.equal(small.strategy, 'cold');
  assert.match(small.reason, /fits the 300 ms budget \(0 MiB, estimated freeze \d+ ms\)/);
  const big = planStrategy({ ...base, memoryBytes: 1 << 30 });
  assert.equal(big.strategy, 'postcopy');
  assert.match(big.reason, /over the 300 ms budget; post-copy freezes/);
  // a generous budget keeps cold even for 1 GiB; a tight one picks post-copy where it freezes for less...
  assert.equal(planStrategy({ ...base, memoryBytes: 1 << 30, maxDowntimeMs: 60_000 }).strategy, 'cold');
  assert.equal(planStrategy({ ...base, memoryBytes: 256 << 20, maxDowntimeMs: 100 }).strategy, 'postcopy');
  // ...and keeps cold where post-copy would freeze no less (nothing gained for memory split between the hosts)
  const tight = planStrategy({ ...base, memoryBytes: 1 << 20, maxDowntimeMs: 100 });
  assert.equal(tight.strategy, 'cold');
  assert.match(tight.reason, /over the 100 ms budget, but post-copy would not freeze much less \(~\d+ ms\)/);
  const slowHost = { ...DEFAULT_FREEZE_MODEL, fixedMs: 1100, postcopyMs: 1174 };
  assert.equal(planStrategy({ ...base, memoryBytes: 8 << 20, freezeModel: slowHost }).strategy, 'cold');
  // a faster measured link moves the threshold
  assert.equal(
    planStrategy({ ...base, memoryBytes: 64 << 20, transferRate: 10e9, maxDowntimeMs: 500 }).strategy,
    'cold',
  );
});

test('auto without a budget given takes post-copy where it freezes for much less, even where cold fits', () => {
  const base = autoBetween(assessStrategies(facts()));
  // a fast destination, calibrated: cold 64 MiB fits the default budget, post-copy freezes half as long
  const fast = { fixedMs: 120, postcopyMs: 120, memoryRate: 800e6, lazyRate: 1e10, memoryRateMeasured: true };
  const mid = planStrategy({ ...base, memoryBytes: 64 << 20, freezeModel: fast });
  assert.equal(mid.strategy, 'postcopy');
  assert.match(mid.reason, /within the default 300 ms budget\), post-copy ~\d+ ms; post-copy freezes/);
  // the same with a budget given: the user accepts that freeze to keep the container whole on one host
  const given = planStrategy({ ...base, memoryBytes: 64 << 20, freezeModel: fast, maxDowntimeMs: 300 });
  assert.equal(given.strategy, 'cold');
  assert.match(
    given.reason,
    /the budget given keeps it whole on one host \(post-copy would freeze ~\d+ ms\)/,
  );
  // a few milliseconds saved do not pay for the split memory: an empty or small container stays cold
  for (const mem of [0, 8 << 20]) {
    const small = planStrategy({ ...base, memoryBytes: mem, freezeModel: fast });
    assert.equal(small.strategy, 'cold', `${mem} bytes`);
    assert.match(small.reason, /post-copy would not freeze much less/);
  }
});

test('auto without post-copy takes pre-copy, and without both falls back to cold; it says why', () => {
  const noPost = assessStrategies(facts({ pipeMaxSize: 1 << 20 }));
  const pre = planStrategy({
    requested: 'auto',
    source: noPost,
    destination: noPost,
    sourceHost: 'a',
    destinationHost: 'b',
    memoryBytes: 1 << 30,
  });
  assert.equal(pre.strategy, 'precopy');
  assert.match(pre.reason, /post-copy is not possible \(a: fs\.pipe-max-size/);
  assert.match(pre.reason, /dirty rate not measured/);
  const caps = { ...noPost, precopy: { ok: false, why: 'disabled' } };
  const r = planStrategy({
    requested: 'auto',
    source: caps,
    destination: caps,
    sourceHost: 'a',
    destinationHost: 'b',
    memoryBytes: 1 << 30,
  });
  assert.equal(r.strategy, 'cold');
  assert.match(r.reason, /post-copy is not possible \(a: fs\.pipe-max-size/);
});

test('auto weighs the dirty rate: pre-copy where its rounds are cheap and converge, else post-copy, saying why', () => {
  const softDirty = assessStrategies(
    facts({ features: { uffd: { ok: true, message: '' }, mem_dirty_track: { ok: true, message: '' } } }),
  );
  const base = {
    requested: 'auto' as const,
    source: softDirty,
    destination: softDirty,
    sourceHost: 'a',
    destinationHost: 'b',
    memoryBytes: 1 << 30,
    transferRate: 125e6,
  };
  const calm = planStrategy({ ...base, dirtyRate: 5e6 });
  assert.equal(calm.strategy, 'precopy');
  assert.match(calm.reason, /converges in ~\d+ rounds \(it touches at most 5\.0 MB\/s/);
  const busy = planStrategy({ ...base, dirtyRate: 200e6 });
  assert.equal(busy.strategy, 'postcopy');
  assert.match(
    busy.reason,
    /pre-copy would not converge \(it touches at most 200 MB\/s of writable memory, the link carries 125 MB\/s\)/,
  );
  assert.equal(planStrategy(base).strategy, 'postcopy', 'unmeasured: the flat freeze');
  // here (no soft-dirty) every pre-copy round is a full-dump freeze: post-copy, whatever the dirty rate
  const here = assessStrategies(facts());
  const r = planStrategy({ ...base, source: here, destination: here, dirtyRate: 1e6 });
  assert.equal(r.strategy, 'postcopy');
  assert.match(r.reason, /each freeze it for a full dump here \(no soft-dirty tracking\)/);
  // without post-copy, a content-delta pre-copy that would not converge gives way to cold
  const noPost = assessStrategies(facts({ pipeMaxSize: 1 << 20 }));
  const cold = planStrategy({ ...base, source: noPost, destination: noPost, dirtyRate: 500e6 });
  assert.equal(cold.strategy, 'cold');
  assert.match(cold.reason, /pre-copy would not converge/);
});

test('the link is measured only when its rate can change the plan', () => {
  const here = assessStrategies(facts());
  const softDirty = assessStrategies(
    facts({ features: { uffd: { ok: true, message: '' }, mem_dirty_track: { ok: true, message: '' } } }),
  );
  const q = (memoryBytes: number, caps = here) =>
    linkRateMatters({ memoryBytes, maxDowntimeMs: 500, source: caps, destination: caps });
  assert.equal(q(32 << 20), true, 'cold might fit on a fast link');
  assert.equal(q(1 << 30), false, 'cold cannot fit whatever the link; pre-copy rounds are full dumps here');
  assert.equal(q(1 << 30, softDirty), true, 'cheap pre-copy rounds converge or not with the link rate');
});

test('pre-copy rounds follow the ratio of dirty rate to link rate', () => {
  assert.equal(precopyRounds(1 << 20, 1e9, 125e6, 500), 1, 'fits at once');
  assert.equal(precopyRounds(1 << 30, 200e6, 125e6, 500), Number.POSITIVE_INFINITY);
  // a hot set the last round must carry: converges when it fits the budget, not when it does not
  assert.equal(precopyRounds(1 << 30, 1e6, 125e6, 500, 10e6), 2);
  assert.equal(precopyRounds(1 << 30, 1e6, 125e6, 500, 100e6), Number.POSITIVE_INFINITY);
  const slow = precopyRounds(1 << 30, 1e6, 125e6, 500);
  const fast = precopyRounds(1 << 30, 60e6, 125e6, 500);
  assert.ok(slow >= 2 && slow < fast, `${slow} < ${fast}`);
});

test('hybrid needs soft-dirty tracking and post-copy; ferry check says why not', () => {
  const here = assessStrategies(facts());
  assert.equal(here.hybrid.ok, false);
  assert.match(here.hybrid.why ?? '', /soft-dirty/);
  const softDirty = assessStrategies(
    facts({ features: { uffd: { ok: true, message: '' }, mem_dirty_track: { ok: true, message: '' } } }),
  );
  assert.equal(softDirty.hybrid.ok, true);
  assert.match(softDirty.precopy.mode ?? '', /pre-dump/);
});

test('assessments are data: the pre-copy mode and a code for why not', () => {
  const here = assessStrategies(facts());
  assert.equal(here.precopy.precopyMode, 'delta');
  assert.equal(here.hybrid.code, 'no-soft-dirty');
  const softDirty = assessStrategies(
    facts({ features: { uffd: { ok: true, message: '' }, mem_dirty_track: { ok: true, message: '' } } }),
  );
  assert.equal(softDirty.precopy.precopyMode, 'softdirty');
  assert.equal(softDirty.hybrid.precopyMode, 'softdirty');
  assert.equal(assessStrategies(facts({ pipeMaxSize: 1 << 20 })).postcopy.code, 'pipe-too-small');
  assert.equal(
    assessStrategies(facts({ features: { uffd: { ok: false, message: '' } } })).postcopy.code,
    'no-uffd',
  );
  for (const s of Object.values(assessStrategies(facts({ criuVersion: '3.17' })))) {
    assert.equal(s.code, 'criu-too-old');
  }
});

test('the plan predicts the freeze of the strategy it chose', () => {
  const mem = 64 << 20;
  const p = (requested: Parameters<typeof planStrategy>[0]['requested']) =>
    planStrategy({
      requested,
      memoryBytes: mem,
      transferRate: 100e6,
      source: assessStrategies(facts()),
      destination: assessStrategies(facts()),
      sourceHost: 'a',
      destinationHost: 'b',
    });
  assert.equal(p('cold').predictedFreezeMs, predictFreezeMs('cold', mem, 100e6));
  assert.equal(p('postcopy').predictedFreezeMs, predictFreezeMs('postcopy', mem));
  // post-copy leaves memory for after the freeze: its prediction grows only by the lazy dump's walk over it
  const lazyWalk = predictFreezeMs('postcopy', 4 * 2 ** 30) - predictFreezeMs('postcopy', 0);
  assert.equal(lazyWalk, Math.round(((4 * 2 ** 30) / DEFAULT_FREEZE_MODEL.lazyRate) * 1000));
  assert.ok(lazyWalk * 5 < predictFreezeMs('cold', 4 * 2 ** 30, 100e6));
  assert.ok(predictFreezeMs('cold', 4 * 2 ** 30, 100e6) > predictFreezeMs('cold', mem, 100e6));
});
