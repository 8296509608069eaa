import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  appendFile,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rm,
  truncate,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { test } from 'node:test';
import { EarlySlices } from './early.ts';
import { type ArchiveMeta, FORMAT, FORMAT_VERSION } from './format.ts';
import { readArchive } from './reader.ts';
import { archiveIntoFile, archiveStream } from './writer.ts';

const meta: ArchiveMeta = {
  format: FORMAT,
  version: FORMAT_VERSION,
  createdAt: '2026-01-01T00:00:00.000Z',
  host: 'a',
  record: { name: 'c1' },
  versions: { ferry: '0', criu: '4.2.1', runc: '1.1.5', kernel: '6' },
  leaveRunning: true,
  tcpEstablished: false,
};

const SLICE = 100_000;

async function waitFor(what: string, ok: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const frameCount = async (work: string) => (await readdir(work).catch(() => [])).length;

async function collect(r: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of r) out.push(c as Buffer);
  return Buffer.concat(out);
}

test('page images compressed slice by slice while they are written make the same archive, byte for byte', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-early-'));
  try {
    const images = join(dir, 'images');
    await mkdir(images);
    await writeFile(join(images, 'pstree.img'), Buffer.from('pstree'));
    await writeFile(join(dir, 'rootfs.tar'), Buffer.alloc(1024));
    // hex text between zeroes, as CRIU writes a page image: appended a piece at a time
    const pages = Buffer.concat([Buffer.from(randomBytes(120_000).toString('hex')), Buffer.alloc(110_001)]);
    const work = join(dir, 'early');
    const early = new EarlySlices(images, work, { slice: SLICE, pollMs: 2 });
    early.start();
    for (let at = 0; at < pages.length; at += 30_000) {
      await appendFile(join(images, 'pages-1.img'), pages.subarray(at, at + 30_000));
      await new Promise((r) => setTimeout(r, 3));
    }
    // the three whole slices are done (the last, partial one is left to the writer)
    await waitFor('three frames', async () => (await frameCount(work)) === 3);
    const { files, error } = await early.finish();
    assert.equal(error, undefined);
    assert.deepEqual([...files.keys()], ['pages-1.img']);
    assert.equal(files.get('pages-1.img')?.bytes, 3 * SLICE);

    const src = {
      meta,
      configDump: { id: 'x', name: 'c1' },
      spec: { ociVersion: '1.0.2' },
      imagesDir: images,
      rootfsTar: join(dir, 'rootfs.tar'),
      frameOfItsOwn: 64 * 1024,
      slice: SLICE,
    };
    const write = async (path: string, ahead?: typeof files) => {
      const out = await open(path, 'w');
      try {
        await archiveIntoFile({ ...src, ...(ahead ? { early: ahead } : {}) }, out.fd).done;
      } finally {
        await out.close();
      }
      return readFile(path);
    };
    const withEarly = await write(join(dir, 'early.tar.zst'), files);
    const without = await write(join(dir, 'plain.tar.zst'));
    assert.ok(withEarly.equals(without), 'the same frames, in the same order');
    // the frames are gone once appended
    assert.equal(await frameCount(work), 0);

    // streamed (to another host), with slices compressed from the whole file at once
    const again = new EarlySlices(images, join(dir, 'early2'), { slice: SLICE, pollMs: 2 });
    again.start();
    await waitFor('three frames', async () => (await frameCount(join(dir, 'early2'))) === 3);
    const streamed = await collect(
      archiveStream({ ...src, compress: 'zstd', early: (await again.finish()).files }),
    );
    assert.ok(streamed.equals(without));

    // and it stages back whole, every checksum matched
    const fh = await open(join(dir, 'early.tar.zst'), 'r');
    try {
      await readArchive({ file: fh }, { dest: join(dir, 'out'), keep: () => 'disk' });
      assert.ok((await readFile(join(dir, 'out', 'checkpoint/pages-1.img'))).equals(pages));
    } finally {
      await fh.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a followed file that shrinks: the head start is dropped and its frames removed; a stop leaves nothing', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-early-'));
  try {
    const images = join(dir, 'images');
    await mkdir(images);
    const file = join(images, 'pages-1.img');
    await writeFile(file, Buffer.alloc(2 * SLICE + 10, 'a'));
    const work = join(dir, 'early');
    const early = new EarlySlices(images, work, { slice: SLICE, pollMs: 2 });
    early.start();
    await waitFor('two frames', async () => (await frameCount(work)) === 2);
    await truncate(file, 10);
    await new Promise((r) => setTimeout(r, 50));
    const { files, error } = await early.finish();
    assert.ok(error, 'the shrinking is an error');
    assert.equal(files.size, 0);
    assert.deepEqual(await readdir(dir), ['images']);

    // a dump that failed: stopped, whatever was under way, and nothing of it is left
    await writeFile(file, Buffer.alloc(3 * SLICE, 'b'));
    const stopped = new EarlySlices(images, work, { slice: SLICE, pollMs: 2 });
    stopped.start();
    await waitFor('a frame', async () => (await frameCount(work)) >= 1);
    await stopped.stop();
    assert.deepEqual(await readdir(dir), ['images']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
