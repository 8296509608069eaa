// A rootfs holding every file type and attribute travels whole: through a live migration's image stream and through
// a checkpoint archive restored on the same host and on another one. And a process joined with `runc exec` stops a
// migration and a checkpoint before the freeze instead of being left behind.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  lchownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { getAttributeSync, listAttributesSync, setAttributeSync } from '@napi-rs/xattr';
import { type Bed, containers, hostDir, skipUnlessReady, startBed, waitFor } from './helpers.ts';

/** A container that sleeps until it is removed (busybox from the host). */
const SLEEPER = ['/bin/busybox', 'sh', '-c', 'while :; do sleep 1; done'];

/** The host pid of a running container's init. */
async function runningPid(bed: Bed, name: string): Promise<number> {
  const c = (await containers(bed)).find((x) => x.name === name);
  assert.ok(c?.pid, `${name} runs`);
  return c.pid;
}

/** One entry of a tree as compared: everything a restore must give back (inode numbers and atimes aside). */
interface Seen {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: bigint;
  size?: number;
  sha256?: string;
  /** 512-byte blocks allocated, for the sparse file. */
  blocks?: number;
  target?: string;
  rdev?: number;
  /** The first name (sorted) of the inode this name shares, for hard links. */
  sameAs?: string;
  xattrs: Record<string, string>;
}

function typeOf(st: import('node:fs').Stats): string {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  return 'unknown';
}

/** Every entry below `root` (itself included as '.'). */
function snapshot(root: string): Map<string, Seen> {
  const out = new Map<string, Seen>();
  const inodes = new Map<string, string>();
  const visit = (rel: string) => {
    const abs = rel === '.' ? root : join(root, rel);
    const st = lstatSync(abs, { bigint: true });
    const xattrs: Record<string, string> = {};
    for (const n of listAttributesSync(abs).sort())
      xattrs[n] = getAttributeSync(abs, n)?.toString('hex') ?? '';
    const seen: Seen = {
      type: typeOf(lstatSync(abs)),
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtimeNs: st.mtimeNs,
      xattrs,
    };
    if (st.isFile()) {
      seen.size = Number(st.size);
      seen.sha256 = createHash('sha256').update(readFileSync(abs)).digest('hex');
      seen.blocks = Number(st.blocks);
    }
    if (st.isSymbolicLink()) seen.target = readlinkSync(abs);
    if (st.isCharacterDevice() || st.isBlockDevice()) seen.rdev = Number(st.rdev);
    if (!st.isDirectory() && st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      if (!inodes.has(key)) inodes.set(key, rel);
      seen.sameAs = inodes.get(key)!;
    }
    out.set(rel, seen);
    if (st.isDirectory()) for (const n of readdirSync(abs).sort()) visit(rel === '.' ? n : `${rel}/${n}`);
  };
  visit('.');
  return out;
}

/** Compares two snapshots; mtimes may differ by `slackNs` (a migration sets them through a double of seconds). */
function assertSameTree(got: Map<string, Seen>, want: Map<string, Seen>, what: string, slackNs = 0n): void {
  assert.deepEqual([...got.keys()], [...want.keys()], `${what}: the same names`);
  for (const [rel, w] of want) {
    const g = got.get(rel)!;
    const d = g.mtimeNs - w.mtimeNs;
    assert.ok((d < 0n ? -d : d) <= slackNs, `${what}: ${rel} mtime ${g.mtimeNs}, want ${w.mtimeNs}`);
    const { mtimeNs: _g, blocks: gb, ...gRest } = g;
    const { mtimeNs: _w, blocks: wb, ...wRest } = w;
    assert.deepEqual(gRest, wRest, `${what}: ${rel}`);
    // holes stay holes (a filesystem may allocate a block more or less around the data)
    if (wb !== undefined)
      assert.ok((gb ?? 0) <= wb + 16, `${what}: ${rel} allocates ${gb} blocks, the source ${wb}`);
  }
}

const NS = (s: string) => `@${s}`;

/** Every file type and attribute, made from the host in a running container's rootfs (`/fx`). */
function makeFixture(root: string): void {
  const fx = join(root, 'fx');
  mkdirSync(fx);
  const file = join(fx, 'file');
  writeFileSync(file, 'content of a regular file\n');
  lchownSync(file, 1000, 1001);
  chmodSync(file, 0o640);
  setAttributeSync(file, 'user.note', Buffer.from([0, 0xff, 0x10, 0x80, 0x41]));
  execFileSync('setfacl', ['-m', 'u:1234:r--,g:2345:rw-', file]);
  linkSync(file, join(fx, 'hard'));
  for (const [n, m] of [
    ['setuid', 0o4755],
    ['setgid', 0o2711],
  ] as const) {
    writeFileSync(join(fx, n), '#!/bin/sh\n');
    chmodSync(join(fx, n), m);
  }
  // 8 MiB with one byte of data in the middle
  const sparse = join(fx, 'sparse');
  execFileSync('truncate', ['-s', '8M', sparse]);
  execFileSync('dd', [`of=${sparse}`, 'bs=1', 'seek=4194304', 'conv=notrunc', 'status=none'], { input: 'x' });
  const sticky = join(fx, 'sticky');
  mkdirSync(sticky);
  lchownSync(sticky, 1000, 1000);
  chmodSync(sticky, 0o1777);
  execFileSync('setfacl', ['-d', '-m', 'u:1234:rwx', sticky]);
  writeFileSync(join(sticky, 'inside'), 'x');
  symlinkSync('file', join(fx, 'link'));
  lchownSync(join(fx, 'link'), 1000, 1000);
  setAttributeSync(join(fx, 'link'), 'trusted.on-a-link', 'yes');
  symlinkSync('/nowhere/at/all', join(fx, 'dangling'));
  execFileSync('mkfifo', ['-m', '0620', join(fx, 'fifo')]);
  execFileSync('mknod', ['-m', '0666', join(fx, 'null'), 'c', '1', '3']);
  execFileSync('mknod', ['-m', '0660', join(fx, 'loop9'), 'b', '7', '9']);
  // a socket file: bound (from its directory, a bundle path may exceed sun_path's 108 bytes), then closed
  execFileSync('python3', ['-c', 'import socket; socket.socket(socket.AF_UNIX).bind("sock")'], { cwd: fx });
  lchownSync(join(fx, 'sock'), 1000, 1001);
  chmodSync(join(fx, 'sock'), 0o770);
  // (user.* is for files and directories only)
  setAttributeSync(join(fx, 'sock'), 'trusted.sock', 'kept');
  // times last, to the nanosecond, children before their directories
  const times: [string, string][] = [
    ['sticky/inside', '1000000001.000000001'],
    ['file', '1000000002.123456789'],
    ['setuid', '1000000003.5'],
    ['sparse', '1000000004.999999999'],
    ['link', '1000000005.000000700'],
    ['fifo', '1000000006.1'],
    ['sock', '1000000007.777777777'],
    ['null', '1000000008.2'],
    ['sticky', '1000000009.3'],
    ['.', '1000000010.4'],
  ];
  for (const [p, s] of times) execFileSync('touch', ['-h', '-m', '-d', NS(s), join(fx, p)]);
}

const bundleRootfs = (bed: Bed, host: string, name: string) =>
  join(hostDir(bed, host), 'containers', name, 'bundle', 'rootfs', 'fx');

test('every file type and attribute survives a migration and a checkpoint archive (same host and another)', async (t) => {
  if (!skipUnlessReady(t)) return;
  if (spawnSync('setfacl', ['--version']).status !== 0)
    assert.fail('setfacl is missing (make setup installs acl)');
  const bed = await startBed(['a', 'b']);
  const dir = mkdtempSync(join(tmpdir(), 'ferry-fidelity-'));
  t.after(async () => {
    rmSync(dir, { recursive: true, force: true });
    await bed.down();
  });
  const run = await bed.cli(['run', '--host', 'a', '--name', 'fid', '--', ...SLEEPER]);
  assert.equal(run.code, 0, run.stderr);
  makeFixture(join(hostDir(bed, 'a'), 'containers', 'fid', 'bundle', 'rootfs'));
  const want = snapshot(bundleRootfs(bed, 'a', 'fid'));
  assert.equal(want.get('sock')?.type, 'socket');
  assert.ok(want.get('sparse')!.blocks! < 64, 'the fixture is sparse');

  // 1. a live migration: the image stream (its times go through a double of seconds)
  const m = await bed.cli(['migrate', 'fid', '--to', 'b', '--strategy', 'cold', '--json']);
  assert.equal(m.code, 0, `${m.stdout}\n${m.stderr}`);
  assertSameTree(snapshot(bundleRootfs(bed, 'b', 'fid')), want, 'migrated to b', 1000n);

  // 2. an archive taken on b (where the container now runs), restored on another host (a) under its name, exactly
  const file = join(dir, 'fid.tar.zst');
  const c = await bed.cli(['checkpoint', 'fid', '--export', file, '--json']);
  assert.equal(c.code, 0, c.stderr);
  const onB = snapshot(bundleRootfs(bed, 'b', 'fid'));
  assert.equal((await bed.cli(['rm', 'fid'])).code, 0);
  const r1 = await bed.cli(['restore', '--import', file, '--host', 'a', '--json']);
  assert.equal(r1.code, 0, r1.stderr);
  assertSameTree(snapshot(bundleRootfs(bed, 'a', 'fid')), onB, 'restored on a');

  // 3. the same archive on the host it was taken on (b), under another name
  const r2 = await bed.cli(['restore', '--import', file, '--host', 'b', '--name', 'fid2', '--json']);
  assert.equal(r2.code, 0, r2.stderr);
  assertSameTree(snapshot(bundleRootfs(bed, 'b', 'fid2')), onB, 'restored on b as fid2');
  const ps = (await containers(bed)).map((x) => `${x.name}@${x.host}:${x.status}`).sort();
  assert.deepEqual(ps, ['fid2@b:running', 'fid@a:running']);
  for (const n of ['fid', 'fid2']) assert.equal((await bed.cli(['rm', n])).code, 0);
});

test('a process joined with runc exec stops a migration and a checkpoint before the freeze, naming it', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await startBed(['a', 'b']);
  const dir = mkdtempSync(join(tmpdir(), 'ferry-joined-'));
  t.after(async () => {
    rmSync(dir, { recursive: true, force: true });
    await bed.down();
  });
  const run = await bed.cli(['run', '--host', 'a', '--name', 'j', '--', ...SLEEPER]);
  assert.equal(run.code, 0, run.stderr);
  const runcRoot = join(hostDir(bed, 'a'), 'runc');
  execFileSync(
    'runc',
    ['--root', runcRoot, 'exec', '-d', 'j', '/bin/busybox', 'sh', '-c', 'exec sleep 1000'],
    { stdio: 'ignore' },
  ); // (a pipe would stay open in the detached process: wait for runc only)
  const joined = await waitFor('the joined process', () => {
    const ps = JSON.parse(
      execFileSync('runc', ['--root', runcRoot, 'ps', '--format', 'json', 'j'], { encoding: 'utf8' }),
    ) as number[];
    return ps.find((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8') === 'sleep\u00001000\u0000');
  });
  const m = await bed.cli(['migrate', 'j', '--to', 'b', '--strategy', 'cold']);
  assert.notEqual(m.code, 0, 'the migration is refused');
  assert.match(m.stderr, /FERRY_E_CONTAINER_UNMOVABLE/);
  assert.match(
    m.stderr,
    new RegExp(
      `host pid ${joined}, sleep\\): it was started in the container by runc exec \\("sleep 1000"\\)`,
    ),
  );
  const c = await bed.cli(['checkpoint', 'j', '--export', join(dir, 'j.tar'), '--leave-running']);
  assert.notEqual(c.code, 0, 'the checkpoint is refused');
  assert.match(c.stderr, /FERRY_E_CONTAINER_UNMOVABLE: container j cannot be checkpointed: .*runc exec/);
  // nothing was touched: the container and the joined process run on a, nothing went to b
  const ps = (await containers(bed)).map((x) => `${x.name}@${x.host}:${x.status}`);
  assert.deepEqual(ps, ['j@a:running']);
  assert.ok(readFileSync(`/proc/${joined}/stat`, 'utf8').includes(') S '), 'the joined process runs on');
  assert.deepEqual(readdirSync(join(dir)), [], 'no archive written');
  // once it has exited, the container migrates
  process.kill(Number(joined), 'SIGKILL');
  await waitFor('the joined process is gone', () => {
    try {
      readFileSync(`/proc/${joined}/stat`);
      return undefined;
    } catch {
      return true;
    }
  });
  const m2 = await bed.cli(['migrate', 'j', '--to', 'b', '--strategy', 'cold']);
  assert.equal(m2.code, 0, m2.stderr);
  assert.equal((await bed.cli(['rm', 'j'])).code, 0);
});

test("a container's tracked connections go with it, and one that tracks none moves with none", async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await startBed(['a', 'b']);
  t.after(() => bed.down());
  for (const name of ['ct', 'noct'])
    assert.equal((await bed.cli(['run', '--host', 'a', '--name', name, '--', ...SLEEPER])).code, 0);
  const info = async (name: string) => {
    const c = (await containers(bed)).find((x) => x.name === name);
    assert.ok(c?.pid && c.ip, `${name} runs with an address`);
    return { pid: c.pid, ip: c.ip };
  };
  // the kernel's count of the container namespace's entries (CRIU's dump asks for them; ferry's preloaded library
  // answers for the kernel when there are none)
  const tracked = (pid: number) =>
    Number(
      execFileSync(
        'nsenter',
        ['-t', String(pid), '-n', 'cat', '/proc/sys/net/netfilter/nf_conntrack_count'],
        {
          encoding: 'utf8',
        },
      ).trim(),
    );
  // ct's namespace tracks connections (a rule that uses conntrack), and one datagram from the client makes an entry
  const ct = await info('ct');
  execFileSync('nsenter', [
    '-t',
    String(ct.pid),
    '-n',
    'iptables',
    '-A',
    'INPUT',
    '-m',
    'conntrack',
    '--ctstate',
    'NEW',
    '-j',
    'ACCEPT',
  ]);
  execFileSync('ip', [
    'netns',
    'exec',
    bed.state.client.netns,
    'bash',
    '-c',
    `echo x > /dev/udp/${ct.ip}/9999`,
  ]);
  const before = tracked(ct.pid);
  assert.ok(before >= 1, `ct tracks its datagram (count ${before})`);
  assert.equal(tracked((await info('noct')).pid), 0, 'noct tracks nothing');
  for (const name of ['ct', 'noct']) {
    const m = await bed.cli(['migrate', name, '--to', 'b', '--strategy', 'cold']);
    assert.equal(m.code, 0, `${name}: ${m.stdout}\n${m.stderr}`);
  }
  assert.ok(tracked((await info('ct')).pid) >= 1, 'the entry was restored on b');
  assert.equal(tracked((await info('noct')).pid), 0, 'noct still tracks nothing');
  for (const name of ['ct', 'noct']) assert.equal((await bed.cli(['rm', name])).code, 0);
});

test("a container's tmpfs mounts move with their content, owner, mode and mtime, empty or not", async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await startBed(['a', 'b']);
  t.after(() => bed.down());
  const run = await bed.cli(['run', '--host', 'a', '--name', 'tm', '--', ...SLEEPER]);
  assert.equal(run.code, 0, run.stderr);
  // /tmp stays empty (the preloaded tmpfs library archives it: ferry's own path), /dev/shm holds a file (GNU tar's)
  const root = `/proc/${await runningPid(bed, 'tm')}/root`;
  chmodSync(`${root}/tmp`, 0o1730);
  lchownSync(`${root}/tmp`, 12, 34);
  execFileSync('touch', ['-d', '2024-02-03 04:05:06.789', `${root}/tmp`]);
  writeFileSync(`${root}/dev/shm/segment`, 'shared');
  const look = (r: string) =>
    ['/tmp', '/dev/shm', '/proc/acpi', '/sys/firmware'].map((d) => {
      const st = lstatSync(`${r}${d}`, { bigint: true });
      return { d, mode: st.mode, uid: st.uid, gid: st.gid, mtimeS: st.mtimeNs / 1_000_000_000n };
    });
  const before = look(root);
  for (const to of ['b', 'a']) {
    const m = await bed.cli(['migrate', 'tm', '--to', to, '--strategy', 'cold']);
    assert.equal(m.code, 0, `${m.stdout}\n${m.stderr}`);
  }
  const after = `/proc/${await runningPid(bed, 'tm')}/root`;
  // (times to the second: tar's archive keeps no more)
  assert.deepEqual(look(after), before);
  assert.deepEqual(readdirSync(`${after}/tmp`), []);
  assert.equal(readFileSync(`${after}/dev/shm/segment`, 'utf8'), 'shared');
  assert.throws(
    () => writeFileSync(`${after}/proc/acpi/x`, ''),
    /EROFS/,
    'the masking mount stays read-only',
  );
  assert.equal((await bed.cli(['rm', 'tm'])).code, 0);
});

test('a process the host put in a nested cgroup of the container is restored there, the others where they were', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await startBed(['a', 'b']);
  t.after(() => bed.down());
  const run = await bed.cli([
    'run',
    '--host',
    'a',
    '--name',
    'cg',
    '--',
    '/bin/busybox',
    'sh',
    '-c',
    'sleep 100000 & while :; do sleep 1; done',
  ]);
  assert.equal(run.code, 0, run.stderr);
  const children = (pid: number) =>
    readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  const isSleeper = (p: number) => readFileSync(`/proc/${p}/cmdline`, 'utf8').startsWith('sleep\u0000100000');
  // the pids hierarchy where the host has v1 controllers, else v2: where a cgroup's path is, and its mount
  const hierarchy = (pid: number) => {
    const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n');
    const v1 = lines.find((l) => l.split(':')[1] === 'pids');
    if (v1) return { line: 'pids', path: v1.split(':')[2]!, mount: '/sys/fs/cgroup/pids' };
    const v2 = lines.find((l) => l.startsWith('0::'))!;
    const unified = '/sys/fs/cgroup/unified';
    return {
      line: '',
      path: v2.split(':')[2]!,
      mount: existsSync(`${unified}/cgroup.procs`) ? unified : '/sys/fs/cgroup',
    };
  };
  const cgroupOf = (pid: number, line: string) =>
    readFileSync(`/proc/${pid}/cgroup`, 'utf8')
      .trim()
      .split('\n')
      .find((l) => l.split(':')[1] === line)!
      .split(':')[2];
  let pid = await runningPid(bed, 'cg');
  const sleeper = await waitFor('the container runs its sleep', () => children(pid).find(isSleeper));
  const h = hierarchy(pid);
  mkdirSync(`${h.mount}${h.path}/inner`);
  writeFileSync(`${h.mount}${h.path}/inner/cgroup.procs`, String(sleeper));
  assert.equal(cgroupOf(sleeper, h.line), `${h.path}/inner`);
  const m = await bed.cli(['migrate', 'cg', '--to', 'b', '--strategy', 'cold']);
  assert.equal(m.code, 0, `${m.stdout}\n${m.stderr}`);
  pid = await runningPid(bed, 'cg');
  const there = hierarchy(pid).path;
  assert.notEqual(there, h.path, "b's cgroup for the container");
  const moved = children(pid).find(isSleeper);
  assert.ok(moved, 'the sleep was restored');
  assert.equal(cgroupOf(moved, h.line), `${there}/inner`, 'in the nested cgroup, made again on b');
  assert.equal(cgroupOf(pid, h.line), there, 'the container init in the container cgroup');
  assert.equal((await bed.cli(['rm', 'cg'])).code, 0);
});
