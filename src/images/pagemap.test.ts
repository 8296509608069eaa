// The lazy pages a post-copy dump leaves with its page server, counted from pagemap images built here with the code
// generated from CRIU's pagemap.proto: PE_LAZY entries count, those in a parent (PE_PARENT) and present ones not.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { create, toBinary } from '@bufbuild/protobuf';
import { pagemap_entrySchema, pagemap_headSchema } from './gen/pagemap_pb.js';
import { IMG_COMMON_MAGIC, MAGIC } from './image-file.ts';
import { lazyPages, lazyPagesIn } from './pagemap.ts';

const PE_PARENT = 1;
const PE_LAZY = 2;
const PE_PRESENT = 4;

function pagemap(entries: { nrPages: number; flags: number }[]): Uint8Array {
  const msgs = [
    toBinary(pagemap_headSchema, create(pagemap_headSchema, { pagesId: 1 })),
    ...entries.map((e, i) =>
      toBinary(
        pagemap_entrySchema,
        create(pagemap_entrySchema, {
          vaddr: BigInt(0x400000 + i * 0x100000),
          nrPages: BigInt(e.nrPages),
          compatNrPages: e.nrPages,
          flags: e.flags,
        }),
      ),
    ),
  ];
  const parts: Uint8Array[] = [];
  const head = new DataView(new ArrayBuffer(8));
  head.setUint32(0, IMG_COMMON_MAGIC, true);
  head.setUint32(4, MAGIC.pagemap, true);
  parts.push(new Uint8Array(head.buffer));
  for (const m of msgs) {
    const len = new DataView(new ArrayBuffer(4));
    len.setUint32(0, m.length, true);
    parts.push(new Uint8Array(len.buffer), m);
  }
  return Buffer.concat(parts);
}

test('lazy pages: PE_LAZY entries only, not those in a parent, not those written', () => {
  const img = pagemap([
    { nrPages: 10, flags: PE_PRESENT },
    { nrPages: 300, flags: PE_LAZY },
    { nrPages: 7, flags: PE_PARENT },
    { nrPages: 5, flags: PE_PARENT | PE_LAZY },
    { nrPages: 20, flags: PE_LAZY },
  ]);
  assert.equal(lazyPagesIn(img), 320);
  assert.equal(lazyPagesIn(pagemap([])), 0);
  assert.throws(() => lazyPagesIn(Buffer.from([0x19, 0x43, 0x56, 0x54, 1, 2, 3, 4])), /not a pagemap/);
});

test('lazy pages of a directory: every task pagemap summed, the shared-memory ones and other images left out', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-pagemap-'));
  try {
    await writeFile(join(dir, 'pagemap-1.img'), pagemap([{ nrPages: 100, flags: PE_LAZY }]));
    await writeFile(join(dir, 'pagemap-42.img'), pagemap([{ nrPages: 28, flags: PE_LAZY }]));
    await writeFile(join(dir, 'pagemap-shmem-9.img'), pagemap([{ nrPages: 1000, flags: PE_LAZY }]));
    await writeFile(join(dir, 'pages-1.img'), Buffer.alloc(4096));
    assert.equal(await lazyPages(dir), 128);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
