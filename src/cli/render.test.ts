// How ferry migrate shows a migration's events, on a fake clock: on a terminal a bar redrawn in place, without one
// (a log, a pipe) phases as lines and progress as a plain line at most every second and at the end, never a bar's
// control characters; with --json --events the events themselves as NDJSON.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import type { MigrationEvent, MigrationReport } from '../api/types.ts';
import { eventPrinter, MigrationRenderer, reportText } from './render.ts';

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

/** A sink that records what is written, a terminal or not. */
function sink(isTTY: boolean) {
  const s = {
    text: '',
    isTTY,
    write(x: string) {
      s.text += x;
      return true;
    },
  };
  return s;
}

/** One whole migration's events, the clock moved by each event's delay (ms). */
function migrationEvents(): [number, MigrationEvent][] {
  const ev: [number, MigrationEvent][] = [
    [0, { type: 'started', id: 'm1' }],
    [0, { type: 'phase', phase: 'checkpoint', state: 'start' }],
  ];
  for (let i = 1; i <= 4; i++)
    ev.push([500, { type: 'progress', phase: 'checkpoint', bytes: i << 20, rate: 2 << 20 }]);
  ev.push([10, { type: 'phase', phase: 'checkpoint', state: 'end', ms: 2010 }]);
  for (let i = 1; i <= 20; i++)
    ev.push([250, { type: 'progress', phase: 'transfer', bytes: (i * 5) << 20, total: 100 << 20 }]);
  ev.push([10, { type: 'phase', phase: 'transfer', state: 'end', ms: 5000 }]);
  for (let left = 1000; left >= 0; left -= 100)
    ev.push([
      500,
      {
        type: 'progress',
        phase: 'pages',
        bytes: (1000 - left) * 4096,
        total: 1000 * 4096,
        pagesTotal: 1000,
        pagesRemaining: left,
      },
    ]);
  ev.push([10, { type: 'phase', phase: 'pages', state: 'end', ms: 5000 }]);
  return ev;
}

function play(mode: { json?: boolean; events?: boolean }, tty: boolean) {
  let now = 0;
  const stdout = sink(false);
  const stderr = sink(tty);
  const p = eventPrinter(mode, { stdout, stderr, now: () => now });
  for (const [dt, e] of migrationEvents()) {
    now += dt;
    p.event(e);
  }
  p.finish();
  return { stdout: stdout.text, stderr: stderr.text };
}

test('a terminal: one bar redrawn in place per phase, pages remaining down to 0, cleared before each phase line', () => {
  const { stdout, stderr } = play({}, true);
  assert.equal(stdout, '');
  const draws = stderr.split('\r\x1b[2K').filter((d) => d.trim() !== '');
  // every update redrawn (nothing thrown away on a terminal), each phase's end a line of its own
  assert.ok(
    draws.some((d) => /checkpoint 4\.0 MiB written {2}2\.0 MiB\/s/.test(d)),
    stderr,
  );
  assert.ok(
    draws.some((d) => /transfer \[#{15}\.{15}\] 50 MiB \/ 100 MiB/.test(d)),
    stderr,
  );
  assert.ok(
    draws.some((d) => /pages \[#{30}\] 0 of 1000 pages remaining/.test(d)),
    stderr,
  );
  assert.match(stderr, /pages \[\.{30}\] 1000 of 1000 pages remaining/);
  // the transfer's rate, measured here (the events carried none): 5 MiB every 250 ms
  assert.match(stderr, /transfer \[[#.]+\] \d+ MiB \/ 100 MiB {2}20 MiB\/s/);
  assert.match(stderr, /\r\x1b\[2K\s+\d+\.\d\ds\s+ok\s+pages/);
  assert.ok(stderr.endsWith('ms\n'), 'no bar left behind');
});

test('not a terminal: plain lines at most every second, each phase first and last, no escape sequences', () => {
  const { stdout, stderr } = play({}, false);
  assert.equal(stdout, '');
  assert.doesNotMatch(stderr, /\x1b|\r/);
  const lines = stderr.split('\n');
  const isProgress = (l: string) => /^\s*\d+\.\d\ds {7}\S/.test(l);
  const progress = lines.filter(isProgress);
  // within a phase a second apart, but for its last figure (100 %, none remaining, or the one before its end)
  const at = (l: string) => Number(l.trim().split('s ')[0]);
  const phase = (l: string) => l.trim().split(/\s+/)[1];
  for (let i = 1; i < lines.length; i++) {
    const [prev, l, next] = [lines[i - 1]!, lines[i]!, lines[i + 1] ?? ''];
    if (!isProgress(l) || !isProgress(prev) || phase(l) !== phase(prev)) continue;
    const last = /0 of 1000|100 MiB \/ 100 MiB/.test(l) || /\bok\b/.test(next);
    assert.ok(at(l) - at(prev) >= 1 || last, l);
  }
  assert.ok(progress.length < 20, `${progress.length} lines for 35 updates`);
  assert.match(stderr, /checkpoint 1\.0 MiB written/);
  // the dump's last figure, held back by the second's limit, comes before its phase's end
  assert.match(stderr, /checkpoint 4\.0 MiB written {2}2\.0 MiB\/s\n\s+\d+\.\d\ds {2}ok {3}checkpoint/);
  assert.match(stderr, /transfer\s+100 MiB \/ 100 MiB/);
  assert.match(stderr, /pages\s+1000 of 1000 pages remaining/);
  assert.match(stderr, /pages\s+0 of 1000 pages remaining \(3\.9 MiB \/ 3\.9 MiB arrived\)/);
});

test('--json --events: every event as one JSON line on stdout, nothing on stderr; --json alone: nothing', () => {
  const { stdout, stderr } = play({ json: true, events: true }, true);
  assert.equal(stderr, '');
  const lines = stdout.trimEnd().split('\n');
  assert.equal(lines.length, migrationEvents().length);
  const events = lines.map((l) => JSON.parse(l) as MigrationEvent);
  assert.deepEqual(
    events,
    migrationEvents().map(([, e]) => e),
  );
  const last = events.filter((e) => e.type === 'progress' && e.phase === 'pages').at(-1);
  assert.equal(last?.type === 'progress' && last.pagesRemaining, 0);
  const quiet = play({ json: true }, true);
  assert.equal(quiet.stdout + quiet.stderr, '');
});

test('the report says what was sent over the link, and with zstd the size before it', () => {
  const r: MigrationReport = {
    ok: true,
    id: 'm',
    container: 'web',
    from: 'a',
    to: 'b',
    strategy: 'cold',
    phases: [],
    freezeMs: 42,
    rounds: [],
    bytesSent: 1024 * 1024,
    totalMs: 100,
    criu: {},
  };
  assert.match(reportText(r), /sent 1\.0 MiB$/m);
  assert.match(
    reportText({ ...r, compressed: true, bytesUncompressed: 4 * 1024 * 1024 }),
    /sent 1\.0 MiB \(zstd, 4\.0 MiB uncompressed\)/,
  );
});
