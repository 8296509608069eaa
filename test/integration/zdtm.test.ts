// A sample of CRIU's zdtm static tests through a real migration a -> b, in make test: one to three tests of every
// category, each with one strategy (the strategies take turns, so each meets every kind of state), under zdtm's
// own protocol (bench/zdtm-run.ts). A migration that fails must leave the container running on the source, once,
// as it was (the harness checks): refused before the freeze, or rolled back. `ferry bench zdtm` runs them all with every strategy (docs/conformance.md).
// What is expected of each is written down: a test that fails without being listed fails this file, and so
// does a listed one that starts passing (the list is then out of date: take it out).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  canDropUid,
  type Harness,
  runTest,
  type TestResult,
  ZDTM_BUNDLE_POLICY,
} from '../../bench/zdtm-run.ts';
import { buildTests, ensureSuite, readDesc, type Suite } from '../../bench/zdtm-suite.ts';
import { type Bed, FERRY_ARGV, missingPrerequisite, skipUnlessReady, startBed } from './helpers.ts';

type Strategy = 'cold' | 'postcopy' | 'precopy' | 'auto';

/**
 * category -> tests; the strategies are dealt in turn down the whole list (the rollback case, last, falls on
 * post-copy: keep the count before it one more than a multiple of four). A few tests of each category keep the
 * file near a minute of make test; `ferry bench zdtm` runs every test with every strategy.
 */
const SAMPLE: Record<string, string[]> = {
  memory: ['maps00', 'memfd00'],
  files: ['ghost_holes_large00', 'file_locks01', 'unlink_fstat00', 'file_lease00'],
  filesystem: ['chroot', 'fifo'],
  'unix sockets': ['sockets00', 'scm03'],
  // socket-tcp-skip-in-flight: migrated with --skip-in-flight, its own CRIU option
  'inet sockets': ['socket_udp', 'socket-tcp', 'socket-tcp-skip-in-flight'],
  'timers and signals': ['posix_timers', 'signalfd00'],
  'process tree': ['zombie00', 'pthread00'],
  events: ['epoll', 'inotify00'],
  // stopped: a task stopped by SIGSTOP, which CRIU seizes with ptrace alone under a cgroup-v1 freezer
  'process state': ['vdso00', 'pty00', 'stopped'],
  'process attributes': ['caps00', 'rlimits00', 'sigaltstack'],
  'pipes and futexes': ['pipe00', 'futex'],
  'other descriptors': ['packet_sock', 'timerfd', 'eventfs00'],
  // what CRIU cannot move: refused before the freeze, the test untouched on the source
  'refused before the freeze': [
    'socket_udp-corked',
    'ptrace_sig',
    'seccomp_filter',
    'sigtrap',
    'socket-tcpbuf-local',
    'file_lease02',
    'sk-unix-listen02',
  ],
  // a restore that fails (injected on b for this container): thawed on the source, the test untouched, and the link
  // ferry made anew after the dump for its open, unlinked file removed again (the harness checks)
  'rolled back inside the freeze': ['unlink_fstat03'],
};

/** Faults injected on b, by the container's name (core/faults.ts). */
const FAULTS_ON_B = 'criu-fail:restore@z-unlink_fstat03';

const STRATEGIES: Strategy[] = ['cold', 'postcopy', 'precopy', 'auto'];

/** Everything not listed here must PASS. A listed test must end as listed (with a reason that matches). */
const EXPECTED: Record<string, { outcome: TestResult['outcome']; reason: RegExp; why: string }> = {
  'socket_udp-corked': {
    outcome: 'REFUSED',
    reason: /UDP_CORK/,
    why: 'CRIU cannot dump a corked UDP socket',
  },
  file_locks01: {
    outcome: 'FAIL',
    reason: /Failed on fd \d+/,
    why: 'it looks its locks up in /proc/self/fdinfo by the device and inode numbers of before; CRIU restores them on the copied rootfs, whose files have new inode numbers',
  },
  // it drops to uid 1000; prlimit on another uid needs CAP_SYS_RESOURCE, which this host's root lacks
  seccomp_filter: {
    outcome: 'REFUSED',
    reason: /runs as uid \d+ and this host's agent lacks CAP_SYS_RESOURCE/,
    why: 'CRIU cannot read the rlimits of a process of another uid without CAP_SYS_RESOURCE',
  },
  ptrace_sig: { outcome: 'REFUSED', reason: /traced by pid/, why: 'CRIU cannot seize a traced task' },
  sigtrap: {
    outcome: 'REFUSED',
    reason: /a SIGTRAP is pending/,
    why: "CRIU's parasite code uses SIGTRAP itself",
  },
  'socket-tcpbuf-local': {
    outcome: 'REFUSED',
    reason: /has both ends in the container and \d+ bytes unread/,
    why: 'CRIU restores a loopback TCP connection with full buffers stalled',
  },
  file_lease02: {
    outcome: 'REFUSED',
    reason: /is being broken/,
    why: 'CRIU restores a lease being broken by breaking it again',
  },
  'sk-unix-listen02': {
    outcome: 'REFUSED',
    reason: /listening unix socket \S+ has a connection not yet accepted holding \d+ bytes/,
    why: 'CRIU cannot take the data out of a unix connection in flight (found through ss, which /proc lacks)',
  },
  unlink_fstat03: {
    outcome: 'ROLLBACK',
    reason: /restore/,
    why: 'its restore is made to fail on b: the sample holds one rollback inside the freeze',
  },
};

// One test per sampled zdtm test, so that each has its own time limit; the suite, its build and the testbed are
// shared by all of them.
describe('zdtm sample: every category through a migration, each outcome as expected', () => {
  let ready: { suite: Suite; h: Harness; bed: Bed; workDir: string } | undefined;

  before(async () => {
    if (missingPrerequisite()) return;
    const suite = await ensureSuite();
    const names = Object.values(SAMPLE).flat();
    const built = await buildTests(suite, names);
    assert.deepEqual(
      names.filter((n) => !built.has(n)),
      [],
      'every sampled test builds',
    );
    const bed = await startBed(['a', 'b'], {
      bundlePolicy: ZDTM_BUNDLE_POLICY,
      agentEnv: { b: { FERRY_FAULTS: FAULTS_ON_B } },
    });
    const workDir = mkdtempSync(join(tmpdir(), 'ferry-zdtm-'));
    ready = {
      suite,
      bed,
      workDir,
      h: {
        ferryArgv: FERRY_ARGV,
        clusterFile: bed.state.clusterFile,
        workDir,
        from: 'a',
        to: 'b',
        dropUid: await canDropUid(),
      },
    };
  });

  after(async () => {
    if (!ready) return;
    await ready.bed.down();
    rmSync(ready.workDir, { recursive: true, force: true });
  });

  let i = 0;
  for (const [category, tests] of Object.entries(SAMPLE)) {
    for (const name of tests) {
      const strategy = STRATEGIES[i++ % STRATEGIES.length]!;
      it(`${category}: ${name} (${strategy})`, async (t) => {
        if (!skipUnlessReady(t)) return;
        assert.ok(ready, 'the suite and its testbed are set up');
        const { suite, h } = ready;
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
