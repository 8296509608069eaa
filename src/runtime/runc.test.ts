import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { FerryError } from '../core/errors.ts';
import { type ExecOptions, type ExecResult, ProcessRunner, type Runner } from './exec.ts';
import { lazyCheckpointArgs, quickStatusOf, Runc } from './runc.ts';

class Recorder implements Runner {
  calls: string[][] = [];
  async run(argv: string[], _o?: ExecOptions): Promise<ExecResult> {
    this.calls.push(argv);
    return { argv, code: 0, signal: null, stdout: '', stderr: '', ms: 1 };
  }
}

test('checkpoint and restore move file locks unless told not to', async () => {
  const r = new Recorder();
  const runc = new Runc(r, { root: '/run/x' });
  await runc.checkpoint('c', { imagePath: '/i', workPath: '/w' });
  await runc.restore('c', { bundle: '/b', imagePath: '/i', workPath: '/w' });
  await runc.checkpoint('c', { imagePath: '/i', workPath: '/w', fileLocks: false });
  await runc.checkpoint('c', { imagePath: '/i', workPath: '/w', preDump: true });
  const has = (i: number) => r.calls[i]!.includes('--file-locks');
  assert.deepEqual([has(0), has(1), has(2), has(3)], [true, true, false, false]);
});

test('a lazy dump leaves the tasks alive: CRIU takes their sockets out of repair mode even when its page server fails', () => {
  const args = lazyCheckpointArgs({
    imagePath: '/i',
    workPath: '/w',
    pageServer: '10.0.0.1:27000',
    tcpEstablished: true,
  });
  assert.ok(args.includes('--leave-running'));
  assert.ok(args.includes('--lazy-pages'));
  assert.deepEqual(args.slice(args.indexOf('--page-server'), args.indexOf('--page-server') + 2), [
    '--page-server',
    '10.0.0.1:27000',
  ]);
  assert.ok(args.includes('--tcp-established'));
  assert.ok(
    !lazyCheckpointArgs({ imagePath: '/i', workPath: '/w', pageServer: 'x:1' }).includes('--tcp-established'),
  );
});

test('a dump with skipInFlight hands CRIU a config file of its own that says so, removed afterwards', async () => {
  const seen: { file?: string; text?: string }[] = [];
  const r: Runner = {
    run: async (argv, o) => {
      const file = o?.env?.['CRIU_CONFIG_FILE'];
      seen.push(file ? { file, text: readFileSync(file, 'utf8') } : {});
      return { argv, code: 0, signal: null, stdout: '', stderr: '', ms: 1 };
    },
  };
  const runc = new Runc(r, { root: '/run/x' });
  await runc.checkpoint('c', { imagePath: '/i', workPath: '/w', skipInFlight: true });
  await runc.checkpoint('c', { imagePath: '/i', workPath: '/w' });
  assert.equal(seen[0]!.text, 'skip-in-flight\n');
  assert.equal(existsSync(seen[0]!.file!), false, 'removed after the dump');
  assert.deepEqual(seen[1], {}, 'no file without the option');
});

test("a dump to a page server over TLS: runc's --page-server, CRIU's TLS options in the dump's own config file", async () => {
  const seen: { argv: string[]; text?: string }[] = [];
  const r: Runner = {
    run: async (argv, o) => {
      const file = o?.env?.['CRIU_CONFIG_FILE'];
      seen.push({ argv, ...(file ? { text: readFileSync(file, 'utf8') } : {}) });
      return { argv, code: 0, signal: null, stdout: '', stderr: '', ms: 1 };
    },
  };
  const runc = new Runc(r, { root: '/run/x' });
  const tls = { ca: '/p/ca.crt', cert: '/p/a.crt', key: '/p/a.key', crl: '/p/ca.crl' };
  await runc.checkpoint('c', {
    imagePath: '/i',
    workPath: '/w',
    pageServer: '10.0.0.2:27001',
    pageServerTls: tls,
  });
  const argv = seen[0]!.argv;
  assert.equal(argv[argv.indexOf('--page-server') + 1], '10.0.0.2:27001');
  assert.equal(
    seen[0]!.text,
    'tls\ntls-cacert /p/ca.crt\ntls-cert /p/a.crt\ntls-key /p/a.key\ntls-cacrl /p/ca.crl\n',
  );
  await assert.rejects(
    runc.checkpoint('c', {
      imagePath: '/i',
      workPath: '/w',
      pageServer: 'x:1',
      pageServerTls: { ...tls, key: '/p/my key' },
    }),
    /FERRY_E_INPUT_ARGS|space/,
  );
});

test('running and paused are read from runc state.json, the init pid start time and the freezer', async () => {
  const root = await mkdtemp(join(tmpdir(), 'ferry-runc-state-'));
  try {
    const dir = join(root, 'runc', 'web');
    const proc = join(root, 'proc');
    const freezer = join(root, 'freezer');
    const unified = join(root, 'unified');
    for (const d of [dir, join(proc, '42'), freezer, unified]) await mkdir(d, { recursive: true });
    const state = (start: number, paths: Record<string, string> = { freezer, '': unified }) =>
      writeFile(
        join(dir, 'state.json'),
        JSON.stringify({ init_process_pid: 42, init_process_start: start, cgroup_paths: paths }),
      );
    // the command name may hold spaces and parentheses; the start time is field 22
    const stat = (s: string) =>
      writeFile(
        join(proc, '42', 'stat'),
        `42 (a (b) c) ${s} 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 777 10000 100 0 0\n`,
      );
    const quick = () => quickStatusOf(dir, proc);
    await state(777);
    await stat('S');
    // a hybrid host: the unified tree says thawed while runc freezes through v1
    await writeFile(join(unified, 'cgroup.events'), 'populated 1\nfrozen 0\n');
    await writeFile(join(freezer, 'freezer.state'), 'THAWED\n');
    assert.deepEqual(await quick(), { status: 'running', pid: 42 });
    await writeFile(join(freezer, 'freezer.state'), 'FROZEN\n');
    assert.deepEqual(await quick(), { status: 'paused', pid: 42 });
    await writeFile(join(freezer, 'freezer.state'), 'FREEZING\n');
    assert.equal(await quick(), undefined, 'still freezing: runc is asked');
    // cgroup v2 alone
    await state(777, { '': unified });
    assert.deepEqual(await quick(), { status: 'running', pid: 42 });
    await writeFile(join(unified, 'cgroup.events'), 'populated 1\nfrozen 1\n');
    assert.deepEqual(await quick(), { status: 'paused', pid: 42 });
    await state(778, { '': unified });
    assert.equal(await quick(), undefined, 'the pid belongs to another process now');
    await state(777, { '': unified });
    await stat('Z');
    assert.equal(await quick(), undefined, 'a zombie init');
    await stat('S');
    await writeFile(join(dir, 'exec.fifo'), '');
    assert.equal(await quick(), undefined, 'created, not started');
    assert.equal(await quickStatusOf(join(root, 'runc', 'none'), proc), undefined, 'unknown');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('destroy: kill and delete, then runc state only while runc still keeps the container directory', async () => {
  const root = await mkdtemp(join(tmpdir(), 'ferry-runc-destroy-'));
  try {
    // runc state answers as for a container it does not know
    const r = new (class extends Recorder {
      override async run(argv: string[], o?: ExecOptions): Promise<ExecResult> {
        const out = await super.run(argv, o);
        return argv[3] === 'state' ? { ...out, code: 1 } : out;
      }
    })();
    const runc = new Runc(r, { root });
    await runc.destroy('gone');
    assert.deepEqual(
      r.calls.map((c) => c[3]),
      ['kill', 'delete'],
    );
    // the directory still there: ask runc
    await mkdir(join(root, 'kept'));
    r.calls = [];
    await runc.destroy('kept');
    assert.deepEqual(
      r.calls.map((c) => c[3]),
      ['kill', 'delete', 'state'],
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('a restore past its deadline is killed with the CRIU it started: nothing of it is left', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-runc-restore-'));
  try {
    // a runc that starts a child (standing for its CRIU, which outlives a kill of runc alone) and hangs
    const runcPath = join(dir, 'runc');
    const pidFile = join(dir, 'criu.pid');
    await writeFile(runcPath, `#!/bin/sh\nsleep 600 &\necho $! > ${pidFile}\nwait\n`, { mode: 0o755 });
    const runc = new Runc(new ProcessRunner(), { root: join(dir, 'root'), runcPath });
    await assert.rejects(
      runc.restore('c', { bundle: dir, imagePath: dir, workPath: dir, timeoutMs: 500 }),
      (err: FerryError) => {
        assert.equal(err.code, 'FERRY_E_RESTORE_FAILED');
        assert.match(
          err.message,
          /runc restore failed \(killed after its 500 ms deadline\): runc and its CRIU/,
        );
        return true;
      },
    );
    const child = readFileSync(pidFile, 'utf8').trim();
    assert.ok(child, 'the child had started');
    // gone, or a zombie its new parent has not reaped yet (it runs nothing, holds nothing)
    const stat = existsSync(`/proc/${child}`) ? readFileSync(`/proc/${child}/stat`, 'utf8') : '';
    assert.ok(stat === '' || stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z'), `left running: ${stat}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
