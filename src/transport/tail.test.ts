import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { FileRange } from './ranges.ts';
import { GrowingFiles } from './tail.ts';

test('growing files go out in whole pages while written, the rest at finish, in parallel, byte for byte', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-tail-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const copy = new Map<string, Buffer>();
  const ranges: FileRange[] = [];
  let inflight = 0;
  let maxInflight = 0;
  const tail = new GrowingFiles(
    dir,
    async (r) => {
      inflight++;
      maxInflight = Math.max(maxInflight, inflight);
      await new Promise((res) => setTimeout(res, 5));
      const data = readFileSync(join(dir, r.file)).subarray(r.offset, r.offset + r.length);
      assert.equal(data.length, r.length, 'a range never reaches past what was written');
      const cur = copy.get(r.file) ?? Buffer.alloc(0);
      const next = Buffer.alloc(Math.max(cur.length, r.offset + r.length));
      cur.copy(next);
      data.copy(next, r.offset);
      copy.set(r.file, next);
      ranges.push(r);
      inflight--;
    },
    { minBytes: 8192, maxBytes: 16384, parallel: 3, pollMs: 2 },
  );
  const written = randomBytes(200_000 + 123);
  writeFileSync(join(dir, 'pages-1.img'), written.subarray(0, 50_000));
  writeFileSync(join(dir, 'pages-2.img'), '');
  writeFileSync(join(dir, 'pagemap-1.img'), 'not followed');
  tail.start();
  for (let at = 50_000; at < written.length; at += 30_000) {
    await new Promise((res) => setTimeout(res, 10));
    appendFileSync(join(dir, 'pages-1.img'), written.subarray(at, at + 30_000));
  }
  const files = await tail.finish();
  assert.deepEqual(files.sort(), ['pages-1.img', 'pages-2.img']);
  assert.ok(copy.get('pages-1.img')!.equals(written));
  assert.equal(copy.get('pages-2.img')?.length, 0, 'an empty image exists on the other side too');
  assert.ok(
    ranges.length > 5 && maxInflight > 1 && maxInflight <= 3,
    `${ranges.length} ranges, ${maxInflight} at once`,
  );
  assert.ok(
    ranges
      .filter((r) => r.file === 'pages-1.img')
      .sort((a, b) => a.offset - b.offset)
      .slice(0, -1)
      .every((r) => r.offset % 4096 === 0 && r.length % 4096 === 0),
    "every range but the file's last is whole pages",
  );
  assert.equal(tail.bytes, written.length);
});

test('a failed send surfaces at finish, and nothing more is sent after it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-tail-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'pages-1.img'), randomBytes(64 * 1024));
  let calls = 0;
  const tail = new GrowingFiles(
    dir,
    async () => {
      calls++;
      throw new Error('peer went away');
    },
    { minBytes: 4096, maxBytes: 8192, pollMs: 1 },
  );
  tail.start();
  await new Promise((res) => setTimeout(res, 30));
  await assert.rejects(tail.finish(), /peer went away/);
  assert.equal(calls, 1);
});

test('a finish that comes while the poll reads the directory does not wait for the nap after it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-tail-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  for (let i = 0; i < 20; i++) {
    // (a poll far longer than the test's patience, short enough that a failure does not hold the run for long)
    const tail = new GrowingFiles(dir, async () => {}, { pollMs: 30_000 });
    tail.start();
    // finish at once: the loop is inside its first sweep (reading the directory), no nap to wake yet
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<string>((res) => {
      timer = setTimeout(() => res('still waiting'), 5000);
    });
    const r = await Promise.race([tail.finish(), late]);
    clearTimeout(timer);
    assert.notEqual(r, 'still waiting', `round ${i}`);
  }
});

test('finish does not sit out the poll: the last stretch goes at once', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-tail-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const sent: FileRange[] = [];
  // a poll that would outlast the test: finish must wake it, not wait for it
  const tail = new GrowingFiles(dir, async (r) => sent.push(r), { pollMs: 600_000 });
  tail.start();
  await new Promise((res) => setImmediate(res));
  writeFileSync(join(dir, 'pages-1.img'), randomBytes(8192));
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((res) => {
    timer = setTimeout(() => res('still waiting'), 10_000);
  });
  const files = await Promise.race([tail.finish(), late]);
  clearTimeout(timer);
  assert.deepEqual(files, ['pages-1.img']);
  assert.equal(
    sent.reduce((n, r) => n + r.length, 0),
    8192,
  );
});
