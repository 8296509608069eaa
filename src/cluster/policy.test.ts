import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FerryError } from '../core/errors.ts';
import {
  type ContainerLoad,
  drain,
  type HostLoad,
  hostLoadPercent,
  place,
  type RebalanceOptions,
  rebalance,
} from './policy.ts';

const GiB = 1024 ** 3;
const NOW = 1_700_000_000_000;

const c = (name: string, cpuPercent: number, extra: Partial<ContainerLoad> = {}): ContainerLoad => ({
  name,
  cpuPercent,
  memoryBytes: 100 * 1024 ** 2,
  migratable: true,
  ...extra,
});
const host = (
  name: string,
  containers: ContainerLoad[],
  extra: { up?: boolean; cores?: number; memoryBytes?: number } = {},
): HostLoad => ({
  name,
  up: extra.up ?? true,
  capacity: { cores: extra.cores ?? 1, memoryBytes: extra.memoryBytes ?? 64 * GiB },
  containers,
});
const opts = (targetPercent: number, extra: Partial<RebalanceOptions> = {}): RebalanceOptions => ({
  targetPercent,
  now: NOW,
  cooldownMs: 60_000,
  batchLimit: 10,
  ...extra,
});
const moved = (r: { moves: { container: string; from: string; to: string }[] }): string[] =>
  r.moves.map((m) => `${m.container}:${m.from}->${m.to}`);
const inputArgs = (re?: RegExp) => (e: unknown) =>
  e instanceof FerryError && e.code === 'FERRY_E_INPUT_ARGS' && (re === undefined || re.test(e.message));

test('hostLoadPercent is the sum of container CPU over the host cores', () => {
  assert.equal(hostLoadPercent(host('a', [c('x', 60), c('y', 30)])), 90);
  assert.equal(hostLoadPercent(host('b', [c('x', 150), c('y', 50)], { cores: 4 })), 50);
  assert.equal(hostLoadPercent(host('e', [])), 0);
});

describe('rebalance', () => {
  test("the seed's worked example", () => {
    const hosts = [
      host('v1', [c('c1', 60), c('c2', 5), c('c3', 20), c('c4', 5)]),
      host('v2', [c('c6', 68)]),
      host('v3', [c('c7', 25), c('c8', 25)]),
    ];
    const snapshot = structuredClone(hosts);
    const r = rebalance(hosts, opts(71));
    // Only v1 (90 %) is above 71 %. In CPU order: c1 60 % fits nowhere (v2 → 128 %, v3 → 110 %);
    // c3 20 % qualifies for v2 (88 % < 90 %) and v3 (70 % < 90 %): v3 ends lower, so v3. v1 is now 70 % ≤ 71 %: stop.
    assert.deepEqual(r.moves, [
      {
        container: 'c3',
        from: 'v1',
        to: 'v3',
        cpuPercent: 20,
        memoryBytes: 100 * 1024 ** 2,
        reason: 'v1 at 90% is above target 71%; v3 goes from 50% to 70%',
      },
    ]);
    assert.deepEqual(r.before, { v1: 90, v2: 68, v3: 50 });
    assert.deepEqual(r.after, { v1: 70, v2: 68, v3: 70 });
    assert.deepEqual(r.notes, ['c1 (60% CPU) on v1: no other up host has the CPU and memory for it']);
    assert.deepEqual(hosts, snapshot, 'input not mutated');
  });

  test('nothing fits: no moves, notes say why and which hosts stay above target', () => {
    const hosts = [host('v1', [c('a', 50), c('b', 45)]), host('v2', [c('c', 95)]), host('v3', [c('d', 100)])];
    const r = rebalance(hosts, opts(50));
    assert.deepEqual(r.moves, []);
    assert.deepEqual(r.after, r.before);
    assert.deepEqual(r.notes, [
      'd (100% CPU) on v3: no other up host has the CPU and memory for it',
      'a (50% CPU) on v1: no other up host has the CPU and memory for it',
      'b (45% CPU) on v1: no other up host has the CPU and memory for it',
      'c (95% CPU) on v2: no other up host has the CPU and memory for it',
      'v3 stays above target 50% at 100%',
      'v1 stays above target 50% at 95%',
      'v2 stays above target 50% at 95%',
    ]);
  });

  test('ties are broken by name, not input order', () => {
    // Receivers r2 and r1 end equally loaded (70 %): r1 by name. Equal-CPU containers: by name too.
    const r = rebalance(
      [host('x', [c('b', 30), c('a', 30), c('big', 60)]), host('r2', []), host('r1', [])],
      opts(60),
    );
    assert.deepEqual(moved(r), ['big:x->r1']);
    const r2 = rebalance([host('x', [c('b', 30), c('a', 30)]), host('r2', []), host('r1', [])], opts(40));
    assert.deepEqual(moved(r2), ['a:x->r1']);
  });

  test('every host above target: moves only where the receiver ends below the source', () => {
    const hosts = [host('h1', [c('a', 40), c('b', 50)]), host('h2', [c('c', 60)]), host('h3', [c('d', 40)])];
    const r = rebalance(hosts, opts(30));
    // h1 (90 %): b 50 → h2 110 % (capacity) or h3 90 % (not below 90 %): stays; a 40 → h2 100 % (not below),
    // h3 80 % < 90 %: moves. Then h3 (80 %), h2 (60 %) and h1 (50 %) cannot shed anything.
    assert.deepEqual(moved(r), ['a:h1->h3']);
    assert.deepEqual(r.after, { h1: 50, h2: 60, h3: 80 });
    assert.ok(r.notes.includes("d (40% CPU) on h3: no receiver would stay below h3's load of 80%"));
    for (const h of ['h1', 'h2', 'h3'])
      assert.ok(r.notes.some((n) => n.startsWith(`${h} stays above target`)));

    // Two hosts both above target, neither can take from the other.
    const r2 = rebalance([host('h1', [c('a', 30), c('b', 50)]), host('h2', [c('c', 60)])], opts(50));
    assert.deepEqual(r2.moves, []);
    assert.ok(r2.notes.includes("a (30% CPU) on h1: no receiver would stay below h1's load of 80%"));
  });

  test('a host that is down is neither a source nor a receiver', () => {
    const hosts = [
      host('v1', [c('a', 40), c('b', 50)]),
      host('v2', [], { up: false, cores: 4 }),
      host('v3', [c('c', 10)]),
      host('v4', [c('d', 95)], { up: false }),
    ];
    const r = rebalance(hosts, opts(60));
    // v2 (empty, 4 cores) would be the best receiver, but it is down: b 50 → v3 (60 % < 90 %).
    assert.deepEqual(moved(r), ['b:v1->v3']);
    assert.deepEqual(r.after, { v1: 40, v2: 0, v3: 60, v4: 95 });
    assert.ok(r.notes.includes('v2 is down: neither a source nor a receiver'));
    assert.ok(r.notes.includes('v4 is down: neither a source nor a receiver'));
    assert.ok(!r.notes.some((n) => n.startsWith('v4 stays')));
  });

  test('cooldown skips a recently moved container', () => {
    const hosts = (lastMovedAt: number) => [
      host('v1', [c('a', 50, { lastMovedAt }), c('b', 40)]),
      host('v2', []),
    ];
    const r = rebalance(hosts(NOW - 1000), opts(50));
    assert.deepEqual(moved(r), ['b:v1->v2']);
    assert.deepEqual(r.notes, ['a on v1: in cooldown (moved 1000 ms ago, cooldown 60000 ms)']);
    // Exactly cooldownMs ago: no longer in cooldown.
    assert.deepEqual(moved(rebalance(hosts(NOW - 60_000), opts(50))), ['a:v1->v2']);
  });

  test('batch limit caps the moves', () => {
    const hosts = [
      host('v1', [c('a', 25), c('b', 25), c('c', 25), c('d', 25)]),
      host('v2', []),
      host('v3', []),
    ];
    const r = rebalance(hosts, opts(30, { batchLimit: 2 }));
    assert.deepEqual(moved(r), ['a:v1->v2', 'b:v1->v3']);
    assert.deepEqual(r.notes, ['v1 stays above target 30% at 50%', 'batch limit of 2 move(s) reached']);
    assert.deepEqual(rebalance(hosts, opts(30, { batchLimit: 0 })).moves, []);
    assert.deepEqual(moved(rebalance(hosts, opts(30, { batchLimit: 1 }))), ['a:v1->v2']);
    // Without the limit the same two moves: then c would leave v2 or v3 at 50 %, not below v1's 50 %.
    const all = rebalance(hosts, opts(30));
    assert.deepEqual(moved(all), ['a:v1->v2', 'b:v1->v3']);
    assert.deepEqual(all.after, { v1: 50, v2: 25, v3: 25 });
    assert.deepEqual(all.notes, [
      "c (25% CPU) on v1: no receiver would stay below v1's load of 50%",
      "d (25% CPU) on v1: no receiver would stay below v1's load of 50%",
      'v1 stays above target 30% at 50%',
    ]);
  });

  test('a container is never moved twice in one plan', () => {
    const hosts = [
      host('A', [c('x', 35, { memoryBytes: 2 * GiB }), c('a1', 60, { migratable: false })]),
      host('R', [c('r', 25)]),
      host('S', [c('s', 60), c('s2', 10)]),
      host('D', [], { memoryBytes: GiB }),
    ];
    const r = rebalance(hosts, opts(50));
    // A (95 %): x → R (60 %; S would be 105 %, D lacks the memory). S (70 %): s → D (60 %); S at 10 %.
    // R (60 %) is above target: x would go on to S (45 %) but was already moved; r goes instead (S 35 %).
    assert.deepEqual(moved(r), ['x:A->R', 's:S->D', 'r:R->S']);
    assert.deepEqual(r.after, { A: 60, R: 35, S: 35, D: 60 });
    assert.deepEqual(r.notes, [
      'a1 on A: not migratable, left in place',
      'A stays above target 50% at 60%',
      'D stays above target 50% at 60%',
    ]);
  });

  test('memory capacity blocks a move', () => {
    const hosts = [
      host('v1', [c('a', 50, { memoryBytes: 2 * GiB }), c('b', 40)]),
      host('v2', [], { memoryBytes: GiB }),
      host('v3', [c('z', 20)], { memoryBytes: 8 * GiB }),
    ];
    // v2 would end lowest (50 %) but lacks the memory: a → v3 (70 %). v3 is then above target: z (small) → v2.
    assert.deepEqual(moved(rebalance(hosts, opts(50))), ['a:v1->v3', 'z:v3->v2']);
    // Memory exactly at capacity is allowed.
    const exact = [
      host('v1', [c('a', 90, { memoryBytes: GiB })]),
      host('v2', [], { cores: 2, memoryBytes: GiB }),
    ];
    assert.deepEqual(moved(rebalance(exact, opts(50))), ['a:v1->v2']);
  });

  test('migratable: false is never moved', () => {
    const r = rebalance(
      [host('v1', [c('a', 60, { migratable: false }), c('b', 30)]), host('v2', [])],
      opts(50),
    );
    assert.deepEqual(moved(r), ['b:v1->v2']);
    assert.deepEqual(r.notes, ['a on v1: not migratable, left in place', 'v1 stays above target 50% at 60%']);
  });

  test('a receiver pushed above target is processed afterwards', () => {
    const hosts = [host('h1', [c('a', 45), c('b', 40)]), host('h2', [c('y', 10)]), host('h3', [c('z', 30)])];
    const r = rebalance(hosts, opts(50));
    // h1 (85 %): a 45 → h2 (55 %, lower than h3's 75 %); h1 at 40 %: stop. h2 is now 55 % > 50 %: a was
    // already moved; y 10 → h3 (40 %, lower than h1's 50 %); h2 at 45 %: done.
    assert.deepEqual(moved(r), ['a:h1->h2', 'y:h2->h3']);
    assert.deepEqual(r.before, { h1: 85, h2: 10, h3: 30 });
    assert.deepEqual(r.after, { h1: 40, h2: 45, h3: 40 });
    assert.deepEqual(r.notes, []);
  });

  test('bad input is FERRY_E_INPUT_ARGS', () => {
    const hosts = [host('v1', [c('a', 10)]), host('v2', [])];
    for (const t of [0, 0.5, 101, Number.NaN]) {
      assert.throws(() => rebalance(hosts, opts(t)), inputArgs(/targetPercent/));
    }
    assert.doesNotThrow(() => rebalance(hosts, opts(1)));
    assert.doesNotThrow(() => rebalance(hosts, opts(100)));
    assert.throws(() => rebalance(hosts, opts(50, { cooldownMs: -1 })), inputArgs(/cooldownMs/));
    assert.throws(() => rebalance(hosts, opts(50, { now: -5 })), inputArgs(/now/));
    assert.throws(() => rebalance(hosts, opts(50, { batchLimit: -1 })), inputArgs(/batchLimit/));
    assert.throws(() => rebalance([host('v1', [c('a', -1)])], opts(50)), inputArgs(/cpuPercent/));
    assert.throws(
      () => rebalance([host('v1', [c('a', 1, { memoryBytes: -1 })])], opts(50)),
      inputArgs(/memoryBytes/),
    );
    assert.throws(() => rebalance([host('v1', [], { cores: -2 })], opts(50)), inputArgs(/cores/));
    assert.throws(() => rebalance([host('v1', [], { memoryBytes: -1 })], opts(50)), inputArgs(/memoryBytes/));
    assert.throws(
      () => rebalance([host('v1', []), host('v1', [])], opts(50)),
      inputArgs(/duplicate host name v1/),
    );
  });
});

describe('place', () => {
  test('decreasing CPU, most remaining capacity, memory respected, unplaced reported', () => {
    const hosts = [
      host('A', [c('old', 60)]), // 40 left
      host('B', [c('old', 100)], { cores: 2 }), // 100 left
      host('C', [], { memoryBytes: GiB }), // 100 left, little memory
      host('D', [], { up: false, cores: 64 }),
    ];
    const snapshot = structuredClone(hosts);
    const mem = 100 * 1024 ** 2;
    const r = place(
      [
        { name: 'z', cpuPercent: 30, memoryBytes: 2 * GiB },
        { name: 'x', cpuPercent: 50, memoryBytes: mem },
        { name: 'w', cpuPercent: 200, memoryBytes: mem },
        { name: 'y', cpuPercent: 70, memoryBytes: mem },
      ],
      hosts,
    );
    // w 200: nowhere (D is down). y 70: B and C tie at 100 left → B (30 left). x 50: C (100 left → 50).
    // z 30: C has the most left (50) but not the memory → A (40 left).
    assert.deepEqual(r, { placements: { y: 'B', x: 'C', z: 'A' }, unplaced: ['w'] });
    assert.deepEqual(hosts, snapshot, 'input not mutated');
  });

  test('remaining capacity is updated as containers are placed', () => {
    const r = place(
      [
        { name: 'a', cpuPercent: 40, memoryBytes: 0 },
        { name: 'b', cpuPercent: 40, memoryBytes: 0 },
        { name: 'c', cpuPercent: 40, memoryBytes: 0 },
      ],
      [host('h1', []), host('h2', [])],
    );
    assert.deepEqual(r, { placements: { a: 'h1', b: 'h2', c: 'h1' }, unplaced: [] });
  });

  test('bad input', () => {
    assert.throws(
      () => place([{ name: 'a', cpuPercent: -1, memoryBytes: 0 }], [host('h', [])]),
      inputArgs(/cpuPercent/),
    );
    assert.throws(
      () =>
        place(
          [
            { name: 'a', cpuPercent: 1, memoryBytes: 0 },
            { name: 'a', cpuPercent: 2, memoryBytes: 0 },
          ],
          [host('h', [])],
        ),
      inputArgs(/duplicate container name a/),
    );
    assert.throws(() => place([], [host('h', []), host('h', [])]), inputArgs(/duplicate host name h/));
  });
});

describe('drain', () => {
  test('empties a host when possible, ignoring cooldown', () => {
    const hosts = [
      host('v1', [c('a', 30, { lastMovedAt: NOW }), c('b', 50)]),
      host('v2', [c('x', 10)]),
      host('v3', [c('y', 100)], { cores: 2 }),
    ];
    const r = drain('v1', hosts, { now: NOW });
    // b 50: v3 has 100 left, v2 90 → v3. a 30: v2 90 left, v3 50 → v2.
    assert.deepEqual(moved(r), ['b:v1->v3', 'a:v1->v2']);
    assert.deepEqual(r.before, { v1: 80, v2: 10, v3: 50 });
    assert.deepEqual(r.after, { v1: 0, v2: 40, v3: 75 });
    assert.deepEqual(r.notes, []);
    assert.deepEqual(r.remaining, []);
    assert.equal(r.moves[0]?.reason, 'draining v1; v3 has the most spare CPU and goes from 50% to 75%');
  });

  test('reports what cannot fit and what is not migratable; down hosts do not receive', () => {
    const hosts = [
      host(
        'v1',
        [c('a', 60), c('b', 30), c('c', 20), c('d', 5, { migratable: false }), c('e', 80), c('f', 50)],
        {
          cores: 3,
        },
      ),
      host('v2', [c('x', 10)]), // 90 left
      host('v3', [c('y', 100)], { cores: 2 }), // 100 left
      host('v4', [], { up: false, cores: 64 }),
    ];
    const r = drain('v1', hosts);
    // e 80 → v3 (20 left); a 60 → v2 (30 left); f 50 fits nowhere; b 30 → v2 (0 left); c 20 → v3 (0 left).
    assert.deepEqual(moved(r), ['e:v1->v3', 'a:v1->v2', 'b:v1->v2', 'c:v1->v3']);
    assert.deepEqual(r.notes, [
      'f (50% CPU) on v1: no other up host has the CPU and memory for it',
      'd on v1: not migratable, left in place',
      'v1 is not empty: 2 container(s) remain',
    ]);
    assert.deepEqual(r.remaining, ['d', 'f']);
    assert.deepEqual(r.after, { v1: 18.33, v2: 100, v3: 100, v4: 0 });
  });

  test('memory blocks a receiver', () => {
    const hosts = [
      host('v1', [c('a', 10, { memoryBytes: 4 * GiB })]),
      host('v2', [], { memoryBytes: GiB }),
      host('v3', [c('y', 50)]),
    ];
    assert.deepEqual(moved(drain('v1', hosts)), ['a:v1->v3']);
  });

  test('a host that still lists a container of the same name is named in the note (a heartbeat from before a move)', () => {
    const r = drain('v1', [host('v1', [c('svc', 0)]), host('v2', [c('svc', 0)])]);
    assert.deepEqual(r.moves, []);
    assert.deepEqual(r.notes, [
      'svc (0% CPU) on v1: no other up host has the CPU and memory for it (v2 already lists a container named svc)',
      'v1 is not empty: 1 container(s) remain',
    ]);
    assert.deepEqual(r.remaining, ['svc']);
  });

  test('a host that is down cannot be drained by live migration', () => {
    const r = drain('v1', [host('v1', [c('a', 10)], { up: false }), host('v2', [])]);
    assert.deepEqual(r.moves, []);
    assert.deepEqual(r.notes, ['v1 is down: its containers cannot be live-migrated, nothing moved']);
    assert.deepEqual(r.remaining, ['a']);
  });

  test('unknown host and bad input', () => {
    const hosts = [host('v1', [c('a', 10)]), host('v2', [])];
    assert.throws(() => drain('nope', hosts), inputArgs(/nope/));
    assert.throws(() => drain('v1', hosts, { now: -1 }), inputArgs(/now/));
    assert.throws(() => drain('v1', [...hosts, host('v2', [])]), inputArgs(/duplicate host name v2/));
    assert.throws(() => drain('v1', [host('v1', [c('a', -3)])]), inputArgs(/cpuPercent/));
  });
});
