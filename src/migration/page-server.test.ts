import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { ExecResult, StartedProcess } from '../runtime/exec.ts';
import { PAGE_SERVER_PORT_BASE, PAGE_SERVER_PORT_SPAN } from './defaults.ts';
import { IncomingPageServer, type PageServerDeps } from './page-server.ts';

/**
 * A stand-in page server: this test process listens on the port for real (the start waits for the socket among
 * the page server's fds, here this process's), exits when told.
 */
function fakeDeps(opts: { listen?: boolean; pid?: number; failAfterMs?: number } = {}) {
  const fence: string[] = [];
  let exit: (r: ExecResult) => void = () => {};
  let server: Server | undefined;
  const result = (code: number | null, signal: NodeJS.Signals | null = null, stderr = ''): ExecResult => ({
    argv: ['criu'],
    code,
    signal,
    stdout: '',
    stderr,
    ms: 1,
  });
  const deps: PageServerDeps = {
    start: (o) => {
      const done = new Promise<ExecResult>((res) => {
        exit = (r) => {
          server?.close();
          res(r);
        };
      });
      if (opts.listen !== false) {
        server = createServer();
        server.listen(o.port, '127.0.0.1');
        if (opts.failAfterMs !== undefined)
          setTimeout(() => exit(result(1, null, 'Error: bind: Address already in use')), opts.failAfterMs);
      } else {
        setTimeout(() => exit(result(1, null, 'Error: TLS: no key')), 20);
      }
      const p: StartedProcess = {
        status: Promise.resolve(),
        done,
        kill: (signal) => exit(result(null, signal ?? 'SIGTERM')),
        pid: opts.pid ?? process.pid,
      };
      return p;
    },
    fence: {
      open: async (port, from, id) => void fence.push(`open ${port} ${from} ${id}`),
      close: async (port, from, id) => void fence.push(`close ${port} ${from} ${id}`),
    },
  };
  return { deps, fence, exit: (code: number, stderr = '') => exit(result(code, null, stderr)) };
}

const port = () => PAGE_SERVER_PORT_BASE + Math.floor(Math.random() * PAGE_SERVER_PORT_SPAN);
const at = (p: number, imagesDir = '/i') => ({ port: p, imagesDir, from: 'a', migration: 'm1' });

test('the page server is fenced to its source, listening before prepare ends, unfenced once it exits', async () => {
  const f = fakeDeps();
  const p = port();
  const ps = await IncomingPageServer.start(f.deps, at(p));
  assert.deepEqual(f.fence, [`open ${p} a m1`]);
  f.exit(0);
  await ps.finished();
  await ps.stop(); // an abort afterwards changes nothing
  assert.deepEqual(f.fence, [`open ${p} a m1`, `close ${p} a m1`]);
});

test('a page server that failed fails the restore, naming why from its CRIU log', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-ps-'));
  try {
    const f = fakeDeps();
    const ps = await IncomingPageServer.start(f.deps, at(port(), dir));
    // CRIU writes to its log, not to stderr
    await writeFile(
      join(dir, 'page-server.log'),
      "(00.000101) Warn (criu/kerndat.c:1): Can't keep kdat cache\n(00.512000) Error (criu/page-xfer.c:1): Can not write pages: No space left on device\n",
    );
    f.exit(1);
    const why = 'Error (criu/page-xfer.c:1): Can not write pages: No space left on device';
    assert.equal(await ps.failed, why, 'the cause, for the log');
    await assert.rejects(ps.finished(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'FERRY_E_TRANSFER_FAILED');
      assert.ok(err.message.endsWith(why), err.message);
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('an abort kills the page server and closes its port', async () => {
  const f = fakeDeps();
  const p = port();
  const ps = await IncomingPageServer.start(f.deps, at(p));
  await ps.stop();
  assert.equal(await ps.failed, undefined, 'killed by the abort: no failure of its own');
  assert.deepEqual(f.fence, [`open ${p} a m1`, `close ${p} a m1`]);
});

test('a page server that exits before it listens fails the prepare and leaves no fence', async () => {
  const f = fakeDeps({ listen: false });
  const p = port();
  await assert.rejects(IncomingPageServer.start(f.deps, at(p)), /did not start: Error: TLS: no key/);
  assert.deepEqual(f.fence, [`open ${p} a m1`, `close ${p} a m1`]);
});

test('a port something here already listens on is refused before anything is done', async () => {
  const p = port();
  const other = createServer().listen(p, '127.0.0.1');
  await new Promise((r) => other.once('listening', r));
  try {
    const f = fakeDeps();
    await assert.rejects(IncomingPageServer.start(f.deps, at(p)), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'FERRY_E_PORT_TAKEN');
      assert.match(err.message, new RegExp(`port ${p} .*already listened on`));
      return true;
    });
    assert.deepEqual(f.fence, [], 'no fence, no page server');
  } finally {
    other.close();
  }
});

test("another process's listener on the port is not the page server listening", async () => {
  // the port listens (in this test process) but the page server's pid (1 here) holds no socket on it: it is not
  // ready, and when it then fails (as a CRIU that could not bind does) the prepare fails
  const f = fakeDeps({ pid: 1, failAfterMs: 300 });
  await assert.rejects(
    IncomingPageServer.start(f.deps, at(port())),
    /did not start: .*Address already in use/,
  );
  assert.equal(f.fence.length, 2, 'fenced, then unfenced');
});

test('a port outside the page servers range is refused before anything is done', async () => {
  const f = fakeDeps();
  for (const p of [22, PAGE_SERVER_PORT_BASE - 1, PAGE_SERVER_PORT_BASE + PAGE_SERVER_PORT_SPAN]) {
    await assert.rejects(
      IncomingPageServer.start(f.deps, at(p)),
      (err: Error & { code?: string }) => err.code === 'FERRY_E_INPUT_REQUEST',
    );
  }
  assert.deepEqual(f.fence, []);
});

test('a host without a page server refuses a cold migration that asks for one', async () => {
  await assert.rejects(
    IncomingPageServer.start(undefined, at(port())),
    (err: Error & { code?: string }) => err.code === 'FERRY_E_CAPABILITY',
  );
});
