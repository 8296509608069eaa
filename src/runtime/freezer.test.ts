import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { freezeRecorded, freezeV1, freezeV2 } from './freezer.ts';

// (plain files stand for the cgroup files: what is written reads back, as a freezer that froze at once)

test('v1: FROZEN written and read back; a freezer in no known state is thawed again and runc asked', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-freezer-'));
  try {
    const file = join(dir, 'freezer.state');
    await writeFile(file, 'THAWED\n');
    assert.equal(await freezeV1(file), true);
    assert.equal(readFileSync(file, 'utf8'), 'FROZEN');
    assert.equal(await freezeV1(join(dir, 'missing', 'freezer.state')), false, 'no freezer: runc is asked');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('v2: cgroup.freeze set and frozen awaited; not frozen in time: set back and runc asked', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-freezer-'));
  try {
    await writeFile(join(dir, 'cgroup.events'), 'populated 1\nfrozen 1\n');
    assert.equal(await freezeV2(dir), true);
    assert.equal(readFileSync(join(dir, 'cgroup.freeze'), 'utf8'), '1');
    await writeFile(join(dir, 'cgroup.events'), 'populated 1\nfrozen 0\n');
    assert.equal(await freezeV2(dir, 50), false);
    assert.equal(readFileSync(join(dir, 'cgroup.freeze'), 'utf8'), '0', 'thawed again');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('only a container that runs is frozen directly; anything else goes to runc pause', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-freezer-'));
  try {
    const runc = join(dir, 'runc', 'web');
    const freezer = join(dir, 'freezer');
    for (const d of [runc, freezer]) await mkdir(d, { recursive: true });
    await writeFile(join(freezer, 'freezer.state'), 'THAWED\n');
    // this test's own process stands for the container's init (alive, with its start time)
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    const state = (pid: number) =>
      writeFile(
        join(runc, 'state.json'),
        JSON.stringify({ init_process_pid: pid, init_process_start: start, cgroup_paths: { freezer } }),
      );
    await state(process.pid);
    assert.equal(await freezeRecorded(runc), true);
    assert.equal(readFileSync(join(freezer, 'freezer.state'), 'utf8'), 'FROZEN');
    assert.equal(await freezeRecorded(runc), false, 'paused already: runc says so');
    await writeFile(join(freezer, 'freezer.state'), 'THAWED\n');
    await state(process.pid + 1_000_000);
    assert.equal(await freezeRecorded(runc), false, 'not running');
    assert.equal(readFileSync(join(freezer, 'freezer.state'), 'utf8'), 'THAWED\n', 'left alone');
    assert.equal(await freezeRecorded(join(dir, 'runc', 'none')), false, 'unknown');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
