import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isSignalStopped, stoppedTasks } from './stopped-tasks.ts';

describe('stopped tasks under a cgroup-v1 freezer', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-stopped-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** A runc root with container `c` whose freezer cgroup holds `tasks`, and a /proc of those tasks. */
  function world(tasks: Record<number, { stat: string; wchan: string }>, freezer = true) {
    const root = join(dir, `runc-${Math.random().toString(36).slice(2)}`);
    const cg = join(root, 'cgroup');
    const proc = join(root, 'proc');
    mkdirSync(join(root, 'c'), { recursive: true });
    mkdirSync(cg);
    writeFileSync(
      join(root, 'c', 'state.json'),
      JSON.stringify({ cgroup_paths: freezer ? { freezer: cg, '': '/x' } : { '': '/x' } }),
    );
    writeFileSync(join(cg, 'tasks'), `${Object.keys(tasks).join('\n')}\n`);
    for (const [tid, t] of Object.entries(tasks)) {
      mkdirSync(join(proc, tid), { recursive: true });
      writeFileSync(join(proc, tid, 'stat'), t.stat);
      writeFileSync(join(proc, tid, 'wchan'), t.wchan);
    }
    return { root, proc };
  }

  it('reads the state after the command name, which may hold spaces and parentheses', () => {
    assert.equal(isSignalStopped('12 (sleep) T 7 12 7 0', 'do_signal_stop'), true);
    assert.equal(isSignalStopped('12 (a) b) T 7 12 7 0', ''), true);
    assert.equal(isSignalStopped('12 (sleep) S 7 12 7 0', 'hrtimer_nanosleep'), false);
    // frozen inside its stop (runc pause came first)
    assert.equal(isSignalStopped('12 (sleep) D 7 12 7 0', 'do_signal_stop\n'), true);
    // frozen elsewhere, or in a tracer's stop
    assert.equal(isSignalStopped('12 (sleep) D 7 12 7 0', 'do_freezer_trap'), false);
    assert.equal(isSignalStopped('12 (sleep) t 7 12 7 0', 'ptrace_stop'), false);
  });

  it("lists the stopped tasks of the container's freezer cgroup", () => {
    const { root, proc } = world({
      7: { stat: '7 (sh) S 1 7 7 0', wchan: 'do_wait' },
      8: { stat: '8 (stopped) T 7 8 7 0', wchan: 'do_signal_stop' },
      9: { stat: '9 (stopped) D 7 8 7 0', wchan: 'do_signal_stop' },
    });
    assert.deepEqual(stoppedTasks(root, 'c', proc), [8, 9]);
  });

  it('finds none without a v1 freezer, for a container runc does not know, or for tasks gone since', () => {
    const stopped = { 8: { stat: '8 (stopped) T 7 8 7 0', wchan: 'do_signal_stop' } };
    const v2 = world(stopped, false);
    assert.deepEqual(stoppedTasks(v2.root, 'c', v2.proc), []);
    const v1 = world(stopped);
    assert.deepEqual(stoppedTasks(v1.root, 'other', v1.proc), []);
    rmSync(join(v1.proc, '8'), { recursive: true });
    assert.deepEqual(stoppedTasks(v1.root, 'c', v1.proc), []);
  });
});
