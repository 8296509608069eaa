// The rootfs in an archive: GNU tar and the socket list round-trip a small tree; a socket list from outside is
// checked before anything is made.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { getAttributeSync, setAttributeSync } from '@napi-rs/xattr';
import type { FerryError } from '../core/errors.ts';
import { checkSockets, RootfsArchiver } from './rootfs-archive.ts';

const root = mkdtempSync(join(tmpdir(), 'ferry-rootfs-archive-'));
after(() => rmSync(root, { recursive: true, force: true }));

const socket = { path: 'run/s', mode: 0o755, uid: 0, gid: 0, mtimeNs: '1000000000123456789', xattrs: {} };
const asRoot = process.getuid?.() === 0;

describe('RootfsArchiver', () => {
  it(
    'carries a file with an xattr and a socket file with its mode and nanosecond mtime',
    { skip: !asRoot && 'needs root (owners, trusted.*)' },
    async () => {
      const src = join(root, 'src');
      mkdirSync(join(src, 'run'), { recursive: true });
      writeFileSync(join(src, 'f'), 'data');
      setAttributeSync(join(src, 'f'), 'user.k', Buffer.from([0xff, 0]));
      execFileSync('python3', ['-c', 'import socket; socket.socket(socket.AF_UNIX).bind("s")'], {
        cwd: join(src, 'run'),
      });
      setAttributeSync(join(src, 'run', 's'), 'trusted.k', 'v');
      execFileSync('touch', ['-h', '-m', '-d', '@1000000000.123456789', join(src, 'run', 's')]);
      execFileSync('touch', ['-h', '-m', '-d', '@1000000001.5', join(src, 'run')]);
      const a = new RootfsArchiver();
      const tar = join(root, 'rootfs.tar');
      const sockets = await a.pack(src, tar);
      assert.deepEqual(
        sockets.map((s) => [s.path, s.mtimeNs, s.xattrs]),
        [['run/s', '1000000000123456789', { 'trusted.k': Buffer.from('v').toString('base64') }]],
      );
      const dst = join(root, 'dst');
      mkdirSync(dst);
      await a.unpack(tar, dst, sockets);
      assert.deepEqual(getAttributeSync(join(dst, 'f'), 'user.k'), Buffer.from([0xff, 0]));
      const s = lstatSync(join(dst, 'run', 's'), { bigint: true });
      assert.ok(s.isSocket());
      assert.equal(s.mtimeNs, 1000000000123456789n);
      assert.equal(getAttributeSync(join(dst, 'run', 's'), 'trusted.k')?.toString(), 'v');
      assert.equal(
        lstatSync(join(dst, 'run'), { bigint: true }).mtimeNs,
        1000000001500000000n,
        'its directory keeps its mtime',
      );
    },
  );

  it(
    'makes no socket file through a symlink the archive holds',
    { skip: !asRoot && 'needs root' },
    async () => {
      const src = join(root, 'linked');
      mkdirSync(src);
      symlinkSync('/tmp', join(src, 'run'));
      const tar = join(root, 'linked.tar');
      const a = new RootfsArchiver();
      await a.pack(src, tar);
      const dst = join(root, 'linked-dst');
      mkdirSync(dst);
      await assert.rejects(a.unpack(tar, dst, [socket]), (e: FerryError) => {
        assert.equal(e.code, 'FERRY_E_ARCHIVE_INVALID');
        assert.match(e.message, /\/run is not a directory/);
        return true;
      });
    },
  );
});

describe('checkSockets', () => {
  it('takes a well-formed list', () => {
    checkSockets([socket]);
    checkSockets([]);
  });

  for (const [what, bad] of [
    ['a path with ..', { ...socket, path: '../etc/s' }],
    ['an absolute path', { ...socket, path: '/etc/s' }],
    ['a mode beyond the permission bits', { ...socket, mode: 0o170000 }],
    ['a negative owner', { ...socket, uid: -1 }],
    ['a time that is not a decimal string', { ...socket, mtimeNs: 1 }],
    ['an xattr of a namespace no restore sets', { ...socket, xattrs: { 'system.nfs4_acl': '' } }],
  ] as const) {
    it(`refuses ${what}`, () => {
      assert.throws(
        () => checkSockets([bad]),
        (e: FerryError) => e.code === 'FERRY_E_ARCHIVE_INVALID',
      );
    });
  }

  it('refuses what is not a list', () => {
    assert.throws(
      () => checkSockets({}),
      (e: FerryError) => e.code === 'FERRY_E_ARCHIVE_INVALID',
    );
  });
});
