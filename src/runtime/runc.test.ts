import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { ExecOptions, ExecResult, Runner } from './exec.ts';
import { Runc, runningPidOf } from './runc.ts';

class Recorder implements Runner {
  calls: string[][] = [];
  async run(argv: string[], _o?: ExecOptions): Promise<ExecResult> {
    this.calls.push(argv);
    return { argv, code: 0, signal: null, stdout: '', stderr: '', ms: 1 };
  }
}

test('checkpoint and restore move file locks unless told not to', async () => {
  const r = new Recorder();
  const runc = new Runc(r, { root: '/run/x' });
  await runc.checkpoint('c', { imagePath: '/i', workPath: '/w' });
  await runc.restore('c', { bundle: '/b', imagePath: '/i', workPath: '/w' });
  await runc.checkpoint('c', { imagePath: '/i', workPath: '/w', fileLocks: false });
  await runc.checkpoint('c', { imagePath: '/i', workPath: '/w', preDump: true });
  const has = (i: number) => r.calls[i]!.includes('--file-locks');
  assert.deepEqual([has(0), has(1), has(2), has(3)], [true, true, false, false]);
});

test('a dump with skipInFlight hands CRIU a config file of its own that says so, removed afterwards', async () => {
  const seen: { file?: string; text?: string }[] = [];
  const r: Runner = {
    run: async (argv, o) => {
      const file = o?.env?.['CRIU_CONFIG_FILE'];
      seen.push(file ? { file, text: readFileSync(file, 'utf8') } : {});
      return { argv, code: 0, signal: null, stdout: '', stderr: '', ms: 1 };
    },
  };
  const runc = new Runc(r, { root: '/run/x' });
  await runc.checkpoint('c', { imagePath: '/i', workPath: '/w', skipInFlight: true });
  await runc.checkpoint('c', { imagePath: '/i', workPath: '/w' });
  assert.equal(seen[0]!.text, 'skip-in-flight\n');
  assert.equal(existsSync(seen[0]!.file!), false, 'removed after the dump');
  assert.deepEqual(seen[1], {}, 'no file without the option');
});

test('a running container is read from runc state.json, the init pid start time and the freezer', async () => {
  const root = await mkdtemp(join(tmpdir(), 'ferry-runc-state-'));
  try {
    const dir = join(root, 'runc', 'web');
    const proc = join(root, 'proc');
    const freezer = join(root, 'freezer');
    await mkdir(dir, { recursive: true });
    await mkdir(join(proc, '42'), { recursive: true });
    await mkdir(freezer, { recursive: true });
    const state = (start: number) =>
      writeFile(
        join(dir, 'state.json'),
        JSON.stringify({ init_process_pid: 42, init_process_start: start, cgroup_paths: { freezer } }),
      );
    // the command name may hold spaces and parentheses; the start time is field 22
    const stat = (s: string) =>
      writeFile(
        join(proc, '42', 'stat'),
        `42 (a (b) c) ${s} 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 777 10000 100 0 0\n`,
      );
    await state(777);
    await stat('S');
    await writeFile(join(freezer, 'freezer.state'), 'THAWED\n');
    assert.equal(await runningPidOf(dir, proc), 42);
    await writeFile(join(freezer, 'freezer.state'), 'FROZEN\n');
    assert.equal(await runningPidOf(dir, proc), undefined, 'paused');
    await writeFile(join(freezer, 'freezer.state'), 'THAWED\n');
    await state(778);
    assert.equal(await runningPidOf(dir, proc), undefined, 'the pid belongs to another process now');
    await state(777);
    await stat('Z');
    assert.equal(await runningPidOf(dir, proc), undefined, 'a zombie init');
    await stat('S');
    await writeFile(join(dir, 'exec.fifo'), '');
    assert.equal(await runningPidOf(dir, proc), undefined, 'created, not started');
    assert.equal(await runningPidOf(join(root, 'runc', 'none'), proc), undefined, 'unknown');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
