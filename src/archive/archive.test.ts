import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import tar from 'tar-stream';
import { type ArchiveMeta, FORMAT, FORMAT_VERSION } from './format.ts';
import { readArchive } from './reader.ts';
import { archiveStream } from './writer.ts';

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
