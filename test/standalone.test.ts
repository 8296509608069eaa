// The repository stands alone and its history reads as a product's: no file cites a document the repository does
// not hold, and the changelog names released versions with dates, the newest being the one the agents report.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { VERSION } from '../src/agent/main.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const read = (path: string) => readFileSync(`${root}${path}`, 'utf8');

/** Files tracked by git (and new ones not ignored), as the repository ships them. */
function trackedFiles(): string[] {
  const out = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard'], {
    cwd: root,
    encoding: 'utf8',
  });
  return out.split('\n').filter((f) => f && !f.startsWith('test/fixtures/') && !/\.(svg|img|json)$/.test(f));
}

// The one file that still cites one, in a comment of the engine (which is being restructured): remove the entry
// when that comment states its fact.
const PENDING = new Set<string>([]);

describe('the repository stands alone', () => {
  it('cites no design or anchor document it does not contain', () => {
    const citing = trackedFiles().filter(
      (f) => f !== 'test/standalone.test.ts' && /\b(DESIGN|ANCHORS)\.md\b/.test(read(f)),
    );
    assert.deepEqual(
      citing.filter((f) => !PENDING.has(f)),
      [],
      'state the fact, or point at docs/ (docs/background.md)',
    );
  });
});

describe('CHANGELOG.md', () => {
  const log = read('CHANGELOG.md');
  const headings = [...log.matchAll(/^## (.*)$/gm)].map((m) => m[1]!);

  it('keeps Unreleased on top, then versions with dates, newest first', () => {
    assert.equal(headings[0], '[Unreleased]');
    const releases = headings.slice(1);
    assert.ok(releases.length > 0);
    for (const h of releases) assert.match(h, /^\[\d+\.\d+\.\d+\] - \d{4}-\d{2}-\d{2}$/);
    const dates = releases.map((h) => h.slice(-10));
    assert.deepEqual(dates, [...dates].sort().reverse(), 'newest first');
  });

  it('has its newest release be the version the package and the agents report', () => {
    const newest = /^\[(\d+\.\d+\.\d+)\]/.exec(headings[1] ?? '')?.[1];
    assert.equal(newest, JSON.parse(read('package.json')).version);
    assert.equal(newest, VERSION);
  });

  it('groups changes under the headings of Keep a Changelog only, and speaks of the product', () => {
    assert.doesNotMatch(log, /\bsessions?\b/i);
    const groups = [...log.matchAll(/^### (.*)$/gm)].map((m) => m[1]!);
    for (const g of groups)
      assert.ok(['Added', 'Changed', 'Deprecated', 'Removed', 'Fixed', 'Security'].includes(g), g);
  });
});
