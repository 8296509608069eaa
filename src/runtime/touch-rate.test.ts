import assert from 'node:assert/strict';
import { test } from 'node:test';
import { measureTouchRate, writableReferencedBytes } from './touch-rate.ts';

const SMAPS = `55d0c0000000-55d0c0021000 r-xp 00000000 fe:00 123 /usr/bin/python3
Rss:                 132 kB
Referenced:          132 kB
7f4c4b326000-7f4c8b327000 rw-p 00000000 00:00 0
Rss:             1048580 kB
Referenced:        16388 kB
7ffc837d0000-7ffc837f1000 rw-p 00000000 00:00 0                          [stack]
Referenced:            8 kB
`;

test('only writable mappings count: nothing else can be dirtied', () => {
  assert.equal(writableReferencedBytes(SMAPS), (16388 + 8) * 1024);
  assert.equal(writableReferencedBytes('no such fields'), undefined);
});

test('two looks: the hot set is what was touched at once, the rate is how fast the touched set grows', async () => {
  const cleared: number[] = [];
  const looks = new Map<number, number>();
  const r = await measureTouchRate([10, 11, 12], 400, {
    clear: async (pid) => {
      if (pid === 12) throw new Error('ESRCH');
      cleared.push(pid);
    },
    // pid 10 touches 8 MiB at once and then 1 MiB more at the second look; pid 11 nothing
    smaps: async (pid) => {
      const n = (looks.get(pid) ?? 0) + 1;
      looks.set(pid, n);
      const kb = pid === 10 ? (n === 1 ? 8192 : 9216) : 0;
      return `7f00-7f10 rw-p 00000000 00:00 0\nReferenced: ${kb} kB\n`;
    },
    sleep: (ms) => new Promise((res) => setTimeout(res, ms)),
  });
  assert.deepEqual(cleared, [10, 11]);
  assert.ok(r);
  assert.equal(r.bytes, 9216 * 1024);
  // 1 MiB over the ~300 ms between the looks
  assert.ok(r.bytesPerSec > 2e6 && r.bytesPerSec < 5e6, String(r.bytesPerSec));
  assert.ok(r.hotBytes > 7 * 2 ** 20 && r.hotBytes <= 8 * 2 ** 20, String(r.hotBytes));
  assert.equal(await measureTouchRate([], 10), undefined);
});
