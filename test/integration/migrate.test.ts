// Cold migration with real runc and CRIU between simulated hosts. The tests share one testbed; each removes its
// containers when it ends.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { getAttributeSync, setAttributeSync } from '@napi-rs/xattr';
import type { MigrationReport } from '../../src/migration/types.ts';
import {
  assertHostClean,
  containers,
  counterCommand,
  instancesOf,
  processesWith,
  readCounter,
  readInContainer,
  runningInstancesOf,
  sharedBed,
  skipUnlessReady,
  waitFor,
} from './helpers.ts';

const bedOf = sharedBed(['a', 'b']);

test('a counter container migrates a -> b -> a, keeps counting, never runs twice', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await bedOf(t);
  const marker = `ctr-${bed.name}`;
  const run = await bed.cli([
    'run',
    '--host',
    'a',
    '--name',
    'ctr',
    '--json',
    '--',
    ...counterCommand(marker),
  ]);
  assert.equal(run.code, 0, run.stderr);
  const value = async () => {
    const c = (await containers(bed)).find((x) => x.name === 'ctr');
    return c?.pid ? await readCounter(c.pid) : undefined;
  };
  await waitFor('counter > 5', async () => ((await value()) ?? 0) > 5 || undefined);
  let from = 'a';
  for (const to of ['b', 'a']) {
    const before = (await value())!;
    let maxCopies = 0;
    const sampler = setInterval(() => {
      maxCopies = Math.max(maxCopies, runningInstancesOf(marker));
    }, 5);
    const r = await bed.cli(['migrate', 'ctr', '--to', to, '--strategy', 'cold', '--json']);
    clearInterval(sampler);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const report = JSON.parse(r.stdout) as MigrationReport;
    assert.equal(report.ok, true);
    assert.equal(report.from, from);
    assert.equal(report.to, to);
    assert.equal(report.strategy, 'cold');
    assert.deepEqual(
      report.phases.map((p) => p.name),
      ['plan', 'prepare', 'checkpoint', 'transfer', 'restore', 'confirm', 'cleanup'],
    );
    assert.ok(report.bytesSent > 0);
    assert.ok((report.criu.dump?.frozenTimeUs ?? 0) > 0, 'CRIU dump stats reported');
    assert.ok((report.criu.restore?.restoreTimeUs ?? 0) > 0, 'CRIU restore stats reported');
    assert.ok(report.freezeMs > 0);
    // (the source's copy stays frozen until the commit: it does not run)
    assert.ok(maxCopies <= 1, `the container ran ${maxCopies} times at once`);
    const list = await containers(bed);
    assert.deepEqual(
      list.map((c) => [c.name, c.host, c.status]),
      [['ctr', to, 'running']],
    );
    const after = (await value())!;
    assert.ok(after >= before, `counter went back from ${before} to ${after}`);
    await waitFor('counter keeps counting', async () => ((await value()) ?? 0) > after || undefined);
    assert.equal(instancesOf(marker), 1);
    assertHostClean(bed, from, 'ctr');
    from = to;
  }
  const rm = await bed.cli(['rm', 'ctr']);
  assert.equal(rm.code, 0, rm.stderr);
  assert.equal(processesWith(marker).length, 0);
});

test('writable rootfs, tmpfs and open files move with the container', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await bedOf(t);
  const script = [
    'echo kept-in-rootfs > /data/note',
    'echo kept-in-tmpfs > /tmp/note',
    'exec 3>>/tmp/held 4>>/data/held',
    'i=0; while :; do i=$((i+1)); echo $i >&3; echo $i >&4; sleep 0.02; done',
  ].join('; ');
  const run = await bed.cli([
    'run',
    '--host',
    'a',
    '--name',
    'files',
    '--',
    '/bin/busybox',
    'sh',
    '-c',
    script,
  ]);
  assert.equal(run.code, 0, run.stderr);
  // the shell has written its notes and is appending
  const srcPid = (await containers(bed)).find((x) => x.name === 'files')!.pid!;
  await waitFor(
    'appends begin',
    () => readInContainer(srcPid, '/tmp/held').split('\n').length > 3 || undefined,
  );
  const r = await bed.cli(['migrate', 'files', '--to', 'b', '--json']);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const c = (await containers(bed)).find((x) => x.name === 'files')!;
  assert.equal(c.host, 'b');
  const pid = c.pid!;
  assert.equal(readInContainer(pid, '/data/note'), 'kept-in-rootfs\n');
  assert.equal(readInContainer(pid, '/tmp/note'), 'kept-in-tmpfs\n');
  // the shell still holds both files open and keeps appending to them
  assert.match(readlinkSync(`/proc/${pid}/fd/3`), /\/tmp\/held$/);
  assert.match(readlinkSync(`/proc/${pid}/fd/4`), /\/data\/held$/);
  const lines = () => readInContainer(pid, '/tmp/held').trim().split('\n').map(Number);
  const n0 = lines().length;
  await waitFor('appends continue', () => lines().length > n0 + 3 || undefined);
  const seq = lines();
  assert.deepEqual(
    seq,
    seq.map((_, i) => i + 1),
    'the tmpfs file has every line once, in order',
  );
  const rootfsSeq = readInContainer(pid, '/data/held').trim().split('\n').map(Number);
  assert.deepEqual(
    rootfsSeq,
    rootfsSeq.map((_, i) => i + 1),
    'the rootfs file has every line once, in order',
  );
});

test('a bundle made by `runc spec` is copied in, survives deletion of the original, and migrates', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await bedOf(t);
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bundle-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  execFileSync('runc', ['spec'], { cwd: dir });
  const rootfs = join(dir, 'rootfs');
  mkdirSync(join(rootfs, 'bin'), { recursive: true });
  for (const d of ['proc', 'dev', 'sys', 'tmp']) mkdirSync(join(rootfs, d));
  copyFileSync('/bin/busybox', join(rootfs, 'bin/busybox'));
  execFileSync('chmod', ['755', join(rootfs, 'bin/busybox')]);
  symlinkSync('busybox', join(rootfs, 'bin/sh'));
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  config.process.args = [
    '/bin/sh',
    '-c',
    'i=0; while :; do i=$((i+1)); echo $i > /dev/shm/n; sleep 0.02; done',
  ];
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  const run = await bed.cli(['run', '--host', 'a', '--name', 'spec', '--bundle', dir]);
  assert.equal(run.code, 0, run.stderr);
  rmSync(dir, { recursive: true, force: true });
  const r = await bed.cli(['migrate', 'spec', '--to', 'b', '--compress', 'on', '--json']);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const report = JSON.parse(r.stdout);
  assert.equal(report.compressed, true, 'the image stream went zstd-compressed');
  // what crossed the link, counted after zstd: less than the files it carried
  assert.ok(report.bytesSent > 0 && report.bytesSent < report.bytesUncompressed, JSON.stringify(report));
  const c = (await containers(bed)).find((x) => x.name === 'spec')!;
  assert.equal(c.host, 'b');
  const v1 = Number(readInContainer(c.pid!, '/dev/shm/n'));
  await waitFor('counting on b', () => Number(readInContainer(c.pid!, '/dev/shm/n')) > v1 || undefined);
});

test('a FIFO the process holds open, a hard link and an xattr in the writable rootfs migrate', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await bedOf(t);
  // the shell holds the FIFO open read-write and sends every number through it before writing it down: CRIU
  // restores the open FIFO by its path, which must exist in the destination's rootfs
  const script = [
    '/bin/busybox mkfifo /data/pipe',
    'echo one inode > /data/first',
    '/bin/busybox ln /data/first /data/second',
    'exec 5<>/data/pipe',
    'i=0; while :; do i=$((i+1)); echo $i >&5; read -r x <&5; echo $x >> /data/got; sleep 0.02; done',
  ].join('; ');
  const run = await bed.cli([
    'run',
    '--host',
    'a',
    '--name',
    'fifo',
    '--',
    '/bin/busybox',
    'sh',
    '-c',
    script,
  ]);
  assert.equal(run.code, 0, run.stderr);
  const pidOn = async () => (await containers(bed)).find((x) => x.name === 'fifo')?.pid;
  const src = (await pidOn())!;
  await waitFor('the loop runs', () => readInContainer(src, '/data/got').split('\n').length > 5 || undefined);
  setAttributeSync(`/proc/${src}/root/data/first`, 'user.note', 'kept');
  const r = await bed.cli(['migrate', 'fifo', '--to', 'b', '--strategy', 'cold', '--json']);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const c = (await containers(bed)).find((x) => x.name === 'fifo')!;
  assert.equal(c.host, 'b');
  const pid = c.pid!;
  const root = `/proc/${pid}/root`;
  assert.ok(lstatSync(`${root}/data/pipe`).isFIFO());
  assert.match(readlinkSync(`/proc/${pid}/fd/5`), /\/data\/pipe$/);
  assert.equal(
    lstatSync(`${root}/data/first`).ino,
    lstatSync(`${root}/data/second`).ino,
    'one inode, two names',
  );
  assert.equal(getAttributeSync(`${root}/data/first`, 'user.note')?.toString(), 'kept');
  const got = () => readInContainer(pid, '/data/got').trim().split('\n').map(Number);
  const n0 = got().length;
  await waitFor('numbers keep coming through the FIFO', () => got().length > n0 + 3 || undefined);
  const seq = got();
  assert.deepEqual(
    seq,
    seq.map((_, i) => i + 1),
    'every number once, in order',
  );
  assert.equal((await bed.cli(['rm', 'fifo'])).code, 0);
});
