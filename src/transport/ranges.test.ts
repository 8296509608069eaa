import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { CrcMeter, planRanges, RANGE_MIN_FILE, readRange, writeRange } from './ranges.ts';

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

/** Re-cuts a stream into pieces of `size` bytes (piece headers then straddle chunk boundaries). */
async function* rechunk(body: Readable, size: number): AsyncGenerator<Buffer> {
  let carry = Buffer.alloc(0);
  for await (const c of body) {
    carry = Buffer.concat([carry, c as Buffer]);
    while (carry.length >= size) {
      yield carry.subarray(0, size);
      carry = carry.subarray(size);
    }
  }
  if (carry.length) yield carry;
}

test('sparse ranges with growing totals, written out of order and at once, never shrink the file; holes stay zero', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'ferry-ranges-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const src = join(base, 'src');
  const dst = join(base, 'dst');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(src);
  mkdirSync(dst);
  const P = 4096;
  // data and zero pages mixed; the file ends in zero pages (only the file length makes them exist)
  const data = Buffer.concat([
    randomBytes(5 * P),
    Buffer.alloc(40 * P),
    randomBytes(3 * P),
    Buffer.alloc(2 * P),
    randomBytes(70 * P),
    Buffer.alloc(8 * P),
  ]);
  writeFileSync(join(src, 'pages-1.img'), data);
  // as the tail hands them out: each ends where the file ended then
  const cuts = [0, 16 * P, 48 * P, 100 * P, data.length];
  const ranges = cuts.slice(0, -1).map((offset, i) => ({
    file: 'pages-1.img',
    offset,
    length: cuts[i + 1]! - offset,
    total: cuts[i + 1]!,
  }));
  let zero = 0;
  await Promise.all(
    [...ranges].reverse().map(async (r, i) => {
      const { body, meter, zeroBytes } = readRange(join(src, r.file), r, { sparse: true });
      const got = await writeRange(dst, r, Readable.from(rechunk(body, 3 + i * 4)), { sparse: true });
      assert.equal(got.bytes, meter.bytes);
      assert.equal(got.crc, meter.crc >>> 0);
      zero += zeroBytes();
    }),
  );
  assert.ok(readFileSync(join(dst, 'pages-1.img')).equals(data));
  assert.equal(zero, 50 * P, 'whole zero pages skipped');
  // a piece claiming more than the range is refused as corruption
  const bad = Readable.from([Buffer.from([0x5a, 0, 0, 0x40, 0])]);
  await assert.rejects(
    writeRange(dst, { file: 'x.img', offset: 0, length: 4096, total: 4096 }, bad, { sparse: true }),
    { code: 'FERRY_E_TRANSFER_CORRUPT', message: /bad piece/ },
  );
});
