// The migration renderer without a terminal (a log, a pipe): phases as lines, progress as a plain line at most
// every second and at the end, never a bar's control characters.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { MigrationRenderer } from './render.ts';

test('no TTY: progress lines at most every second and the last one, no escape sequences', () => {
  let out = '';
  const sink = new Writable({
    write(chunk, _enc, done) {
      out += chunk;
      done();
    },
  }) as unknown as NodeJS.WriteStream;
  const r = new MigrationRenderer(sink);
  r.event({ type: 'phase', phase: 'transfer', state: 'start' });
  for (let b = 1; b <= 100; b++)
    r.event({ type: 'progress', phase: 'transfer', bytes: b << 20, total: 100 << 20 });
  r.event({ type: 'phase', phase: 'transfer', state: 'end', ms: 12 });
  r.finish();
  const lines = out.trimEnd().split('\n');
  // the first progress line, the last (100 %), and the phase's end; the 98 in between came within a second
  assert.equal(lines.length, 3, out);
  assert.match(lines[0]!, /transfer\s+1\.0 MiB \/ 100 MiB/);
  assert.match(lines[1]!, /transfer\s+100 MiB \/ 100 MiB/);
  assert.match(lines[2]!, /ok\s+transfer\s+12 ms/);
  assert.doesNotMatch(out, /\x1b|\r/);
});
