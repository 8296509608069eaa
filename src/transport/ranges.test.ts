import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { CrcMeter, planRanges, RANGE_MIN_FILE, writeRange } from './ranges.ts';

test('a large file cut into ranges and written concurrently in place arrives byte for byte, with matching CRCs', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'ferry-ranges-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const src = join(base, 'src');
  const dst = join(base, 'dst');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(src);
  mkdirSync(dst);
  const data = randomBytes(RANGE_MIN_FILE + 12345);
  writeFileSync(join(src, 'pages-1.img'), data);
  writeFileSync(join(src, 'core-1.img'), 'small');
  const ranges = await planRanges(src, ['pages-1.img', 'core-1.img'], 4);
  assert.equal(ranges.length, 4, 'only the large file is cut');
  assert.equal(
    ranges.reduce((s, r) => s + r.length, 0),
    data.length,
  );
  assert.ok(ranges.every((r) => r.offset % (1 << 20) === 0));
  const results = await Promise.all(
    ranges.map(async (r) => {
      const meter = new CrcMeter();
      const got = await writeRange(
        dst,
        r,
        createReadStream(join(src, r.file), { start: r.offset, end: r.offset + r.length - 1 }).pipe(meter),
      );
      return { got, sent: meter.crc >>> 0 };
    }),
  );
  for (const r of results) assert.equal(r.got.crc, r.sent);
  assert.ok(readFileSync(join(dst, 'pages-1.img')).equals(data));
});

test('short, long and misnamed ranges are refused', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'ferry-ranges-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  await assert.rejects(
    writeRange(base, { file: 'x', offset: 0, length: 10, total: 10 }, Readable.from([Buffer.alloc(4)])),
    /4 of 10 bytes/,
  );
  await assert.rejects(
    writeRange(base, { file: 'y', offset: 0, length: 4, total: 10 }, Readable.from([Buffer.alloc(8)])),
    /longer than announced/,
  );
  await assert.rejects(
    writeRange(base, { file: '../z', offset: 0, length: 1, total: 1 }, Readable.from([Buffer.alloc(1)])),
    /bad file name/,
  );
  await assert.rejects(
    writeRange(base, { file: 'w', offset: 8, length: 4, total: 10 }, Readable.from([])),
    /outside/,
  );
});
