// The checkpoint sessions' promises with fakes: a failed dump, an aborted or abandoned stream and a finish each
// leave the container as they should (running, or stopped only after finish).
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { readArchive } from '../archive/reader.ts';
import { silentLogger } from '../core/log.ts';
import type { NetworkLike } from '../network/identity.ts';
import type { RuncLike } from '../runtime/runc.ts';
import { Checkpoints } from './checkpoints.ts';
import { ContainerHost } from './containers.ts';
import { bundleDir, hostPaths } from './paths.ts';

/** Polls `cond` (the fakes settle on timers and stream events, later on a loaded machine) for up to 10 s. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function setup(opts: { failDump?: boolean } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-ck-'));
  const steps: string[] = [];
  let status = 'running';
  const runc = {
    root: '/fake',
    state: async () => (status === 'gone' ? undefined : { id: 'c1', pid: 42, status, bundle: '' }),
    pause: async () => {
      steps.push('pause');
      status = 'paused';
    },
    resume: async () => {
      steps.push('resume');
      status = 'running';
    },
    destroy: async () => {
      steps.push('destroy');
      status = 'gone';
    },
    checkpoint: async (_id: string, o: { imagePath: string; leaveRunning?: boolean }) => {
      steps.push(`dump${o.leaveRunning ? ' --leave-running' : ''}`);
      if (opts.failDump) throw new Error('criu failed');
      await writeFile(join(o.imagePath, 'pstree.img'), 'x');
      return { ms: 1 };
    },
  } as unknown as RuncLike;
  const network = {
    netnsPath: (n: string) => `/run/netns/${n}`,
    quiesce: async () => void steps.push('lock'),
    unlock: async () => void steps.push('unlock'),
  } as unknown as NetworkLike;
  const log = silentLogger();
  const host = new ContainerHost({
    hostName: 'a',
    paths: hostPaths(dir),
    runc,
    cgroupParent: '/t',
    network,
    log,
  });
  await host.init();
  await host.writeRecord({
    name: 'c1',
    createdAt: new Date().toISOString(),
    net: 'none',
    origin: { kind: 'run' },
  });
  const bundle = bundleDir(host.paths, 'c1');
  await mkdir(join(bundle, 'rootfs'), { recursive: true });
  await writeFile(
    join(bundle, 'config.json'),
    JSON.stringify({ root: { path: 'rootfs' }, process: { args: ['x'] } }),
  );
  const versions = async () => ({ ferry: '0', criu: '4.2.1', runc: '1.1.5', kernel: '6' });
  const ck = new Checkpoints({ host, log, versions, finishWaitMs: 1000 });
  return {
    dir,
    steps,
    ck,
    host,
    status: () => status,
    done: () => rm(dir, { recursive: true, force: true }),
  };
}

async function drain(r: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of r) out.push(c as Buffer);
  return Buffer.concat(out);
}

test('without --leave-running the container stays frozen until finish, then stops; the archive reads back', async () => {
  const s = await setup();
  try {
    const started = await s.ck.start('c1', { leaveRunning: false, compress: 'zstd' });
    assert.deepEqual(s.steps, ['lock', 'pause', 'dump --leave-running']);
    const bytes = await drain(started.stream!);
    assert.equal((await started.digest).bytes, bytes.length);
    assert.equal(s.status(), 'paused');
    const got = await readArchive(Readable.from([bytes]));
    assert.equal(got.meta.record['name'], 'c1');
    assert.ok(got.names.includes('checkpoint/pstree.img') && got.names.includes('rootfs-diff.tar'));
    assert.match(got.memory.get('spec.dump')!.toString(), /"io.container.manager": "libpod"/);
    assert.equal((await s.ck.finish(started.id, { stop: true })).status, 'stopped');
    assert.deepEqual(s.steps.slice(3), ['destroy']);
    assert.equal(s.host.isBusy('c1'), false);
  } finally {
    await s.done();
  }
});

test('--leave-running thaws right after the rootfs is taken; finish leaves it running', async () => {
  const s = await setup();
  try {
    const started = await s.ck.start('c1', { leaveRunning: true, compress: 'none' });
    assert.deepEqual(s.steps, ['lock', 'pause', 'dump --leave-running', 'resume', 'unlock']);
    await drain(started.stream!);
    assert.equal((await s.ck.finish(started.id, { stop: true })).status, 'running');
    assert.equal(s.status(), 'running');
  } finally {
    await s.done();
  }
});

test('a failed dump, an abort and a caller that never finishes all leave the container running', async () => {
  const failed = await setup({ failDump: true });
  try {
    await assert.rejects(failed.ck.start('c1', { leaveRunning: false, compress: 'zstd' }), /criu failed/);
    assert.deepEqual(failed.steps, ['lock', 'pause', 'dump --leave-running', 'resume', 'unlock']);
    assert.equal(failed.host.isBusy('c1'), false);
  } finally {
    await failed.done();
  }
  const s = await setup();
  try {
    const a = await s.ck.start('c1', { leaveRunning: false, compress: 'zstd' });
    await assert.rejects(s.ck.start('c1', { leaveRunning: false, compress: 'zstd' }), {
      code: 'FERRY_E_CONTAINER_BUSY',
    });
    await drain(a.stream!);
    await s.ck.abort(a.id);
    assert.equal(s.status(), 'running');
    await assert.rejects(s.ck.finish(a.id, { stop: true }), { code: 'FERRY_E_CHECKPOINT_UNKNOWN' });
    // abandoned: streamed, never finished
    const b = await s.ck.start('c1', { leaveRunning: false, compress: 'zstd' });
    await drain(b.stream!);
    assert.equal(s.status(), 'paused');
    await until(
      () => s.status() === 'running' && !s.host.isBusy('c1'),
      'thawed once the finish wait ran out',
    );
    // cut off mid-stream
    const c = await s.ck.start('c1', { leaveRunning: false, compress: 'none' });
    c.stream!.destroy();
    await until(() => s.status() === 'running' && !s.host.isBusy('c1'), 'thawed after the stream was cut');
    assert.equal(s.host.isBusy('c1'), false);
  } finally {
    await s.done();
  }
});

test("into the caller's file: zstd writes it, the digest gives its length once synced, and it reads back", async () => {
  const s = await setup();
  try {
    const file = join(s.dir, 'out.tar.zst');
    const token = s.ck.issueToken();
    await writeFile(file, token, { mode: 0o600 });
    const started = await s.ck.start('c1', {
      leaveRunning: false,
      compress: 'zstd',
      file: { path: file, token },
    });
    assert.equal(started.stream, undefined);
    const d = await started.digest;
    assert.equal(d.sha256, undefined);
    assert.equal(d.bytes, (await stat(file)).size);
    assert.equal(s.status(), 'paused');
    const fh = await open(file, 'r');
    try {
      const got = await readArchive({ file: fh });
      assert.ok(got.names.includes('checkpoint/pstree.img') && got.names.includes('rootfs-diff.tar'));
    } finally {
      await fh.close();
    }
    assert.equal((await s.ck.finish(started.id, { stop: true })).status, 'stopped');
  } finally {
    await s.done();
  }
});

test("into the caller's file: a caller that goes away mid-write stops zstd and thaws the container", async () => {
  const s = await setup();
  try {
    const file = join(s.dir, 'out.tar.zst');
    const token = s.ck.issueToken();
    await writeFile(file, token, { mode: 0o600 });
    const started = await s.ck.start('c1', {
      leaveRunning: false,
      compress: 'zstd',
      file: { path: file, token },
    });
    started.cancel();
    await assert.rejects(started.digest);
    await until(() => s.status() === 'running' && !s.host.isBusy('c1'), 'thawed after the caller went away');
    assert.equal(s.host.isBusy('c1'), false);
    await assert.rejects(s.ck.finish(started.id, { stop: true }), { code: 'FERRY_E_CHECKPOINT_UNKNOWN' });
  } finally {
    await s.done();
  }
});
