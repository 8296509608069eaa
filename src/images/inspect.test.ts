import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { ImageError } from './image-file.ts';
import { directorySource, type ImageSource, inspectImages } from './inspect.ts';

// a real dump by CRIU 4.2.1 (runc checkpoint) of `busybox sh -c 'while :; do ...; sleep 0.2; done'`
const dir = new URL('./fixtures/busybox-dump/', import.meta.url).pathname;

test('decodes the process tree, memory, files, mounts and namespaces of a real dump', async () => {
  const r = await inspectImages(await directorySource(dir));
  assert.deepEqual(
    r.processes.map((p) => [p.pid, p.ppid, p.command, p.state, p.threads]),
    [
      [1, 0, 'busybox', 'alive', 1],
      [10, 1, 'busybox', 'alive', 1],
    ],
  );
  const m = r.memory.find((x) => x.pid === 1)!;
  assert.ok(m.mappings > 5 && m.pagesDumped > 0);
  assert.ok((m.bytes['anonPrivate'] ?? 0) > 0);
  assert.deepEqual(
    r.files.filter((f) => f.pid === 1).map((f) => [f.fd, f.type, f.path]),
    [
      [0, 'REG', '/dev/null'],
      [1, 'REG', '/dev/null'],
      [2, 'REG', '/dev/null'],
    ],
  );
  assert.ok(r.mounts.some((x) => x.mountpoint === '/proc' && x.fstype === 'proc'));
  assert.ok(r.namespaces['net'] && r.namespaces['mnt']);
  assert.equal(r.criu.imageVersion, 2);
  assert.ok((r.dump?.pagesWritten ?? 0) > 0);
});

test('a corrupted or missing image is an ImageError', async () => {
  const base = await directorySource(dir);
  const broken = (name: string, edit: (b: Buffer) => Buffer | undefined): ImageSource => ({
    names: base.names,
    read: async (n) => (n === name ? edit(Buffer.from((await base.read(n))!)) : base.read(n)),
  });
  await assert.rejects(inspectImages(broken('pstree.img', () => undefined)), ImageError);
  await assert.rejects(inspectImages(broken('pstree.img', (b) => b.subarray(0, b.length - 3))), /truncated/);
  await assert.rejects(
    inspectImages(broken('core-1.img', (b) => Buffer.concat([b.subarray(0, 8), Buffer.alloc(4, 0xff)]))),
    ImageError,
  );
  assert.ok((await readFile(`${dir}/pstree.img`)).length > 8);
});
