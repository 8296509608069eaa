import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { BlockStore, diffRecipe, PAGE, PageDelta, writeRecipes } from './block-store.ts';

async function drain(r: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

test('rounds send only new page contents; the destination rebuilds identical images', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'ferry-delta-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const src = join(base, 'src');
  const dst = join(base, 'dst');
  for (const d of [src, dst]) rmSync(d, { recursive: true, force: true });
  mkdirSync(src);
  mkdirSync(dst);
  const pages = 600;
  const mem = randomBytes(pages * PAGE);
  mem.fill(0, 10 * PAGE, 20 * PAGE); // ten identical (zero) pages: sent once
  writeFileSync(join(src, 'pages-1.img'), mem);
  const delta = new PageDelta();
  const store = new BlockStore(dst);
  t.after(() => store.close());
  const r1 = delta.delta(src, ['pages-1.img']);
  const b1 = await drain(r1.blocks);
  assert.equal(r1.newBytes(), (pages - 9) * PAGE, 'duplicates inside a round are sent once');
  assert.equal(b1.length, r1.newBytes());
  await store.add([b1.subarray(0, 5000), b1.subarray(5000)]);
  // round 2: 7 pages change
  for (const p of [1, 2, 3, 100, 200, 300, 599]) randomBytes(PAGE).copy(mem, p * PAGE);
  writeFileSync(join(src, 'pages-1.img'), mem);
  const r2 = delta.delta(src, ['pages-1.img']);
  const b2 = await drain(r2.blocks);
  assert.equal(r2.newBytes(), 7 * PAGE, 'only the changed pages go');
  await store.add([b2]);
  await writeRecipes(dst, await r2.recipes);
  const rebuilt = await store.rebuild(dst);
  assert.equal(rebuilt, mem.length);
  assert.ok(
    readFileSync(join(dst, 'pages-1.img')).equals(mem),
    'the rebuilt image is byte for byte the dump',
  );
  assert.ok(!existsSync(join(dst, 'pages-1.img.recipe')));
});

test('a recipe naming a page that never arrived fails clearly; a stream cut inside a page too', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'ferry-delta-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const store = new BlockStore(base);
  t.after(() => store.close());
  writeFileSync(join(base, 'pages-2.img.recipe'), Buffer.alloc(20, 7));
  await assert.rejects(store.rebuild(base), /page 0 never arrived/);
  await assert.rejects(store.add([Buffer.alloc(PAGE + 10)]), /ended inside a page/);
});

test('after a round, the final recipes travel as diffs: changed pages counted, the image rebuilt exactly', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'ferry-delta-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const src = join(base, 'src');
  const dst = join(base, 'dst');
  mkdirSync(src);
  mkdirSync(join(dst, 'recipes-1'), { recursive: true });
  const pages = 1000;
  const mem = randomBytes(pages * PAGE);
  writeFileSync(join(src, 'pages-1.img'), mem);
  const delta = new PageDelta();
  const store = new BlockStore(dst);
  t.after(() => store.close());
  const r1 = delta.delta(src, ['pages-1.img']);
  await store.add([await drain(r1.blocks)]);
  const recipes1 = await r1.recipes;
  assert.equal(delta.changedPages, pages, 'the first round: every page is new');
  await writeRecipes(join(dst, 'recipes-1'), recipes1);
  delta.remember(1, recipes1);
  // the final dump: 5 pages rewritten, one page moved to where another was, 3 pages appended
  for (const p of [0, 7, 500, 998, 999]) randomBytes(PAGE).copy(mem, p * PAGE);
  mem.copy(mem, 10 * PAGE, 20 * PAGE, 21 * PAGE);
  const grown = Buffer.concat([mem, randomBytes(3 * PAGE)]);
  writeFileSync(join(src, 'pages-1.img'), grown);
  const r2 = delta.delta(src, ['pages-1.img']);
  await store.add([await drain(r2.blocks)]);
  assert.equal(r2.newBytes(), 8 * PAGE, 'the moved page was known already');
  assert.equal(delta.changedPages, 9);
  const encoded = delta.encodeRecipes(await r2.recipes);
  assert.deepEqual([...encoded.keys()], ['pages-1.img.rdiff']);
  const diff = encoded.get('pages-1.img.rdiff')!;
  assert.equal(diff.length, 16 + 9 * 24, 'a header and one entry per changed page');
  writeFileSync(join(dst, 'pages-1.img.rdiff'), diff);
  await store.rebuild(dst);
  assert.ok(readFileSync(join(dst, 'pages-1.img')).equals(grown), 'rebuilt byte for byte');
  assert.ok(!existsSync(join(dst, 'recipes-1')), 'the round recipes are cleaned up');
  // a diff whose base never arrived fails clearly
  const other = Buffer.alloc(2000);
  other[0] = 1;
  writeFileSync(join(dst, 'pages-3.img.rdiff'), diffRecipe(Buffer.alloc(2000), other, 4)!);
  await assert.rejects(store.rebuild(dst), /the round it refers to never arrived/);
});
