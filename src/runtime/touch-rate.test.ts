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

test('the touch rate sums the processes that could be measured over the window', async () => {
  const cleared: number[] = [];
  const r = await measureTouchRate([10, 11, 12], 100, {
    clear: async (pid) => {
      if (pid === 12) throw new Error('ESRCH');
      cleared.push(pid);
    },
    smaps: async (pid) => (pid === 10 ? SMAPS : 'Referenced: 0 kB\n'),
    sleep: async () => {
      await new Promise((res) => setTimeout(res, 100));
    },
  });
  assert.deepEqual(cleared, [10, 11]);
  assert.ok(r);
  assert.equal(r.bytes, (16388 + 8) * 1024);
  assert.ok(r.bytesPerSec > 0 && r.bytesPerSec < r.bytes * 11);
  assert.equal(await measureTouchRate([], 10), undefined);
});
