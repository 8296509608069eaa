import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { cpuPercent, freezerState } from './cgroups.ts';

test('CPU % is cgroup time over wall time, per one core', () => {
  assert.equal(cpuPercent(0, 500e6, 1000), 50);
  assert.equal(cpuPercent(0, 1500e6, 1000), 150);
  assert.equal(cpuPercent(undefined, 1e9, 1000), 0, 'first sample: no rate yet');
  assert.equal(
    cpuPercent(2e9, 1e9, 1000),
    0,
    'a counter that went back (container restored elsewhere) reads 0',
  );
});

test('the freezer state is read from a v1 freezer, else from cgroup v2 events', async () => {
  const root = await mkdtemp(join(tmpdir(), 'ferry-cg-'));
  try {
    const at = async (dir: string, file: string, text: string) => {
      await mkdir(join(root, dir), { recursive: true });
      await writeFile(join(root, dir, file), text);
    };
    await at('ferry/frozen', 'cgroup.events', 'populated 1\nfrozen 1\n');
    await at('ferry/thawed', 'cgroup.events', 'populated 1\nfrozen 0\n');
    await at('ferry/gone', 'cgroup.events', 'populated 0\nfrozen 1\n');
    assert.equal(await freezerState('ferry/frozen', root), 'frozen');
    assert.equal(await freezerState('ferry/thawed', root), 'thawed');
    assert.equal(await freezerState('ferry/gone', root), 'empty');
    assert.equal(await freezerState('ferry/unknown', root), undefined, 'unreadable: runc is asked instead');
    await at('freezer/ferry/v1', 'freezer.state', 'FROZEN\n');
    await at('freezer/ferry/v1', 'cgroup.procs', '42\n');
    // a hybrid host: the unified tree's frozen stays 0 while runc freezes through v1
    await at('unified/ferry/v1', 'cgroup.events', 'populated 1\nfrozen 0\n');
    assert.equal(await freezerState('ferry/v1', root), 'frozen');
    await at('freezer/ferry/v1', 'freezer.state', 'FREEZING\n');
    assert.equal(await freezerState('ferry/v1', root), undefined, 'still freezing: runc is asked');
    await at('freezer/ferry/v1', 'cgroup.procs', '');
    assert.equal(await freezerState('ferry/v1', root), 'empty');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
