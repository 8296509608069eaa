import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import tar from 'tar-stream';
import { zstdCompress, zstdDecompress } from '../runtime/zstd.ts';
import { type ArchiveMeta, FORMAT, FORMAT_VERSION } from './format.ts';
import { zstdFrames } from './frames.ts';
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

async function collect(r: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of r) out.push(c as Buffer);
  return Buffer.concat(out);
}

async function fixture(compress: 'zstd' | 'none'): Promise<{ dir: string; bytes: Buffer }> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-archive-'));
  const images = join(dir, 'images');
  await import('node:fs/promises').then((fs) => fs.mkdir(images));
  await writeFile(join(images, 'pstree.img'), Buffer.from('pstree'));
  await writeFile(join(images, 'pages-1.img'), Buffer.alloc(100_000, 7));
  await writeFile(join(images, 'stats-dump'), Buffer.from('stats'));
  await writeFile(join(dir, 'rootfs.tar'), Buffer.alloc(1024));
  const bytes = await collect(
    archiveStream({
      meta,
      configDump: { id: 'x', name: 'c1' },
      spec: { ociVersion: '1.0.2' },
      imagesDir: images,
      rootfsTar: join(dir, 'rootfs.tar'),
      compress,
    }),
  );
  return { dir, bytes };
}

for (const compress of ['zstd', 'none'] as const) {
  test(`an archive (${compress}) reads back whole, in Podman's layout`, async () => {
    const { dir, bytes } = await fixture(compress);
    try {
      const dest = join(dir, 'out');
      const got = await readArchive(Readable.from([bytes]), {
        dest,
        keep: (n) => (n.startsWith('checkpoint/pages-') ? 'disk' : 'memory'),
      });
      assert.equal(got.meta.record['name'], 'c1');
      assert.deepEqual(got.names, [
        'ferry.json',
        'config.dump',
        'spec.dump',
        'checkpoint/pages-1.img',
        'checkpoint/pstree.img',
        'checkpoint/stats-dump',
        'stats-dump',
        'rootfs-diff.tar',
      ]);
      assert.equal(got.memory.get('checkpoint/pstree.img')?.toString(), 'pstree');
      assert.equal((await readFile(join(dest, 'checkpoint/pages-1.img'))).length, 100_000);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test(`an archive (${compress}) read from an open file: whole, and refused when cut`, async () => {
    const { dir, bytes } = await fixture(compress);
    try {
      const file = join(dir, 'a.tar');
      await writeFile(file, bytes);
      const fh = await open(file, 'r');
      try {
        const got = await readArchive({ file: fh }, { dest: join(dir, 'out'), keep: () => 'disk' });
        assert.equal(got.names.length, 8);
        assert.equal((await readFile(join(dir, 'out', 'checkpoint/pages-1.img'))).length, 100_000);
      } finally {
        await fh.close();
      }
      await writeFile(file, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
      const cut = await open(file, 'r');
      try {
        await assert.rejects(readArchive({ file: cut }), { code: 'FERRY_E_ARCHIVE_INVALID' });
      } finally {
        await cut.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test(`a truncated or flipped archive (${compress}) is refused`, async () => {
    const { dir, bytes } = await fixture(compress);
    try {
      for (const cut of [10, 0.3, 0.5, 0.9].map((f) => (f < 1 ? Math.floor(bytes.length * f) : f))) {
        await assert.rejects(
          readArchive(Readable.from([bytes.subarray(0, cut)])),
          { code: 'FERRY_E_ARCHIVE_INVALID' },
          `cut ${cut} of ${bytes.length}`,
        );
      }
      // a byte inside file content (plain tar: the pages; zstd: anywhere in the frame)
      for (const at of [0.05, 0.3, 0.5, 0.8].map((f) => Math.floor(bytes.length * f))) {
        const bad = Buffer.from(bytes);
        bad[at] = bad[at]! ^ 0x40;
        if (compress === 'none' && bytes[at] === 0) continue; // tar padding and zero fill carry no content
        await assert.rejects(readArchive(Readable.from([bad])), (err: { code?: string }) =>
          ['FERRY_E_ARCHIVE_INVALID', 'FERRY_E_ARCHIVE_VERSION'].includes(err.code ?? ''),
        );
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}

test('a foreign tar and a newer format are refused with their own errors', async () => {
  const foreign = tar.pack();
  foreign.entry({ name: 'config.dump' }, '{}');
  foreign.finalize();
  await assert.rejects(readArchive(Readable.from([await collect(foreign as unknown as Readable)])), {
    code: 'FERRY_E_ARCHIVE_INVALID',
    message: /not a ferry checkpoint archive/,
  });
  const newer = tar.pack();
  newer.entry({ name: 'ferry.json' }, JSON.stringify({ ...meta, version: FORMAT_VERSION + 1 }));
  newer.finalize();
  await assert.rejects(readArchive(Readable.from([await collect(newer as unknown as Readable)])), {
    code: 'FERRY_E_ARCHIVE_VERSION',
  });
  await assert.rejects(readArchive(Readable.from([Buffer.from('hello, not an archive at all')])), {
    code: 'FERRY_E_ARCHIVE_INVALID',
  });
});

test('large files are zstd frames of their own: staged by zstd where the file lies, checked, and refused when damaged', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-archive-'));
  try {
    const images = join(dir, 'images');
    await mkdir(images);
    const pages = Buffer.concat([Buffer.from(randomBytes(150_000).toString('hex')), Buffer.alloc(100_001)]);
    await writeFile(join(images, 'pages-1.img'), pages);
    await writeFile(join(images, 'pages-2.img'), Buffer.alloc(70_000, 'a'));
    await writeFile(join(images, 'pstree.img'), Buffer.from('pstree'));
    await writeFile(join(dir, 'rootfs.tar'), Buffer.alloc(1024));
    const src = {
      meta,
      configDump: { id: 'x', name: 'c1' },
      spec: { ociVersion: '1.0.2' },
      imagesDir: images,
      rootfsTar: join(dir, 'rootfs.tar'),
      frameOfItsOwn: 64 * 1024,
      slice: 100_000,
    };
    const file = join(dir, 'a.tar.zst');
    const out = await open(file, 'w');
    try {
      await archiveIntoFile(src, out.fd).done;
    } finally {
      await out.close();
    }
    const bytes = await readFile(file);
    // the same bytes streamed, and a plain tar.zst to any zstd reader
    assert.ok((await collect(archiveStream({ ...src, compress: 'zstd' }))).equals(bytes));
    const listing = spawnSync('tar', ['--zstd', '-tf', file], { encoding: 'utf8' });
    assert.equal(listing.status, 0, listing.stderr);
    assert.match(listing.stdout, /checkpoint\/pages-1\.img\n/);

    const fh = await open(file, 'r');
    try {
      const frames = await zstdFrames(fh);
      assert.deepEqual(
        frames?.filter((f) => f.contentSize !== undefined).map((f) => f.contentSize),
        // pages-1.img in slices, each a frame (decompressed side by side); pages-2.img in one
        [100_000, 100_000, 100_000, 100_000, 1, 70_000],
      );
      const dest = join(dir, 'out');
      const got = await readArchive(
        { file: fh },
        { dest, keep: (n) => (n === 'checkpoint/pages-2.img' ? 'memory' : 'disk') },
      );
      assert.ok((await readFile(join(dest, 'checkpoint/pages-1.img'))).equals(pages));
      assert.equal(got.memory.get('checkpoint/pages-2.img')?.length, 70_000);
      // nothing of the staging's own is left beside the files
      assert.deepEqual((await readdir(join(dest, 'checkpoint'))).sort(), ['pages-1.img', 'pstree.img']);
    } finally {
      await fh.close();
    }

    // a flipped byte inside a large file's frame, and a cut inside it: refused
    const frames = await open(file, 'r').then(async (f) => {
      try {
        return (await zstdFrames(f))!;
      } finally {
        await f.close();
      }
    });
    const data = frames.filter((f) => f.contentSize === 100_000)[2]!;
    const bad = Buffer.from(bytes);
    bad[data.offset + Math.floor(data.length / 2)]! ^= 0x40;
    for (const damaged of [
      bad,
      bytes.subarray(0, data.offset + 1000),
      bytes.subarray(0, data.offset + data.length),
    ]) {
      await writeFile(file, damaged);
      const f = await open(file, 'r');
      try {
        await assert.rejects(readArchive({ file: f }, { dest: join(dir, 'bad'), keep: () => 'disk' }), {
          code: 'FERRY_E_ARCHIVE_INVALID',
        });
      } finally {
        await f.close();
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('an archive of an older ferry (one zstd frame, headers from tar-stream), or recompressed whole, still stages from a file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-archive-'));
  try {
    const pages = Buffer.concat([Buffer.from(randomBytes(100_000).toString('hex')), Buffer.alloc(80_000)]);
    const files: [string, Buffer][] = [
      ['ferry.json', Buffer.from(JSON.stringify(meta))],
      ['checkpoint/pages-1.img', pages],
    ];
    const manifest = {
      files: files.map(([name, data]) => ({
        name,
        size: data.length,
        sha256: createHash('sha256').update(data).digest('hex'),
      })),
    };
    const pack = tar.pack();
    for (const [name, data] of files) pack.entry({ name }, data);
    pack.entry({ name: 'ferry-manifest.json' }, JSON.stringify(manifest));
    pack.finalize();
    const packed = await collect(
      Readable.from([await collect(pack as unknown as Readable)]).pipe(zstdCompress()),
    );
    const file = join(dir, 'old.tar.zst');
    await writeFile(file, packed);
    const fh = await open(file, 'r');
    try {
      assert.equal((await zstdFrames(fh))?.length, 1);
      const got = await readArchive({ file: fh }, { dest: join(dir, 'out'), keep: () => 'disk' });
      assert.deepEqual(got.names, ['ferry.json', 'checkpoint/pages-1.img']);
      assert.ok((await readFile(join(dir, 'out', 'checkpoint/pages-1.img'))).equals(pages));
    } finally {
      await fh.close();
    }
    // recompressed whole by the zstd program from a file: one frame that records its size, read as one stream
    await writeFile(join(dir, 'old.tar'), await collect(Readable.from([packed]).pipe(zstdDecompress())));
    const z = spawnSync('zstd', ['-q', '-f', '-o', join(dir, 'again.tar.zst'), join(dir, 'old.tar')]);
    assert.equal(z.status, 0, String(z.stderr));
    const again = await open(join(dir, 'again.tar.zst'), 'r');
    try {
      assert.ok(((await zstdFrames(again))?.[0]?.contentSize ?? 0) > 0);
      const got = await readArchive({ file: again }, { dest: join(dir, 'out2'), keep: () => 'disk' });
      assert.deepEqual(got.names, ['ferry.json', 'checkpoint/pages-1.img']);
    } finally {
      await again.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
