import assert from 'node:assert/strict';
import { constants, existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { FerryError } from '../core/errors.ts';
import { Faults } from '../core/faults.ts';
import { GO, gateScript } from './criu-gate.ts';
import { GATE_LIBRARY, installedLibrary } from './criu-preload.ts';
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

test("only a dump to a page server preloads the uncork library into its CRIU, before the environment's own", async () => {
  const preloads: (string | undefined)[] = [];
  const r: Runner = {
    run: async (argv, o) => {
      preloads.push(o?.env?.['LD_PRELOAD']);
      return { argv, code: 0, signal: null, stdout: '', stderr: '', ms: 1 };
    },
  };
  const lib = '/opt/x/criu-uncork.so';
  const runc = new Runc(r, { root: '/run/x', preload: { uncork: lib } });
  const before = process.env['LD_PRELOAD'];
  try {
    delete process.env['LD_PRELOAD'];
    await runc.checkpoint('c', { imagePath: '/i', workPath: '/w', pageServer: '10.0.0.2:27001' });
    await runc.checkpoint('c', { imagePath: '/i', workPath: '/w' });
    process.env['LD_PRELOAD'] = '/usr/lib/other.so';
    await runc.checkpoint('c', { imagePath: '/i', workPath: '/w', pageServer: '10.0.0.2:27001' });
    await new Runc(r, { root: '/run/x' }).checkpoint('c', {
      imagePath: '/i',
      workPath: '/w',
      pageServer: 'x:1',
    });
  } finally {
    if (before === undefined) delete process.env['LD_PRELOAD'];
    else process.env['LD_PRELOAD'] = before;
  }
  // (undefined: runc gets the agent's own environment, unchanged)
  assert.deepEqual(preloads, [lib, undefined, `${lib} /usr/lib/other.so`, undefined]);
});

test('every dump preloads the conntrack and tmpfs libraries into its CRIU, a restore the tmpfs and cgroup ones', async () => {
  const preloads: (string | undefined)[] = [];
  const r: Runner = {
    run: async (argv, o) => {
      preloads.push(o?.env?.['LD_PRELOAD']);
      return { argv, code: 0, signal: null, stdout: '', stderr: '', ms: 1 };
    },
  };
  const runc = new Runc(r, {
    root: '/run/x',
    preload: { uncork: '/u.so', conntrack: '/c.so', tmpfs: '/t.so', cgroup: '/g.so' },
  });
  const before = process.env['LD_PRELOAD'];
  try {
    delete process.env['LD_PRELOAD'];
    await runc.checkpoint('c', { imagePath: '/i', workPath: '/w' });
    await runc.checkpoint('c', { imagePath: '/i', workPath: '/w', pageServer: '10.0.0.2:27001' });
    await runc.restore('c', { bundle: '/b', imagePath: '/i', workPath: '/w' });
  } finally {
    if (before === undefined) delete process.env['LD_PRELOAD'];
    else process.env['LD_PRELOAD'] = before;
  }
  assert.deepEqual(preloads, ['/t.so /c.so', '/u.so /t.so /c.so', '/g.so /t.so']);
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
    await writeFile(join(unified, 'cgroup.freeze'), '0\n');
    assert.deepEqual(await quick(), { status: 'running', pid: 42 });
    await writeFile(join(unified, 'cgroup.freeze'), '1\n');
    assert.equal(await quick(), undefined, 'freeze asked, not reached yet: runc is asked');
    await writeFile(join(unified, 'cgroup.events'), 'populated 1\nfrozen 1\n');
    assert.deepEqual(await quick(), { status: 'paused', pid: 42 });
    await writeFile(join(unified, 'cgroup.freeze'), '0\n');
    assert.equal(await quick(), undefined, 'thawing');
    await writeFile(join(unified, 'cgroup.freeze'), '1\n');
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

/**
 * A runc that does what runc 1.1 to 1.4 do around a dump, in their order: a CRIU for its version check,
 * descriptors.json into the image directory, the dump's CRIU; `criu` is found in PATH, and `--criu` is refused, as
 * runc 1.4 refuses it. The configured CRIU logs each start with the file's presence; the dump's writes `dumped`, or
 * with `hang` beside it never ends. A dump's CRIU that fails: runc writes `after` in the image directory 300 ms
 * later (what a real runc leaves behind as it ends), then fails.
 */
async function gateBed(dir: string, faults?: Faults) {
  const images = join(dir, 'images');
  await mkdir(images);
  const log = join(dir, 'criu.log');
  const criuPath = join(dir, 'criu');
  await writeFile(
    criuPath,
    `#!/bin/sh\nif [ -e ${images}/descriptors.json ]; then echo dump >> ${log}; [ -e ${dir}/hang ] && sleep 600; : > ${images}/dumped; else echo version >> ${log}; fi\n`,
    { mode: 0o755 },
  );
  const runcPath = join(dir, 'runc');
  await writeFile(
    runcPath,
    [
      '#!/bin/sh',
      'all=" $* "',
      'while [ $# -gt 0 ]; do case "$1" in --criu) echo "flag provided but not defined: -criu" >&2; exit 1;; --image-path) img=$2; shift;; esac; shift; done',
      'criu swrk 3 || exit 2',
      'echo \'["/dev/null"]\' > "$img/descriptors.json"',
      'criu swrk 3 || { sleep 0.3; : > "$img/after"; exit 3; }',
      // a lazy dump: ready once its CRIU has written everything but memory (runc's --status-fd 3)
      'case "$all" in *" --lazy-pages "*) printf x >&3;; esac',
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  const runc = new Runc(new ProcessRunner(), {
    root: join(dir, 'root'),
    runcPath,
    criuPath,
    ...(faults ? { faults } : {}),
  });
  const lines = () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []);
  const waitFor = async (n: number) => {
    for (let i = 0; i < 200 && lines().length < n; i++) await new Promise((r) => setTimeout(r, 10));
  };
  return { runc, images, lines, waitFor, dumped: () => existsSync(join(images, 'dumped')) };
}

/** A gate bed in a directory of its own, removed afterwards whatever the test did. */
async function withGateBed(
  fn: (bed: Awaited<ReturnType<typeof gateBed>>, dir: string) => Promise<void>,
  faults?: Faults,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-runc-gate-'));
  try {
    await fn(await gateBed(dir, faults), dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('a staged dump: runc and its CRIU version check start at once, the dump only at go()', async () => {
  await withGateBed(async (bed) => {
    const staged = await bed.runc.stageCheckpoint('c', { imagePath: bed.images, workPath: bed.images });
    assert.ok(staged);
    await bed.waitFor(1);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(bed.lines(), ['version'], 'the version check ran, the dump waits');
    assert.ok(existsSync(join(bed.images, 'descriptors.json')) && !bed.dumped());
    const r = await staged.go();
    assert.ok(r.ms >= 0);
    assert.deepEqual(bed.lines(), ['version', 'dump']);
    assert.ok(bed.dumped());
  });
});

test('a staged dump cancelled before its freeze dumps nothing; one that cannot be staged is not', async () => {
  await withGateBed(async (bed) => {
    const staged = await bed.runc.stageCheckpoint('c', { imagePath: bed.images, workPath: bed.images });
    assert.ok(staged);
    await bed.waitFor(1);
    await staged.cancel();
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(bed.lines(), ['version']);
    assert.ok(!bed.dumped(), 'the gate ended the dump before its CRIU');
    // descriptors.json is there now (an earlier dump's): no gate could tell the dump's CRIU from runc's first
    assert.equal(
      await bed.runc.stageCheckpoint('c', { imagePath: bed.images, workPath: bed.images }),
      undefined,
    );
  });
});

test('a staged dump whose runc failed before the freeze fails at go() with its error, and dumped nothing', async () => {
  await withGateBed(async (bed, dir) => {
    // its version check fails, as under the test-only fault criu-fail:dump
    await writeFile(join(dir, 'criu'), '#!/bin/sh\nexit 1\n', { mode: 0o755 });
    const staged = await bed.runc.stageCheckpoint('c', { imagePath: bed.images, workPath: bed.images });
    assert.ok(staged);
    await new Promise((r) => setTimeout(r, 300));
    await assert.rejects(staged.go(), (err: FerryError) => {
      assert.equal(err.code, 'FERRY_E_CHECKPOINT_FAILED');
      assert.match(err.message, /runc checkpoint failed \(exit status 2\)/);
      return true;
    });
    assert.ok(!bed.dumped());
  });
});

/** A gate script's directory as openGate leaves it, past runc's version check: its images (returned) and FIFO. */
/**
 * A staged dump's gate in `dir` as the agent writes it (its FIFO `go`, the images directory with its mark) and its
 * script at `dir/gate`, holding until the word; returns the images directory.
 */
async function writeGate(
  dir: string,
  o: { criu: string; dump: string; agentPid: number; library?: { path: string; at: 'dump' | 'restore' } },
): Promise<string> {
  const images = join(dir, 'images');
  await mkdir(images);
  await writeFile(join(images, 'descriptors.json'), '[]');
  await new ProcessRunner().run(['mkfifo', join(dir, 'go')]);
  const script = gateScript({ dir, mark: join(images, 'descriptors.json'), hold: true, ...o });
  await writeFile(join(dir, 'gate'), script, { mode: 0o700 });
  return images;
}

test('the gate ends the dump, never starting its CRIU, once the agent that staged it is gone', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-runc-gate-'));
  try {
    // a pid that is no process: the highest the kernel may hand out, plus one
    const gone = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8')) + 1;
    await writeGate(dir, { criu: '/bin/true', dump: '/bin/true', agentPid: gone });
    const r = await new ProcessRunner().run([join(dir, 'gate'), 'swrk', '3'], {
      allowFail: true,
      timeoutMs: 5000,
    });
    assert.equal(r.code, 1);
    assert.ok(!r.timedOut);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the gate opens on its word whenever it comes against its 200 ms read timeout (a word is one character)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-runc-gate-'));
  try {
    const dumped = join(dir, 'dumped');
    await writeFile(join(dir, 'dump'), `#!/bin/sh\necho "$@" > '${dumped}'\n`, { mode: 0o700 });
    await writeGate(dir, { criu: '/bin/false', dump: join(dir, 'dump'), agentPid: process.pid });
    // the agent's end of the FIFO, as openGate holds it
    const fifo = await open(join(dir, 'go'), constants.O_RDWR | constants.O_NONBLOCK);
    try {
      for (const ms of [0, 195, 200, 205, 395, 405]) {
        await rm(join(dir, 'open'), { force: true });
        await rm(dumped, { force: true });
        const run = new ProcessRunner().run([join(dir, 'gate'), 'swrk', '3'], {
          allowFail: true,
          timeoutMs: 5000,
        });
        await new Promise((r) => setTimeout(r, ms));
        await fifo.write(GO);
        const r = await run;
        assert.equal(r.code, 0, `released after ${ms} ms`);
        assert.equal(readFileSync(dumped, 'utf8'), 'swrk 3\n');
      }
    } finally {
      await fifo.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/**
 * The gate with its library (native/criu-gate.c, as `scripts/setup.sh native` installs it): the stand-in for the
 * run's CRIU starts at once and is held inside, at its SIGALRM handler (a dump) or its first open of an image (a
 * restore), until the word comes; another word, or the agent gone, ends it there.
 */
async function gateInCriu(
  t: import('node:test').TestContext,
  at: 'dump' | 'restore',
  word: string,
  agentPid = process.pid,
): Promise<{ code: number | null; started: boolean; passed: boolean } | undefined> {
  const library = installedLibrary(GATE_LIBRARY);
  if (!library) {
    t.skip(`the gate library is not installed (${GATE_LIBRARY}: scripts/setup.sh native)`);
    return undefined;
  }
  const dir = await mkdtemp(join(tmpdir(), 'ferry-runc-gate-'));
  try {
    const images = await writeGate(dir, {
      criu: '/bin/false',
      dump: join(dir, 'dump'),
      agentPid,
      library: { path: library, at },
    });
    await writeFile(join(images, 'inventory.img'), 'x');
    // bash's `trap ... ALRM` sets a SIGALRM handler with sigaction, as CRIU's dump does; a redirection opens an
    // image in bash itself (the library takes the gate's environment away from what the held program runs)
    const touch = at === 'dump' ? 'trap : ALRM' : `: < '${images}/inventory.img'`;
    await writeFile(join(dir, 'dump'), `#!/bin/bash\n: > '${dir}/started'\n${touch}\n: > '${dir}/passed'\n`, {
      mode: 0o700,
    });
    const fifo = await open(join(dir, 'go'), constants.O_RDWR | constants.O_NONBLOCK);
    try {
      const run = new ProcessRunner().run([join(dir, 'gate'), 'swrk', '3'], {
        allowFail: true,
        timeoutMs: 5000,
      });
      await new Promise((r) => setTimeout(r, 400));
      const started = existsSync(join(dir, 'started'));
      assert.equal(existsSync(join(dir, 'passed')), false, 'held before its word');
      await fifo.write(word);
      const r = await run;
      assert.ok(!r.timedOut);
      return { code: r.code, started, passed: existsSync(join(dir, 'passed')) };
    } finally {
      await fifo.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test("with the gate library a dump's CRIU starts at once and waits inside, at its SIGALRM handler, for its word", async (t) => {
  const r = await gateInCriu(t, 'dump', GO);
  if (r) assert.deepEqual(r, { code: 0, started: true, passed: true });
});

test("with the gate library a restore's CRIU starts at once and waits at its first image for its word", async (t) => {
  const r = await gateInCriu(t, 'restore', GO);
  if (r) assert.deepEqual(r, { code: 0, started: true, passed: true });
});

test('with the gate library another word, or the agent gone, ends the held CRIU before it goes on', async (t) => {
  const stopped = await gateInCriu(t, 'dump', 's');
  if (!stopped) return;
  assert.deepEqual(stopped, { code: 1, started: true, passed: false });
  const gone = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8')) + 1;
  // (the word comes after the library has seen the agent gone: ended by then)
  const orphan = await gateInCriu(t, 'restore', GO, gone);
  assert.deepEqual(orphan, { code: 1, started: true, passed: false });
});

test('a staged lazy dump: ready only after go(), which hands over the dump; cancelled, it dumps nothing', async () => {
  await withGateBed(async (bed, dir) => {
    const o = { imagePath: bed.images, workPath: bed.images, pageServer: '127.0.0.1:1' };
    const staged = await bed.runc.stageCheckpointLazy('c', o);
    assert.ok(staged);
    await bed.waitFor(1);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(bed.lines(), ['version'], 'the dump waits');
    const lazy = await staged.go();
    await lazy.ready;
    assert.deepEqual(bed.lines(), ['version', 'dump']);
    assert.equal((await lazy.done).code, 0);

    await rm(join(bed.images, 'descriptors.json'));
    await rm(join(bed.images, 'dumped'));
    await rm(join(dir, 'criu.log'));
    const again = await bed.runc.stageCheckpointLazy('c', o);
    assert.ok(again);
    await bed.waitFor(1);
    await again.cancel();
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(bed.lines(), ['version']);
    assert.ok(!bed.dumped());
  });
});

test('a staged dump sweeps the gate directories that agents now gone left behind, and only theirs', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-runc-gate-'));
  const gone = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8')) + 1;
  const left = join(tmpdir(), `ferry-gate-${gone}-test`);
  const alive = join(tmpdir(), `ferry-gate-${process.pid}-test`);
  try {
    await mkdir(left);
    await mkdir(alive);
    const bed = await gateBed(dir);
    const staged = await bed.runc.stageCheckpoint('c', { imagePath: bed.images, workPath: bed.images });
    assert.ok(staged);
    assert.ok(!existsSync(left), "a gone agent's directory is removed");
    assert.ok(existsSync(alive), "a live agent's stays");
    await staged.go();
  } finally {
    await rm(left, { recursive: true, force: true });
    await rm(alive, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  }
});

test('runc is never given --criu: a configured CRIU, or the failing one of a fault, is `criu` first in its PATH', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-runc-criu-'));
  try {
    const criuPath = join(dir, 'my-criu');
    await writeFile(criuPath, '#!/bin/sh\n', { mode: 0o755 });
    const seen: { argv: string[]; path: string | undefined }[] = [];
    const r: Runner = {
      run: async (argv, o) => {
        seen.push({ argv, path: o?.env?.['PATH'] });
        return { argv, code: 0, signal: null, stdout: '', stderr: '', ms: 1 };
      },
    };
    const first = (path: string | undefined) => join(path!.split(':')[0]!, 'criu');
    const runc = new Runc(r, { root: '/run/x', criuPath, faults: new Faults(['criu-fail:restore@d']) });
    await runc.checkpoint('c', { imagePath: dir, workPath: dir });
    await runc.restore('c', { bundle: '/b', imagePath: '/i', workPath: '/w' });
    await runc.restore('d', { bundle: '/b', imagePath: '/i', workPath: '/w' });
    await runc.kill('c');
    assert.ok(seen.every((c) => !c.argv.includes('--criu')));
    assert.equal(realpathSync(first(seen[0]!.path)), realpathSync(criuPath));
    assert.equal(realpathSync(first(seen[1]!.path)), realpathSync(criuPath));
    assert.equal(realpathSync(first(seen[2]!.path)), realpathSync('/bin/false'));
    assert.equal(seen[3]!.path, undefined, 'no CRIU for anything else');
    // the default `criu`: runc's own PATH, untouched
    seen.length = 0;
    await new Runc(r, { root: '/run/x', criuPath: 'criu' }).checkpoint('c', {
      imagePath: dir,
      workPath: dir,
    });
    assert.equal(seen[0]!.path, undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
    // the directories whose `criu` runc was handed (an agent keeps them for its life)
    for (const e of readdirSync(tmpdir()))
      if (e.startsWith(`ferry-criu-path-${process.pid}-`)) await rm(join(tmpdir(), e), { recursive: true });
  }
});

test("criu-fail:dump fails the dump's CRIU, not runc's version check, staged or not", async () => {
  await withGateBed(
    async (bed) => {
      const o = { imagePath: bed.images, workPath: bed.images };
      await assert.rejects(bed.runc.checkpoint('c', o), /runc checkpoint failed \(exit status 3\)/);
      assert.deepEqual(bed.lines(), ['version'], 'the version check ran the real CRIU');
      assert.ok(!bed.dumped());
      await rm(join(bed.images, 'descriptors.json'));
      const staged = await bed.runc.stageCheckpoint('c', o);
      assert.ok(staged);
      await bed.waitFor(2);
      await assert.rejects(staged.go(), /runc checkpoint failed \(exit status 3\)/);
      assert.deepEqual(bed.lines(), ['version', 'version']);
      assert.ok(!bed.dumped());
    },
    new Faults(['criu-fail:dump']),
  );
});

test('a staged lazy dump whose runc already failed: go() fails with the explained error', async () => {
  await withGateBed(async (bed, dir) => {
    await writeFile(join(dir, 'criu'), '#!/bin/sh\nexit 1\n', { mode: 0o755 });
    const staged = await bed.runc.stageCheckpointLazy('c', {
      imagePath: bed.images,
      workPath: bed.images,
      pageServer: '127.0.0.1:1',
    });
    assert.ok(staged);
    await new Promise((r) => setTimeout(r, 300));
    await assert.rejects(staged.go(), (err: FerryError) => {
      assert.equal(err.code, 'FERRY_E_CHECKPOINT_FAILED');
      assert.match(err.message, /^runc checkpoint --lazy-pages failed: /);
      return true;
    });
  });
});

test('a cancelled staged dump has ended when cancel() resolves: nothing of its runc writes on', async () => {
  await withGateBed(async (bed) => {
    const o = { imagePath: bed.images, workPath: bed.images };
    const staged = await bed.runc.stageCheckpoint('c', o);
    assert.ok(staged);
    await bed.waitFor(1);
    await staged.cancel();
    assert.ok(existsSync(join(bed.images, 'after')), 'runc ended before cancel() resolved');
    await rm(join(bed.images, 'descriptors.json'));
    await rm(join(bed.images, 'after'));
    const lazy = await bed.runc.stageCheckpointLazy('c', { ...o, pageServer: '127.0.0.1:1' });
    assert.ok(lazy);
    await bed.waitFor(2);
    await lazy.cancel();
    assert.ok(existsSync(join(bed.images, 'after')), "the lazy dump's runc too");
    assert.ok(!bed.dumped());
  });
});

test("a staged dump's deadline counts from go(), not from its staging", async () => {
  await withGateBed(async (bed, dir) => {
    const o = { imagePath: bed.images, workPath: bed.images, timeoutMs: 1000 };
    const staged = await bed.runc.stageCheckpoint('c', o);
    assert.ok(staged);
    await bed.waitFor(1);
    // longer than the dump's deadline before the release: the wait does not count
    await new Promise((r) => setTimeout(r, 1500));
    await staged.go();
    assert.ok(bed.dumped());
    // a dump stuck after its release: killed at the deadline go() was given
    await rm(join(bed.images, 'descriptors.json'));
    await writeFile(join(dir, 'hang'), '');
    const stuck = await bed.runc.stageCheckpoint('c', o);
    assert.ok(stuck);
    await bed.waitFor(3);
    await assert.rejects(stuck.go(300), /killed after its 300 ms deadline/);
  });
});

test("a staged restore: runc's version check at once, its mounts' mark made, the restore's CRIU only at go()", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-runc-gate-'));
  try {
    const root = join(dir, 'root');
    const images = join(dir, 'images');
    await mkdir(images, { recursive: true });
    await writeFile(join(images, 'descriptors.json'), '["/dev/null","/dev/null","/dev/null"]');
    const log = join(dir, 'criu.log');
    const criuPath = join(dir, 'criu');
    // as runc 1.1-1.4 restore: the version check, `criu-root` made, descriptors.json read, the restore's CRIU
    await writeFile(
      criuPath,
      `#!/bin/sh\nif [ -d ${root}/c/criu-root ]; then echo restore >> ${log}; else echo version >> ${log}; fi\n`,
      { mode: 0o755 },
    );
    const runcPath = join(dir, 'runc');
    await writeFile(
      runcPath,
      [
        '#!/bin/sh',
        `criu swrk 3 || exit 2`,
        `mkdir -p ${root}/c/criu-root`,
        `cat ${images}/descriptors.json > /dev/null || exit 4`,
        `criu swrk 3; rc=$?; rmdir ${root}/c/criu-root; exit $rc`,
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    const runc = new Runc(new ProcessRunner(), { root, runcPath, criuPath });
    const lines = () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []);
    const o = { bundle: join(dir, 'bundle'), imagePath: images, workPath: images };
    const staged = await runc.stageRestore('c', o);
    assert.ok(staged);
    for (let i = 0; i < 200 && !existsSync(join(root, 'c', 'criu-root')); i++)
      await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(lines(), ['version'], 'the restore waits');
    await staged.go();
    assert.deepEqual(lines(), ['version', 'restore']);

    // cancelled: runc ends, its CRIU never restored
    await rm(log);
    const again = await runc.stageRestore('c', o);
    assert.ok(again);
    for (let i = 0; i < 200 && !existsSync(join(root, 'c', 'criu-root')); i++)
      await new Promise((r) => setTimeout(r, 10));
    await again.cancel();
    assert.deepEqual(lines(), ['version']);

    // a mark already there (a restore a crash left): not staged, a gate could not tell the CRIUs apart
    await mkdir(join(root, 'c', 'criu-root'), { recursive: true });
    assert.equal(await runc.stageRestore('c', o), undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
