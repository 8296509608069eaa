import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Duplex, Readable } from 'node:stream';
import { test } from 'node:test';
import {
  zstdCompress,
  zstdCompressInto,
  zstdCompressRange,
  zstdDecompress,
  zstdDecompressFile,
  zstdDecompressRange,
  zstdDecompressRangeInto,
} from './zstd.ts';

async function all(s: Readable | Duplex): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of s) out.push(c as Buffer);
  return Buffer.concat(out);
}

const through = (filter: Duplex, input: Buffer) => all(Readable.from([input]).pipe(filter));

test('the zstd program round-trips, and a cut or damaged frame fails instead of ending', async () => {
  // text and zeroes, as page data is: compressible, larger than a pipe's buffer
  const data = Buffer.concat([Buffer.from(randomBytes(300_000).toString('hex')), Buffer.alloc(200_000)]);
  const packed = await through(zstdCompress(), data);
  assert.ok(packed.length < data.length);
  assert.ok((await through(zstdDecompress(), packed)).equals(data));

  await assert.rejects(
    through(zstdDecompress(), packed.subarray(0, packed.length - 7)),
    /zstd \(decompress\) failed/,
  );
  const flipped = Buffer.from(packed);
  flipped[Math.floor(flipped.length / 2)]! ^= 0x10;
  await assert.rejects(through(zstdDecompress(), flipped), /zstd \(decompress\) failed/);

  // from an open file, which zstd reads itself
  const dir = await mkdtemp(join(tmpdir(), 'ferry-zstd-'));
  try {
    await writeFile(join(dir, 'a.zst'), packed);
    const fh = await open(join(dir, 'a.zst'), 'r');
    try {
      assert.ok((await all(zstdDecompressFile(fh.fd))).equals(data));
    } finally {
      await fh.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('zstd writes into an open file itself; the stream ends only once it exited 0, and a failed write fails it', async () => {
  const data = Buffer.concat([Buffer.from(randomBytes(300_000).toString('hex')), Buffer.alloc(200_000)]);
  const dir = await mkdtemp(join(tmpdir(), 'ferry-zstd-'));
  try {
    const fh = await open(join(dir, 'a.zst'), 'w');
    try {
      assert.equal((await through(zstdCompressInto(fh.fd), data)).length, 0);
    } finally {
      await fh.close();
    }
    assert.ok((await through(zstdDecompress(), await readFile(join(dir, 'a.zst')))).equals(data));
    // /dev/full: every write fails with ENOSPC, as on a full disk
    const full = await open('/dev/full', 'w');
    try {
      await assert.rejects(through(zstdCompressInto(full.fd), data), /zstd \(compress\) failed/);
    } finally {
      await full.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a byte range compressed into a frame that records its length, and decompressed into its place in a file', async () => {
  const data = Buffer.concat([Buffer.from(randomBytes(200_000).toString('hex')), Buffer.alloc(100_000)]);
  const dir = await mkdtemp(join(tmpdir(), 'ferry-zstd-'));
  try {
    await writeFile(join(dir, 'src'), data);
    const src = await open(join(dir, 'src'), 'r');
    const frames: Buffer[] = [];
    try {
      for (const [offset, length] of [
        [0, 250_000],
        [250_000, data.length - 250_000],
      ] as const)
        frames.push(await all(zstdCompressRange({ fd: src.fd, offset, length })));
    } finally {
      await src.close();
    }
    // each frame's header records its content's size (Frame_Content_Size, 4 bytes here)
    assert.equal(frames[0]!.readUInt32LE(5), 250_000);
    await writeFile(join(dir, 'a.zst'), Buffer.concat(frames));
    const packed = await open(join(dir, 'a.zst'), 'r');
    await writeFile(join(dir, 'out'), '');
    try {
      // the second frame first, at its place: the file is whole either way
      await zstdDecompressRangeInto(
        { fd: packed.fd, offset: frames[0]!.length, length: frames[1]!.length },
        { path: join(dir, 'out'), at: 250_000 },
      );
      await zstdDecompressRangeInto(
        { fd: packed.fd, offset: 0, length: frames[0]!.length },
        { path: join(dir, 'out'), at: 0 },
      );
      assert.ok((await readFile(join(dir, 'out'))).equals(data));
      // both frames through one zstd, as a stream; and a range that cuts a frame fails
      assert.ok(
        (
          await all(
            zstdDecompressRange({ fd: packed.fd, offset: 0, length: frames[0]!.length + frames[1]!.length }),
          )
        ).equals(data),
      );
      await assert.rejects(
        all(zstdDecompressRange({ fd: packed.fd, offset: 0, length: frames[0]!.length - 5 })),
        /zstd \(decompress\) failed/,
      );
    } finally {
      await packed.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
