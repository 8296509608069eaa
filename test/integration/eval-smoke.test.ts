// The evaluation suites' smoke test: each runs with --quick (one run, small sizes, docs/ left alone) through the
// CLI as a user runs it, and must finish and print one JSON document with its tables. No figure is checked: they
// are measurements, and `ferry bench SUITE` without --quick is where they are taken. Two suites run at a time:
// each has its own testbed (its own name, subnet, bridges and image directories), and a --quick run mostly waits
// on its migrations and clients, so two side by side take little more than the longer one. vm needs QEMU and a
// Debian kernel (`scripts/setup.sh qemu`, which make test runs); a machine without them skips it and says why.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { EvalResult } from '../../bench/eval/model.ts';
import { vmPrerequisiteMissing } from '../../bench/eval/vm-host.ts';
import { ProcessRunner } from '../../src/runtime/exec.ts';
import { FERRY_ARGV, skipUnlessReady } from './helpers.ts';

const run = promisify(execFile);

describe('evaluation suites, --quick', { concurrency: 2 }, () => {
  // The longest first, so that the two lanes end close together: vm's guest boots under TCG where KVM cannot run
  // it (this machine: about 20 s of one core).
  for (const suite of ['vm', 'docker-paper', 'ucsd', 'thesis', 'talk', 'runc-blog']) {
    it(`ferry bench ${suite} --quick --json completes and prints its tables`, async (t) => {
      if (!skipUnlessReady(t)) return;
      if (suite === 'vm') {
        const why = await vmPrerequisiteMissing(new ProcessRunner());
        if (why && process.env['CI']) assert.fail(`vm suite prerequisites missing on CI: ${why}`);
        if (why) return t.skip(why);
      }
      const { stdout } = await run(
        FERRY_ARGV[0]!,
        [...FERRY_ARGV.slice(1), 'bench', suite, '--quick', '--json'],
        {
          maxBuffer: 64 << 20,
          timeout: 600_000,
        },
      );
      const doc = JSON.parse(stdout) as Record<string, EvalResult>;
      const r = doc[suite]!;
      assert.equal(r.suite, suite);
      assert.equal(r.quick, true);
      assert.ok(r.tables.length > 0 && r.tables.every((tb) => tb.rows.length > 0));
      assert.deepEqual(r.plots, [], '--quick writes no plots');
      assert.ok(r.machine.cores > 0 && r.command.includes(`bench ${suite}`));
    });
  }
});
