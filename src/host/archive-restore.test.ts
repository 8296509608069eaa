// Staging an archive for a restore: what is refused before anything of a container is made.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { FORMAT, FORMAT_VERSION } from '../archive/format.ts';
import { archiveStream } from '../archive/writer.ts';
import { silentLogger } from '../core/log.ts';
import type { NetworkLike } from '../network/identity.ts';
import type { RuncLike } from '../runtime/runc.ts';
import { ArchiveRestores } from './archive-restore.ts';
import { ContainerHost } from './containers.ts';
import { hostPaths } from './paths.ts';

async function archive(dir: string, record: Record<string, unknown>, criu = '4.2.1'): Promise<Buffer> {
  const images = join(dir, 'img');
  await mkdir(images, { recursive: true });
  await writeFile(join(images, 'pstree.img'), 'x');
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
