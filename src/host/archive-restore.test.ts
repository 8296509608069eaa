// Staging an archive for a restore: what is refused before anything of a container is made.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { FORMAT, FORMAT_VERSION } from '../archive/format.ts';
import { zstdFrames } from '../archive/frames.ts';
import { archiveStream } from '../archive/writer.ts';
import { silentLogger } from '../core/log.ts';
import type { NetworkLike } from '../network/identity.ts';
import type { RuncLike } from '../runtime/runc.ts';
import { ArchiveRestores } from './archive-restore.ts';
import { ContainerHost } from './containers.ts';
import { hostPaths } from './paths.ts';

async function archive(
  dir: string,
  record: Record<string, unknown>,
  criu = '4.2.1',
  pages?: Buffer,
): Promise<Buffer> {
  const images = join(dir, 'img');
  await mkdir(images, { recursive: true });
  await writeFile(join(images, 'pstree.img'), 'x');
  if (pages) await writeFile(join(images, 'pages-1.img'), pages);
  await writeFile(join(dir, 'rootfs.tar'), Buffer.alloc(1024));
  const s: Readable = archiveStream({
    meta: {
      format: FORMAT,
      version: FORMAT_VERSION,
      createdAt: new Date().toISOString(),
      host: 'a',
      record,
      versions: { ferry: '0', criu, runc: '1.1.5', kernel: '6' },
      leaveRunning: true,
      tcpEstablished: true,
    },
    configDump: {},
    spec: { root: { path: 'rootfs' }, process: { args: ['x'] } },
    imagesDir: images,
    rootfsTar: join(dir, 'rootfs.tar'),
    compress: 'zstd',
    // page images of a test's size get frames of their own, in slices
    frameOfItsOwn: 64 * 1024,
    slice: 100_000,
  });
  const out: Buffer[] = [];
  for await (const c of s) out.push(c as Buffer);
  return Buffer.concat(out);
}

test('an archive from a newer CRIU, or with a bad record, is refused and leaves nothing staged', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-rs-'));
  try {
    const log = silentLogger();
    const runc = { root: '/f', state: async () => undefined } as unknown as RuncLike;
    const network = { netnsPath: (n: string) => n } as unknown as NetworkLike;
    const host = new ContainerHost({
      hostName: 'b',
      paths: hostPaths(join(dir, 'h')),
      runc,
      cgroupParent: '/t',
      network,
      log,
    });
    await host.init();
    const restores = new ArchiveRestores({ host, log, criuVersion: async () => '4.1.1' });
    const good = {
      name: 'c1',
      createdAt: 'x',
      net: 'own',
      ip: '10.0.0.5',
      mac: '02:00:0a:00:00:05',
      origin: { kind: 'run' },
    };
    await assert.rejects(restores.stage(Readable.from([await archive(join(dir, 'a1'), good)])), {
      code: 'FERRY_E_ARCHIVE_VERSION',
      message: /CRIU 4\.2\.1; host b has CRIU 4\.1\.1/,
    });
    const newer = new ArchiveRestores({ host, log, criuVersion: async () => '4.2.1' });
    await assert.rejects(
      newer.stage(Readable.from([await archive(join(dir, 'a2'), { ...good, name: '../etc' })])),
      {
        code: 'FERRY_E_ARCHIVE_INVALID',
        message: /container record is invalid/,
      },
    );
    const staged = await newer.stage(Readable.from([await archive(join(dir, 'a3'), good)]));
    assert.equal(staged.name, 'c1');
    assert.equal(staged.ip, '10.0.0.5');
    await newer.discard(staged.id);
    await assert.rejects(newer.start(staged.id, {}), { code: 'FERRY_E_CHECKPOINT_UNKNOWN' });
    const left = await readdir(host.paths.imagesDir);
    assert.deepEqual(
      left.filter((n) => n.startsWith('restore-')),
      [],
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('an archive file on this host: its page image staged by zstd from its frames; damaged there, refused, nothing left', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-rs-'));
  try {
    const log = silentLogger();
    const runc = { root: '/f', state: async () => undefined } as unknown as RuncLike;
    const network = { netnsPath: (n: string) => n } as unknown as NetworkLike;
    const host = new ContainerHost({
      hostName: 'b',
      paths: hostPaths(join(dir, 'h')),
      runc,
      cgroupParent: '/t',
      network,
      log,
    });
    await host.init();
    const restores = new ArchiveRestores({ host, log, criuVersion: async () => '4.2.1' });
    const record = { name: 'c1', createdAt: 'x', net: 'none', origin: { kind: 'run' } };
    const pages = Buffer.concat([Buffer.from(randomBytes(120_000).toString('hex')), Buffer.alloc(50_000)]);
    const bytes = await archive(join(dir, 'a1'), record, '4.2.1', pages);
    const file = join(dir, 'c1.tar.zst');
    await writeFile(file, bytes);
    const stageFile = async () => {
      const fh = await open(file, 'r');
      try {
        return await restores.stage({ file: fh });
      } finally {
        await fh.close();
      }
    };
    const staged = await stageFile();
    const stagedDir = join(host.paths.imagesDir, `restore-${staged.id}`);
    assert.ok((await readFile(join(stagedDir, 'checkpoint/pages-1.img'))).equals(pages));
    assert.deepEqual(
      (await readdir(stagedDir)).filter((n) => n.startsWith('.')),
      [],
    );
    await restores.discard(staged.id);

    const fh = await open(file, 'r');
    const frames = await zstdFrames(fh).finally(() => fh.close());
    const slice = frames!.filter((f) => f.contentSize === 100_000)[1]!;
    const bad = Buffer.from(bytes);
    bad[slice.offset + Math.floor(slice.length / 2)]! ^= 0x20;
    await writeFile(file, bad);
    await assert.rejects(stageFile(), { code: 'FERRY_E_ARCHIVE_INVALID' });
    assert.deepEqual(await readdir(host.paths.imagesDir), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
