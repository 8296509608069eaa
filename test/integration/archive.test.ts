// Checkpoints into archive files and restores from them, with real runc, CRIU and checkpointctl, on one testbed.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import tar from 'tar-stream';
import { zstdFrames } from '../../src/archive/frames.ts';
import { FRAME_OF_ITS_OWN } from '../../src/archive/writer.ts';
import { REDIS_SERVER_ARGS } from '../../src/workloads/servers.ts';
import {
  containers,
  counterCommand,
  hostDir,
  instancesOf,
  MAIN,
  readInContainer,
  skipUnlessReady,
  startBed,
  waitFor,
  waitForPort,
} from './helpers.ts';

async function tarOf(entries: { name: string; body?: string; dir?: boolean }[]): Promise<Buffer> {
  const p = tar.pack();
  for (const e of entries)
    p.entry(e.dir ? { name: e.name, type: 'directory' } : { name: e.name }, e.body ?? '');
  p.finalize();
  const out: Buffer[] = [];
  for await (const c of p as unknown as Readable) out.push(c as Buffer);
  return Buffer.concat(out);
}

test('checkpoint to a file and restore from it: same host, another host, another name; bad input changes nothing', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await startBed(['a', 'b']);
  const dir = mkdtempSync(join(tmpdir(), 'ferry-archives-'));
  t.after(async () => {
    spawnSync('umount', [join(dir, 'full')]);
    rmSync(dir, { recursive: true, force: true });
    await bed.down();
  });
  const marker = `arc-${bed.name}`;
  const counter = async (name: string) => {
    const c = (await containers(bed)).find((x) => x.name === name);
    return c?.pid ? Number.parseInt(readInContainer(c.pid, '/tmp/counter'), 10) : undefined;
  };
  const ps = async () =>
    (await containers(bed))
      .map((c) => `${c.name}@${c.host}:${c.status}`)
      .sort()
      .join(' ');
  // a checkpoint's images and a staged archive live in each host's images tmpfs
  const leftovers = () =>
    ['a', 'b'].flatMap((h) => {
      const p = join(hostDir(bed, h), 'images');
      return existsSync(p)
        ? readdirSync(p)
            .filter((f) => /^(checkpoint|restore)-/.test(f))
            .map((f) => `${h}/${f}`)
        : [];
    });

  const run = await bed.cli(['run', '--host', 'a', '--name', 'ctr', '--', ...counterCommand(marker)]);
  assert.equal(run.code, 0, run.stderr);
  await waitFor('counter > 20', async () => ((await counter('ctr')) ?? 0) > 20 || undefined);

  // 1. --leave-running: the container keeps counting; the archive is 0600 and checkpointctl reads it
  const f1 = join(dir, 'ctr-running.tar.zst');
  const before1 = (await counter('ctr'))!;
  const c1 = await bed.cli(['checkpoint', 'ctr', '--export', f1, '--leave-running', '--json']);
  assert.equal(c1.code, 0, c1.stderr);
  assert.equal(JSON.parse(c1.stdout).status, 'running');
  assert.equal(statSync(f1).mode & 0o777, 0o600);
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.endsWith('.part')),
    [],
  );
  const after1 = (await counter('ctr'))!;
  await waitFor('ctr counts on', async () => ((await counter('ctr')) ?? 0) > after1 + 5 || undefined);
  const show = spawnSync('checkpointctl', ['show', f1], { encoding: 'utf8' });
  assert.equal(show.status, 0, show.stderr);
  assert.match(show.stdout, /ctr/);
  const tree = spawnSync('checkpointctl', ['inspect', '--ps-tree', f1], { encoding: 'utf8' });
  assert.equal(tree.status, 0, tree.stderr);
  assert.match(tree.stdout, /busybox/);
  // (reading the archive twice and a restore that is refused: three CLIs at once)
  const [insp, human, taken] = await Promise.all([
    bed.cli(['inspect', f1, '--json']),
    bed.cli(['inspect', f1, '--ps-tree', '--files', '--sockets', '--mounts']),
    bed.cli(['restore', '--import', f1, '--host', 'b']),
  ]);
  assert.equal(insp.code, 0, insp.stderr);
  const report = JSON.parse(insp.stdout);
  assert.equal(report.source, 'archive');
  assert.equal(report.name, 'ctr');
  assert.ok(report.images.processes.some((p: { command: string }) => p.command === 'busybox'));
  assert.ok(report.images.memory.every((m: { pagesDumped: number }) => m.pagesDumped > 0));
  assert.ok(report.images.mounts.some((m: { mountpoint: string }) => m.mountpoint === '/tmp'));
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /process tree:[\s\S]*busybox/);

  // 2. restored on another host under another name (the original still holds its own): a new address, no TCP
  assert.notEqual(taken.code, 0);
  assert.match(taken.stderr, /FERRY_E_CONTAINER_EXISTS/);
  const r1 = await bed.cli(['restore', '--import', f1, '--host', 'b', '--name', 'ctr2', '--json']);
  assert.equal(r1.code, 0, r1.stderr);
  const res1 = JSON.parse(r1.stdout);
  assert.equal(res1.container.host, 'b');
  assert.notEqual(res1.container.ip, (await containers(bed)).find((c) => c.name === 'ctr')!.ip);
  assert.match(res1.note ?? '', /TCP connections were closed/);
  // the copy counts on from the saved value (at least before1) at the original's pace, which had a head start of
  // the whole restore: so it is behind the original, however long the restore and this read took
  const v2 = (await counter('ctr2'))!;
  const now1 = (await counter('ctr'))!;
  assert.ok(
    v2 >= before1 && v2 <= now1 + 1,
    `ctr2 starts from the saved value (${before1} or later, behind ctr's ${now1}), not ${v2}`,
  );
  await waitFor('ctr2 counts on', async () => ((await counter('ctr2')) ?? 0) > v2 + 5 || undefined);
  assert.equal(instancesOf(marker), 2, 'the original and the restored copy');
  // tcp-close was for that restore only: a later dump of the copy keeps its connections
  const later = JSON.parse((await bed.cli(['inspect', 'ctr2', '--json'])).stdout);
  assert.equal(later.images.criu.tcpClose, false);
  assert.equal((await bed.cli(['rm', 'ctr2'])).code, 0);

  // 3. without --leave-running, uncompressed: the container stops once the archive is on disk. Into a file system
  // the agent does not see (a mount of the CLI's own namespace, as on another machine): the archive is streamed
  const f2 = join(dir, 'ctr-stopped.tar');
  const priv = join(dir, 'private');
  mkdirSync(priv);
  const c2 = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const script =
      'mount -t tmpfs private "$1" && "$2" --no-warnings "$3" checkpoint ctr --export "$1/x.tar" --compress none --json' +
      ' && cp -p "$1/x.tar" "$4"';
    const child = spawn(
      'unshare',
      ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', priv, process.execPath, MAIN, f2],
      { env: bed.env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  assert.equal(c2.code, 0, c2.stderr);
  assert.deepEqual(readdirSync(priv), [], 'the CLI wrote into its own mount, not the directory beneath');
  assert.equal(JSON.parse(c2.stdout).status, 'stopped');
  assert.equal(statSync(f2).mode & 0o777, 0o600);
  assert.equal(instancesOf(marker), 0, 'nothing runs after a checkpoint without --leave-running');
  assert.equal(await ps(), 'ctr@a:stopped');
  const [inspected, exists] = await Promise.all([
    bed.cli(['inspect', f2, '--json']),
    bed.cli(['restore', '--import', f2, '--host', 'a']),
  ]);
  const saved = JSON.parse(inspected.stdout);
  assert.equal(saved.leaveRunning, false);
  assert.match(exists.stderr, /FERRY_E_CONTAINER_EXISTS/);
  assert.equal((await bed.cli(['rm', 'ctr'])).code, 0);

  // 4. bad input: each refused with its own error, nothing created, the staging gone. The refusals run at once
  // (each is one CLI of its own) and the containers and the staging are checked once they have all answered
  const whole = readFileSync(f2);
  writeFileSync(join(dir, 'truncated.tar'), whole.subarray(0, Math.floor(whole.length / 2)));
  // a byte in the middle of the uncompressed archive (inside some file's content or a header)
  const flipped = Buffer.from(whole);
  let at = Math.floor(whole.length / 2);
  while (flipped[at] === 0) at++;
  flipped[at] = flipped[at]! ^ 0x01;
  writeFileSync(join(dir, 'flipped.tar'), flipped);
  const zst = Buffer.from(readFileSync(f1));
  zst[Math.floor(zst.length / 2)] = zst[Math.floor(zst.length / 2)]! ^ 0x10;
  writeFileSync(join(dir, 'flipped.tar.zst'), zst);
  writeFileSync(
    join(dir, 'podman.tar'),
    await tarOf([
      { name: 'config.dump', body: '{"id":"x","name":"p"}' },
      { name: 'spec.dump', body: '{}' },
      { name: 'checkpoint', dir: true },
    ]),
  );
  const meta = JSON.parse(execFileSync('tar', ['-xOf', f2, 'ferry.json'], { encoding: 'utf8' }));
  writeFileSync(
    join(dir, 'newer.tar'),
    await tarOf([{ name: 'ferry.json', body: JSON.stringify({ ...meta, version: meta.version + 1 }) }]),
  );
  const badInput: { file: string; code: RegExp; args?: string[] }[] = [
    { file: 'nonexistent.tar', code: /FERRY_E_INPUT_ARGS: .*no such file/ },
    { file: 'truncated.tar', code: /FERRY_E_ARCHIVE_INVALID: .*truncated/ },
    { file: 'flipped.tar', code: /FERRY_E_ARCHIVE_INVALID/ },
    { file: 'flipped.tar.zst', code: /FERRY_E_ARCHIVE_INVALID/, args: ['--name', 'flip'] },
    { file: 'podman.tar', code: /FERRY_E_ARCHIVE_INVALID: .*not a ferry checkpoint archive/ },
    { file: 'newer.tar', code: /FERRY_E_ARCHIVE_VERSION/ },
  ];
  const beforeBad = await ps();
  const refusals = await Promise.all(
    badInput.map((b) =>
      bed.cli(['restore', '--import', join(dir, b.file), '--host', 'a', ...(b.args ?? [])]),
    ),
  );
  badInput.forEach((b, i) => {
    assert.notEqual(refusals[i]!.code, 0, `${b.file} was accepted`);
    assert.match(refusals[i]!.stderr, b.code, b.file);
  });
  assert.equal(await ps(), beforeBad, 'bad archives changed the containers');
  assert.deepEqual(leftovers(), [], 'bad archives left staging behind');

  // 5. restored on the same host under its own name and address: it goes on from the value it stopped at
  const r2 = await bed.cli(['restore', '--import', f2, '--host', 'a', '--json']);
  assert.equal(r2.code, 0, r2.stderr);
  assert.equal(JSON.parse(r2.stdout).tcp, 'restored');
  const v3 = (await counter('ctr'))!;
  await waitFor(
    'ctr counts on after restore',
    async () => ((await counter('ctr')) ?? 0) > v3 + 5 || undefined,
  );
  assert.ok(v3 > after1, `ctr resumes after the first checkpoint's value (${after1}), at ${v3}`);
  assert.equal(instancesOf(marker), 1, 'exactly one copy runs');
  // a name already running on the target host is refused by the agent too (not only by the CLI's look-up)
  const client = bed.ctx.client('a');
  const staged = await client.stageArchive(Readable.from([whole]));
  await assert.rejects(client.restoreStaged(staged.id, {}), { code: 'FERRY_E_CONTAINER_EXISTS' });
  assert.deepEqual(leftovers(), []);

  // 6. a full disk while writing (through the agent's Node, and by its zstd itself): no archive under the name, no
  // temporary file, the container runs on
  const full = join(dir, 'full');
  mkdirSync(full);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', full]);
  for (const compress of ['none', 'zstd']) {
    const v4 = (await counter('ctr'))!;
    const c3 = await bed.cli(['checkpoint', 'ctr', '--export', join(full, 'x.tar'), '--compress', compress]);
    assert.notEqual(c3.code, 0, compress);
    assert.match(c3.stderr, /FERRY_E_ARCHIVE_WRITE/);
    assert.deepEqual(readdirSync(full), []);
    await waitFor(
      'ctr runs on after a failed checkpoint',
      async () => ((await counter('ctr')) ?? 0) > v4 + 5 || undefined,
    );
    assert.equal(await ps(), 'ctr@a:running');
    await waitFor('the checkpoint is dropped', () => (leftovers().length === 0 ? true : undefined));
  }
  assert.equal((await bed.cli(['rm', 'ctr'])).code, 0);

  // 7. Redis with keys: checkpointed into a zstd archive (stopped), removed, restored on the other host from the
  // file; every key and value as it was (Redis's own digest of the whole dataset), and it takes writes again
  const kvStarted = performance.now();
  const info = await bed.cli([
    'run',
    '--host',
    'a',
    '--name',
    'kv',
    '--json',
    '--',
    ...REDIS_SERVER_ARGS,
    '--enable-debug-command',
    'yes',
  ]);
  assert.equal(info.code, 0, info.stderr);
  const kvIp = (JSON.parse(info.stdout) as { ip: string }).ip;
  await waitForPort(kvIp, 6379);
  const cli = (...args: string[]) =>
    execFileSync('redis-cli', ['-h', kvIp, ...args], { encoding: 'utf8', timeout: 20_000 }).trim();
  cli('SET', 'greeting', 'hello from a');
  cli('HSET', 'user:1', 'name', 'ada', 'lang', 'en');
  cli('DEBUG', 'POPULATE', '20000', 'key', '512');
  const digest = cli('DEBUG', 'DIGEST');
  const kvFile = join(dir, 'kv.tar.zst');
  const ck = await bed.cli(['checkpoint', 'kv', '--export', kvFile, '--json']);
  assert.equal(ck.code, 0, ck.stderr);
  assert.equal(statSync(kvFile).mode & 0o777, 0o600);
  // its page images are zstd frames of their own (the restore below has zstd stage them where the file lies), and
  // the archive is still one tar.zst that checkpointctl reads
  const kvArchive = await open(kvFile, 'r');
  const frames = await zstdFrames(kvArchive).finally(() => kvArchive.close());
  assert.ok(
    frames?.some((f) => (f.contentSize ?? 0) >= FRAME_OF_ITS_OWN),
    `the page images have frames of their own: ${JSON.stringify(frames)}`,
  );
  const kvShow = spawnSync('checkpointctl', ['show', kvFile], { encoding: 'utf8' });
  assert.equal(kvShow.status, 0, kvShow.stderr);
  assert.match(kvShow.stdout, /kv/);
  const kvTree = spawnSync('checkpointctl', ['inspect', '--ps-tree', kvFile], { encoding: 'utf8' });
  assert.equal(kvTree.status, 0, kvTree.stderr);
  assert.match(kvTree.stdout, /redis-server/);
  assert.equal((await bed.cli(['rm', 'kv'])).code, 0);
  const back = await bed.cli(['restore', '--import', kvFile, '--host', 'b', '--json']);
  assert.equal(back.code, 0, back.stderr);
  await waitForPort(kvIp, 6379);
  assert.equal(cli('DEBUG', 'DIGEST'), digest, 'the dataset is as it was');
  assert.equal(cli('DBSIZE'), '20002');
  assert.equal(cli('GET', 'greeting'), 'hello from a');
  assert.equal(cli('INCR', 'after'), '1');
  assert.equal(await ps(), 'kv@b:running');
  assert.equal((await bed.cli(['rm', 'kv'])).code, 0);
  assert.deepEqual(leftovers(), []);
  t.diagnostic(`the Redis case took ${Math.round(performance.now() - kvStarted)} ms`);
});
