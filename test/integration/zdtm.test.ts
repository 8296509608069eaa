// A sample of CRIU's zdtm static tests through a real migration a -> b, in make test: one or two tests of every
// category, each with one strategy (the strategies take turns, so each meets every kind of state), under zdtm's
// own protocol (bench/zdtm-run.ts). `ferry bench zdtm` runs them all with every strategy (docs/conformance.md).
// What is expected of each is written down: a test that fails without being listed fails this file, and so
// does a listed one that starts passing (the list is then out of date: take it out).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { canDropUid, type Harness, runTest, type TestResult } from '../../bench/zdtm-run.ts';
import { buildTests, ensureSuite, readDesc } from '../../bench/zdtm-suite.ts';
import { FERRY_ARGV, skipUnlessReady, startBed } from './helpers.ts';

type Strategy = 'cold' | 'postcopy' | 'precopy' | 'auto';

/** category -> tests; the strategies are dealt in turn down the whole list. */
const SAMPLE: Record<string, string[]> = {
  memory: ['maps00', 'mprotect00', 'cow00', 'grow_map', 'memfd00', 'shm'],
  files: ['unlink_fstat00', 'unlink_regular00', 'ghost_holes00', 'file_locks01', 'fd', 'pipe00'],
  filesystem: ['chroot', 'cwd00', 'fifo', 'mtime_mmap'],
  'unix sockets': ['sockets00', 'sk-unix-unconn', 'del_standalone_un', 'scm00'],
  'inet sockets': ['socket_udp', 'socket-tcp', 'socket-tcp6-fin-wait2', 'socket_listen', 'sock_opts00'],
  ipc: ['sem', 'msgque'],
  'timers and signals': ['posix_timers', 'timerfd', 'sigaltstack', 'signalfd00'],
  'process tree': ['zombie00', 'pthread00', 'session01', 'child_subreaper'],
  events: ['epoll', 'inotify00', 'eventfs00'],
  'process state': ['env00', 'rlimits00', 'utsname', 'vdso00', 'seccomp_filter', 'pty00', 'fpu00'],
  // what CRIU cannot move: refused before the freeze, the test untouched on the source
  'refused before the freeze': ['stopped', 'pthread02', 'vfork00', 'socket_udp-corked', 'session02'],
};

const STRATEGIES: Strategy[] = ['cold', 'postcopy', 'precopy', 'auto'];

/** Everything not listed here must PASS. A listed test must end as listed (with a reason that matches). */
const EXPECTED: Record<string, { outcome: TestResult['outcome']; reason: RegExp; why: string }> = {
  stopped: {
    outcome: 'REFUSED',
    reason: /stopped \(SIGSTOP\)/,
    why: 'the cgroup-v1 freezer never completes around a stopped task',
  },
  pthread02: {
    outcome: 'REFUSED',
    reason: /zombie with threads/,
    why: 'CRIU cannot dump a zombie with threads',
  },
  vfork00: { outcome: 'REFUSED', reason: /vfork/, why: 'CRIU cannot dump a pending vfork()' },
  'socket_udp-corked': {
    outcome: 'REFUSED',
    reason: /UDP_CORK/,
    why: 'CRIU cannot dump a corked UDP socket',
  },
  session02: {
    outcome: 'REFUSED',
    reason: /session's leader .* has exited/,
    why: 'CRIU cannot recreate a session whose leader exited and was none of its members ancestors',
  },
};

test('zdtm sample: every category through a migration, each outcome as expected', async (t) => {
  if (!skipUnlessReady(t)) return;
  const suite = await ensureSuite();
  const names = Object.values(SAMPLE).flat();
  const built = await buildTests(suite, names);
  assert.deepEqual(
    names.filter((n) => !built.has(n)),
    [],
    'every sampled test builds',
  );
  const bed = await startBed(['a', 'b']);
  const workDir = mkdtempSync(join(tmpdir(), 'ferry-zdtm-'));
  t.after(async () => {
    await bed.down();
    rmSync(workDir, { recursive: true, force: true });
  });
  const h: Harness = {
    ferryArgv: FERRY_ARGV,
    clusterFile: bed.state.clusterFile,
    workDir,
    from: 'a',
    to: 'b',
    dropUid: await canDropUid(),
  };
  let i = 0;
  for (const [category, tests] of Object.entries(SAMPLE)) {
    for (const name of tests) {
      const strategy = STRATEGIES[i++ % STRATEGIES.length]!;
      await t.test(`${category}: ${name} (${strategy})`, async () => {
        const desc = await readDesc(suite, name);
        const r = await runTest(suite, h, name, desc, strategy, 90_000);
        const want = EXPECTED[name];
        if (!want) {
          assert.equal(r.outcome, 'PASS', `${name} under ${strategy}: ${r.outcome}: ${r.reason ?? ''}`);
          return;
        }
        assert.notEqual(
          r.outcome,
          'PASS',
          `${name} is listed as a known ${want.outcome} (${want.why}) but now passes: take it off the list`,
        );
        assert.equal(r.outcome, want.outcome, `${name} under ${strategy}: ${r.outcome}: ${r.reason ?? ''}`);
        assert.match(r.reason ?? '', want.reason, `${name}: the reason changed`);
      });
    }
  }
});
