// The links a dump that leaves the tasks running removes (CRIU --link-remap), made anew from the holder's descriptor:
// images written as CRIU writes them, a real file open and unlinked in this process, and a real `ln -L` through
// /proc/PID/root (this process's root is the host's, so the "rootfs" here is `/`).
import assert from 'node:assert/strict';
import {
  closeSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { create, type DescMessage, type MessageInitShape, toBinary } from '@bufbuild/protobuf';
import { fd_types, file_entrySchema } from '../images/gen/fdinfo_pb.js';
import { remap_file_path_entrySchema, remap_type } from '../images/gen/remap-file-path_pb.js';
import { IMG_COMMON_MAGIC, MAGIC } from '../images/image-file.ts';
import { linkRemaps } from '../images/link-remaps.ts';
import { relinkRemaps, removeRelinked } from './link-remaps.ts';

/** An image as CRIU frames it: the common magic, the image's magic, then each entry after its u32 length. */
function image<D extends DescMessage>(magic: number, schema: D, entries: MessageInitShape<D>[]): Uint8Array {
  const parts: Uint8Array[] = [];
  const head = new DataView(new ArrayBuffer(8));
  head.setUint32(0, IMG_COMMON_MAGIC, true);
  head.setUint32(4, magic, true);
  parts.push(new Uint8Array(head.buffer));
  for (const e of entries) {
    const body = toBinary(schema, create(schema, e));
    const len = new DataView(new ArrayBuffer(4));
    len.setUint32(0, body.length, true);
    parts.push(new Uint8Array(len.buffer), body);
  }
  return Buffer.concat(parts);
}

const reg = (id: number, name: string) => ({
  type: fd_types.REG,
  id,
  reg: { id, flags: 0, pos: 0n, fown: { uid: 0, euid: 0, signum: 0, pidType: 0, pid: 0 }, name },
});

function writeImages(dir: string, orig: string, remap: string, type = remap_type.LINKED): void {
  writeFileSync(
    join(dir, 'remap-fpath.img'),
    image(MAGIC.remapFpath, remap_file_path_entrySchema, [{ origId: 1, remapId: 2, remapType: type }]),
  );
  writeFileSync(join(dir, 'files.img'), image(MAGIC.files, file_entrySchema, [reg(1, orig), reg(2, remap)]));
}

describe('link remaps', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-remap-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the linked remaps of a dump by name, and no ghost file', () => {
    const remaps = image(MAGIC.remapFpath, remap_file_path_entrySchema, [
      { origId: 1, remapId: 2, remapType: remap_type.LINKED },
      { origId: 3, remapId: 4, remapType: remap_type.GHOST },
    ]);
    const files = image(MAGIC.files, file_entrySchema, [
      reg(1, '/data/a'),
      reg(2, '/data/link_remap.2'),
      reg(3, '/data/b'),
    ]);
    assert.deepEqual(linkRemaps(remaps, files), [{ orig: '/data/a', remap: '/data/link_remap.2' }]);
    assert.deepEqual(linkRemaps(undefined, files), []);
  });

  it('links an open, unlinked file back under the remap name from its descriptor, and a rollback removes it', async () => {
    const images = mkdtempSync(join(dir, 'images-'));
    const bundle = mkdtempSync(join(dir, 'bundle-'));
    writeFileSync(join(bundle, 'config.json'), JSON.stringify({ root: { path: '/' } }));
    const data = mkdtempSync(join(dir, 'data-'));
    const orig = join(data, 'f');
    writeFileSync(orig, 'content');
    linkSync(orig, join(data, 'f.link'));
    const fd = openSync(orig, 'r');
    try {
      unlinkSync(orig);
      const remap = join(data, 'link_remap.2');
      writeImages(images, orig, remap);
      const made: string[] = [];
      await relinkRemaps({ images, bundle, pids: async () => [process.pid] }, made);
      assert.deepEqual(made, [remap]);
      assert.equal(statSync(remap).ino, statSync(join(data, 'f.link')).ino, 'the same inode, linked');
      // made already (a dump that kept it): listed, not made twice
      const again: string[] = [];
      await relinkRemaps({ images, bundle, pids: async () => [process.pid] }, again);
      assert.deepEqual(again, [remap]);
      await removeRelinked(made);
      assert.throws(() => statSync(remap));
    } finally {
      closeSync(fd);
    }
  });

  it('fails with the file named when no process holds it, and makes nothing', async () => {
    const images = mkdtempSync(join(dir, 'images-'));
    const bundle = mkdtempSync(join(dir, 'bundle-'));
    writeFileSync(join(bundle, 'config.json'), JSON.stringify({ root: { path: '/' } }));
    writeImages(images, join(dir, 'gone'), join(dir, 'link_remap.9'));
    const made: string[] = [];
    await assert.rejects(
      relinkRemaps({ images, bundle, pids: async () => [process.pid] }, made),
      (e: Error & { code?: string }) =>
        e.code === 'FERRY_E_CHECKPOINT_FAILED' && /no process of the container holds it open/.test(e.message),
    );
    assert.deepEqual(made, []);
  });

  it('refuses a remap whose directory is reached through a symlink', async () => {
    const images = mkdtempSync(join(dir, 'images-'));
    const bundle = mkdtempSync(join(dir, 'bundle-'));
    writeFileSync(join(bundle, 'config.json'), JSON.stringify({ root: { path: 'rootfs' } }));
    mkdirSync(join(bundle, 'rootfs'));
    symlinkSync('/etc', join(bundle, 'rootfs', 'etc'));
    writeImages(images, '/etc/f', '/etc/link_remap.3');
    await assert.rejects(
      relinkRemaps({ images, bundle, pids: async () => [process.pid] }, []),
      /reached through a symlink/,
    );
  });

  it('does nothing for a dump without remaps', async () => {
    const images = mkdtempSync(join(dir, 'images-'));
    const made: string[] = [];
    await relinkRemaps(
      {
        images,
        bundle: '/nonexistent',
        pids: async () => {
          throw new Error('not asked');
        },
      },
      made,
    );
    assert.deepEqual(made, []);
  });
});
