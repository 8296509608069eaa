import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parseStats, readStats } from './stats.ts';

const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url).pathname;

test('parses a real stats-dump written by CRIU 4.2', () => {
  const s = parseStats(readFileSync(fixture('stats-dump')));
  assert.ok(s.dump);
  assert.ok((s.dump.frozenTimeUs ?? 0) > 0);
  assert.ok((s.dump.pagesWritten ?? 0) > 0);
  assert.equal(s.restore, undefined);
});

test('parses a real stats-restore written by CRIU 4.2', () => {
  const s = parseStats(readFileSync(fixture('stats-restore')));
  assert.ok(s.restore);
  assert.ok((s.restore.restoreTimeUs ?? 0) > 0);
});

test('rejects garbage and truncation', () => {
  assert.throws(() => parseStats(Buffer.from('hello world!!')), /bad magic/);
  const good = readFileSync(fixture('stats-dump'));
  assert.throws(() => parseStats(good.subarray(0, good.length - 5)), /truncated/);
});

test('a missing stats file reads as undefined', async () => {
  assert.equal(await readStats('/nonexistent/stats-dump'), undefined);
});
