// A rootfs travels faithfully: every file type, hard links, holes, mode bits, owners, times and xattrs (ACLs
// included) come out of a round trip as they went in, entry by entry. Needs root (mknod, chown, trusted.*).
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once as eventOnce } from 'node:events';
import {
  type BigIntStats,
  chmodSync,
  chownSync,
  closeSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { getAttributeSync, listAttributesSync, setAttributeSync } from '@napi-rs/xattr';
import { FerryError } from '../../core/errors.ts';
import { decodeTree, encodeTree, measureTree, STREAM_MAGIC } from './index.ts';
import { xattrNameProblem } from './xattrs.ts';

const isRoot = process.getuid?.() === 0;
const asRoot = { skip: isRoot ? false : 'needs root (mknod, chown, trusted.* xattrs)' };

async function tmp(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-rootfs-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A POSIX ACL in its xattr form (version 2, then tag/perm/id entries), as setfacl would write it. */
function acl(entries: Array<[tag: number, perm: number, id?: number]>): Buffer {
  const b = Buffer.alloc(4 + 8 * entries.length);
  b.writeUInt32LE(2, 0);
  entries.forEach(([tag, perm, id], i) => {
    b.writeUInt16LE(tag, 4 + 8 * i);
    b.writeUInt16LE(perm, 6 + 8 * i);
    b.writeUInt32LE(id ?? 0xffffffff, 8 + 8 * i);
  });
  return b;
}
const USER_OBJ = 0x01;
const USER = 0x02;
const GROUP_OBJ = 0x04;
const MASK = 0x10;
const OTHER = 0x20;

/** Sets times in seconds (utimes takes a double), without following a symlink. */
function times(p: string, atime: number, mtime: number): void {
  lutimesSync(p, atime, mtime);
}

/** A tree with one of everything; returns the paths whose times were set (all of them). */
async function buildRootfs(root: string): Promise<void> {
  const r = (p: string) => join(root, p);
  mkdirSync(r('etc'));
  mkdirSync(r('shared'));
  mkdirSync(r('tmp'));
  mkdirSync(r('acl-dir'));
  writeFileSync(r('etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(r('etc/commented'), 'with xattrs');
  setAttributeSync(r('etc/commented'), 'user.comment', 'kept');
  setAttributeSync(r('etc/commented'), 'trusted.overlay.opaque', 'y');
  // an access ACL: user 1000 may read; mask r--
  setAttributeSync(
    r('etc/commented'),
    'system.posix_acl_access',
    acl([
      [USER_OBJ, 6],
      [USER, 4, 1000],
      [GROUP_OBJ, 4],
      [MASK, 4],
      [OTHER, 0],
    ]),
  );
  // a default ACL on a directory (inherited by what is created in it later, on the destination too)
  setAttributeSync(
    r('acl-dir'),
    'system.posix_acl_default',
    acl([
      [USER_OBJ, 7],
      [USER, 5, 1000],
      [GROUP_OBJ, 5],
      [MASK, 5],
      [OTHER, 0],
    ]),
  );
  writeFileSync(r('suid'), '#!/bin/sh\n');
  chmodSync(r('suid'), 0o4755);
  writeFileSync(r('sgid'), 'x');
  chownSync(r('sgid'), 0, 50);
  chmodSync(r('sgid'), 0o2711);
  chmodSync(r('tmp'), 0o1777);
  chmodSync(r('shared'), 0o2775);
  writeFileSync(r('owned'), 'someone else');
  chownSync(r('owned'), 1234, 5678);
  chmodSync(r('owned'), 0o640);
  // sparse: 8 MiB with 4 KiB of data at 4 MiB and one byte at the end
  const fd = openSync(r('sparse'), 'w');
  writeSync(fd, Buffer.alloc(4096, 7), 0, 4096, 4 * 1024 * 1024);
  writeSync(fd, Buffer.from([1]), 0, 1, 8 * 1024 * 1024 - 1);
  closeSync(fd);
  // hard links: a file with three names in two directories, a FIFO with two
  writeFileSync(r('etc/linked'), 'one inode');
  linkSync(r('etc/linked'), r('shared/linked-too'));
  linkSync(r('etc/linked'), r('linked-three'));
  execFileSync('mkfifo', ['-m', '0620', r('tmp/fifo')]);
  chownSync(r('tmp/fifo'), 1234, 5678);
  linkSync(r('tmp/fifo'), r('fifo-again'));
  // a socket file: bind, keep a second name, close (closing unlinks the bound name)
  const srv = createServer();
  await new Promise<void>((res) => srv.listen(r('tmp/.bound'), res));
  linkSync(r('tmp/.bound'), r('tmp/app.sock'));
  await new Promise((res) => srv.close(res));
  chmodSync(r('tmp/app.sock'), 0o660);
  execFileSync('mknod', ['-m', '0666', r('null'), 'c', '1', '3']);
  execFileSync('mknod', ['-m', '0640', r('loop200'), 'b', '7', '200']);
  chownSync(r('loop200'), 0, 6);
  symlinkSync('etc/passwd', r('passwd'));
  symlinkSync('/nowhere', r('dangling'));
  setAttributeSync(r('dangling'), 'trusted.on-the-link', 'itself');
  // times last (creating entries moves a directory's mtime), deepest first, a different pair for each
  const all: string[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const p = rel ? `${rel}/${name}` : name;
      if (lstatSync(join(root, p)).isDirectory()) walk(p);
      all.push(p);
    }
  };
  walk('');
  all.forEach((p, i) => {
    times(r(p), 1_500_000_000 + i * 1000 + 0.25, 1_600_000_000 + i * 1000 + 0.123456);
  });
}

interface Entry {
  type: number;
  mode: number;
  uid: number;
  gid: number;
  size: bigint | undefined;
  nlink: bigint;
  rdev: bigint;
  atimeNs: bigint;
  mtimeNs: bigint;
  blocks: bigint;
  xattrs: Record<string, string>;
}

/**
 * Every entry's lstat and xattrs, each taken before its directory is listed (listing moves the atime); symlink
 * targets apart (symlinks), as reading a link moves its atime too.
 */
function inventory(
  root: string,
  rel = '',
  out = new Map<string, Entry>(),
  inodes = new Map<string, string>(),
) {
  for (const name of readdirSync(join(root, rel)).sort()) {
    const p = rel ? `${rel}/${name}` : name;
    const abs = join(root, p);
    const st: BigIntStats = lstatSync(abs, { bigint: true });
    const xattrs: Record<string, string> = {};
    for (const n of listAttributesSync(abs).sort())
      xattrs[n] = getAttributeSync(abs, n)?.toString('hex') ?? '';
    out.set(p, {
      type: Number(st.mode) & 0o170000,
      mode: Number(st.mode) & 0o7777,
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: st.isDirectory() ? undefined : st.size,
      nlink: st.nlink,
      rdev: st.rdev,
      atimeNs: st.atimeNs,
      mtimeNs: st.mtimeNs,
      blocks: st.blocks,
      xattrs,
    });
    // which names share an inode, as the first name of the group (inode numbers themselves differ)
    const key = `${st.dev}:${st.ino}`;
    if (!inodes.has(key)) inodes.set(key, p);
    out.get(p)!.xattrs['(inode)'] = inodes.get(key)!;
    if (st.isDirectory()) inventory(root, p, out, inodes);
  }
  return out;
}

const US = 1000n; // utimes takes a double of seconds: ~0.25 µs of precision at today's epoch

test('a rootfs with every file type round-trips entry by entry', asRoot, async (t) => {
  const base = await tmp(t);
  const src = join(base, 'src');
  const dest = join(base, 'dest');
  mkdirSync(src);
  await buildRootfs(src);
  const before = inventory(src);
  const measured = await measureTree([{ root: src, prefix: '' }]);
  const stats = await decodeTree(encodeTree([{ root: src, prefix: '' }]), dest, { allowDevices: true });
  const after = inventory(dest);

  assert.deepEqual([...after.keys()], [...before.keys()], 'same names');
  for (const [p, want] of before) {
    const got = after.get(p)!;
    const { atimeNs, mtimeNs, blocks, ...rest } = want;
    const { atimeNs: gotA, mtimeNs: gotM, blocks: gotBlocks, ...gotRest } = got;
    assert.deepEqual(gotRest, rest, `${p}: type, mode, owner, size, links, rdev, target, xattrs`);
    const d = (a: bigint, b: bigint) => (a > b ? a - b : b - a);
    assert.ok(d(gotM, mtimeNs) <= US, `${p}: mtime ${gotM} vs ${mtimeNs}`);
    if (want.type !== 0o040000) assert.ok(d(gotA, atimeNs) <= US, `${p}: atime ${gotA} vs ${atimeNs}`);
    if (p === 'sparse') assert.ok(gotBlocks <= blocks + 8n, `sparse: ${gotBlocks} blocks vs ${blocks}`);
  }
  for (const [p, e] of before) {
    if (e.type === 0o120000)
      assert.equal(readlinkSync(join(dest, p)), readlinkSync(join(src, p)), `${p}: target`);
  }
  // spot checks of what the comparison above covers
  assert.equal(after.get('etc/linked')!.nlink, 3n);
  assert.equal(after.get('linked-three')!.xattrs['(inode)'], 'etc/linked');
  assert.equal(after.get('null')!.type, 0o020000);
  assert.equal(after.get('tmp/app.sock')!.type, 0o140000);
  assert.equal(after.get('suid')!.mode, 0o4755);
  assert.ok('system.posix_acl_default' in after.get('acl-dir')!.xattrs);
  for (const f of ['etc/passwd', 'etc/linked', 'sparse']) {
    const h = (root: string) =>
      createHash('sha256')
        .update(readFileSync(join(root, f)))
        .digest('hex');
    assert.equal(h(dest), h(src), `${f}: content`);
  }
  assert.deepEqual(stats, { ...measured, zeroBytes: stats.zeroBytes });
  assert.equal(stats.links, 3); // shared/linked-too, linked-three, fifo-again
  assert.equal(stats.nodes, 4); // fifo, socket, char and block device
});

test('device nodes only when the receiver accepts them', asRoot, async (t) => {
  const base = await tmp(t);
  const src = join(base, 'src');
  mkdirSync(src);
  execFileSync('mknod', [join(src, 'null'), 'c', '1', '3']);
  await assert.rejects(
    decodeTree(encodeTree([{ root: src, prefix: '' }]), join(base, 'd')),
    (err: unknown) => {
      assert.ok(err instanceof FerryError);
      assert.equal(err.code, 'FERRY_E_TRANSFER_CORRUPT');
      assert.match(err.message, /device node "null" refused/);
      return true;
    },
  );
  assert.deepEqual(readdirSync(join(base, 'd')), []);
});

function frame(h: Record<string, unknown>): { framed: Buffer; json: Buffer } {
  const json = Buffer.from(JSON.stringify(h));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(json.length);
  return { framed: Buffer.concat([len, json]), json };
}

/** A stream of header-only records (no regular files) with a correct end record. */
function craft(records: Record<string, unknown>[]): Buffer {
  const parts: Buffer[] = [Buffer.from(STREAM_MAGIC)];
  const hh = createHash('sha256');
  for (const r of records) {
    const { framed, json } = frame(r);
    parts.push(framed);
    hh.update(json);
  }
  parts.push(frame({ t: 'e', n: records.length, s: 0, h: hh.digest('hex') }).framed);
  return Buffer.concat(parts);
}

async function* once(b: Buffer): AsyncGenerator<Buffer> {
  yield b;
}

test('hard links never reach outside the tree or to what the stream did not create', async (t) => {
  const base = await tmp(t);
  const outside = join(base, 'outside');
  mkdirSync(outside);
  writeFileSync(join(outside, 'victim'), 'v');
  const cases: Array<[string, Record<string, unknown>[], RegExp, boolean?]> = [
    ['escaping', [{ t: 'h', p: 'x', l: '../outside/victim' }], /invalid hard link target/],
    ['absolute', [{ t: 'h', p: 'x', l: join(outside, 'victim').slice(1) }], /not a file this stream created/],
    [
      'a directory',
      [
        { t: 'd', p: 'a', m: 0o755 },
        { t: 'h', p: 'x', l: 'a' },
      ],
      /not a file this stream created/,
    ],
    [
      'through a symlink swapped in after a removal',
      [
        { t: 'd', p: 'a', m: 0o755 },
        { t: 'p', p: 'a/f', m: 0o644 },
        { t: 'r', p: 'a' },
        { t: 'l', p: 'a', m: 0o777, l: outside },
        { t: 'h', p: 'x', l: 'a/f' },
      ],
      /not a file this stream created/,
      true,
    ],
  ];
  for (const [what, records, msg, allowRemove] of cases) {
    await assert.rejects(
      decodeTree(
        once(craft(records)),
        join(base, what.replaceAll(' ', '-')),
        allowRemove ? { allowRemove } : {},
      ),
      (err: unknown) => {
        assert.ok(err instanceof FerryError, what);
        assert.equal(err.code, 'FERRY_E_TRANSFER_CORRUPT', what);
        assert.match(err.message, msg, what);
        return true;
      },
    );
  }
  assert.equal(lstatSync(join(outside, 'victim')).nlink, 1, 'nothing outside got a new name');
});

test('malformed special records are corrupt', async (t) => {
  const base = await tmp(t);
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ t: 'c', p: 'n', m: 0o600, r: [1] }, /invalid device number/],
    [{ t: 'b', p: 'n', m: 0o600, r: [-1, 3] }, /invalid device number/],
    [{ t: 'p', p: 'n', m: 0o600, mt: '12.5' }, /invalid time/],
    [{ t: 'p', p: 'n', m: 0o600, x: { 'user.a': '***' } }, /invalid value of xattr/],
    [{ t: 'p', p: 'n', m: 0o600, x: [] }, /invalid xattrs/],
  ];
  for (const [h, msg] of bad) {
    await assert.rejects(decodeTree(once(craft([h])), join(base, String(Math.random()))), {
      code: 'FERRY_E_TRANSFER_CORRUPT',
      message: msg,
    });
  }
});

test('which xattr namespaces travel', () => {
  for (const ok of [
    'user.comment',
    'trusted.overlay.opaque',
    'security.capability',
    'system.posix_acl_access',
  ])
    assert.equal(xattrNameProblem(ok), null, ok);
  for (const no of ['system.nfs4_acl', 'system.sockprotoname', 'user.', 'btrfs.compression', ''])
    assert.notEqual(xattrNameProblem(no), null, no);
});

test('an empty file under a write lease travels without breaking the lease', asRoot, async (t) => {
  const base = await tmp(t);
  const src = join(base, 'src');
  mkdirSync(src);
  const leased = join(src, 'leased');
  writeFileSync(leased, '');
  // a process holding a write lease (fcntl F_SETLEASE): an open of the file would send it SIGIO, which kills it
  const holder = spawn(
    'python3',
    [
      '-c',
      'import fcntl,os,sys,time\nfd=os.open(sys.argv[1],os.O_WRONLY)\nfcntl.fcntl(fd,1024,fcntl.F_WRLCK)\nprint("held",flush=True)\ntime.sleep(60)',
      leased,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  t.after(() => holder.kill('SIGKILL'));
  await eventOnce(holder.stdout!, 'data');
  const stats = await decodeTree(encodeTree([{ root: src, prefix: '' }]), join(base, 'dest'));
  assert.equal(stats.files, 1);
  assert.equal(lstatSync(join(base, 'dest', 'leased')).size, 0);
  // a broken lease kills the holder at once (SIGIO); give its exit the time to be seen
  await Promise.race([eventOnce(holder, 'exit'), new Promise((r) => setTimeout(r, 500))]);
  assert.equal(holder.exitCode, null, 'the lease holder still runs');
  assert.equal(holder.signalCode, null);
});
