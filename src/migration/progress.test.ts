// Progress updates on a fake clock: one per interval however often the bytes move, the rate between updates, the
// last one always; the dump's figure read from the image directory while the dump runs and once at its end.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ProgressMeter, pagesLeft, withDumpProgress } from './progress.ts';
import type { MigrationEvent, ProgressUpdate } from './types.ts';

test('a meter reports at most once per interval, with the rate since the last report, and always the last', () => {
  let now = 0;
  const seen: MigrationEvent[] = [];
  const m = new ProgressMeter(
    (e) => seen.push(e),
    () => now,
    'transfer',
    250,
  );
  for (let i = 1; i <= 100; i++) {
    now += 10;
    m.update(i * 1000, { total: 100_000 });
  }
  m.finish(100_000, { total: 100_000 });
  const p = seen as ProgressUpdate[];
  // the first at once (10 ms), then at 260, 510 and 760 ms, then the last
  assert.equal(p.length, 5);
  assert.deepEqual(p[0], { type: 'progress', phase: 'transfer', bytes: 1000, total: 100_000 });
  assert.equal(p[1]?.rate, 100_000); // 25 000 bytes in 250 ms
  assert.equal(p.at(-1)?.bytes, 100_000);
  assert.ok(p.every((e) => e.phase === 'transfer' && e.total === 100_000));
});

test('the dump: what CRIU has written so far while it runs, the final size when it returns', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-progress-'));
  try {
    const seen: MigrationEvent[] = [];
    const out = await withDumpProgress(
      dir,
      (e) => seen.push(e),
      () => performance.now(),
      async () => {
        await writeFile(join(dir, 'pages-1.img'), Buffer.alloc(8192));
        await sleep(120);
        await writeFile(join(dir, 'pages-2.img'), Buffer.alloc(4096));
        await sleep(120);
        return 'dumped';
      },
      50,
    );
    assert.equal(out, 'dumped');
    const p = seen as ProgressUpdate[];
    assert.ok(p.length >= 2, JSON.stringify(p));
    assert.ok(p.every((e) => e.phase === 'checkpoint'));
    assert.ok(
      p.some((e) => e.bytes === 8192),
      JSON.stringify(p),
    );
    assert.equal(p.at(-1)?.bytes, 12_288);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a failed dump still ends its figures and fails as it did', async () => {
  const seen: MigrationEvent[] = [];
  await assert.rejects(
    withDumpProgress(
      '/nonexistent-ferry-dir',
      (e) => seen.push(e),
      () => 0,
      async () => {
        throw new Error('criu failed');
      },
    ),
    /criu failed/,
  );
  assert.deepEqual(seen, [{ type: 'progress', phase: 'checkpoint', bytes: 0 }]);
});

test('post-copy pages left: counted down from the delivered bytes, never none until the page server has ended', () => {
  assert.equal(pagesLeft(1000, 0, false), 1000);
  assert.equal(pagesLeft(1000, 4096 * 400, false), 600);
  assert.equal(pagesLeft(1000, 4096 * 400 + 1, false), 600);
  // the request headers push the count past the pages: still one left until the end
  assert.equal(pagesLeft(1000, 4096 * 1000 + 24_000, false), 1);
  assert.equal(pagesLeft(1000, 4096 * 1000 + 24_000, true), 0);
  assert.equal(pagesLeft(1000, 0, true), 0);
  assert.equal(pagesLeft(0, 0, false), 0, 'nothing lazy: nothing left');
});
