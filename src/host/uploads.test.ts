import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { encodeTree } from '../transport/image-stream/index.ts';
import { linkImages, removeContainerImages, removeOrphanImages } from './images.ts';
import { containerDir, hostPaths, imageDir } from './paths.ts';
import { Uploads } from './uploads.ts';

function tmp(t: { after(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'ferry-uploads-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

test('uploads: one no create takes is swept after maxAge; at start everything left is swept', async (t) => {
  const dir = tmp(t);
  const src = join(dir, 'src');
  mkdirSync(src);
  writeFileSync(join(src, 'config.json'), '{}');
  const paths = hostPaths(join(dir, 'state'));
  let now = 1000;
  const up = new Uploads(paths, { maxAgeMs: 60_000, now: () => now });
  await up.receive('web', encodeTree([{ root: src, prefix: '' }]));
  await up.receive('db', encodeTree([{ root: src, prefix: '' }]));
  assert.deepEqual(up.pending(), ['db', 'web']);
  assert.ok(await up.take('web'));
  await up.discard('web');
  now += 30_000;
  assert.deepEqual(await up.sweep(), []);
  now += 31_000;
  assert.deepEqual(await up.sweep(), ['db']);
  assert.equal(existsSync(join(paths.stateDir, 'uploads', 'db')), false);
  // a new agent (nothing received by it) removes what a previous run left
  await up.receive('left', encodeTree([{ root: src, prefix: '' }]));
  assert.deepEqual(await new Uploads(paths).sweep(), ['left']);
  await assert.rejects(up.take('left'), /no bundle was uploaded for left/);
  await assert.rejects(up.receive('bad', Readable.from([Buffer.from('junk')])), /image stream/);
  assert.equal(existsSync(join(paths.stateDir, 'uploads', 'bad')), false);
});

test('images: a container takes the images of its migrations along; orphans are removed at start', async (t) => {
  const dir = tmp(t);
  const paths = hostPaths(join(dir, 'state'));
  for (const id of ['m000000000001', 'm000000000002', 'm000000000003'])
    mkdirSync(imageDir(paths, id), { recursive: true });
  mkdirSync(join(paths.imagesDir, 'not-a-migration'));
  // a checkpoint's images and a staged archive outlive no agent
  mkdirSync(join(paths.imagesDir, 'checkpoint-k0123456789ab'));
  mkdirSync(join(paths.imagesDir, 'restore-r0123456789ab'));
  mkdirSync(containerDir(paths, 'web'), { recursive: true });
  await linkImages(paths, 'web', 'm000000000001');
  const host = { paths, names: async () => ['web'] };
  assert.deepEqual((await removeOrphanImages(host, ['m000000000003'])).sort(), [
    'checkpoint-k0123456789ab',
    'm000000000002',
    'restore-r0123456789ab',
  ]);
  assert.ok(existsSync(imageDir(paths, 'm000000000001')), 'linked images stay');
  assert.ok(existsSync(join(paths.imagesDir, 'not-a-migration')), 'what ferry did not write stays');
  await removeContainerImages(paths, 'web');
  assert.equal(existsSync(imageDir(paths, 'm000000000001')), false);
});
