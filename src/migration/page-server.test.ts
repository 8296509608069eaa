import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { test } from 'node:test';
import type { ExecResult, StartedProcess } from '../runtime/exec.ts';
import { IncomingPageServer, type PageServerDeps } from './page-server.ts';

/** A stand-in page server: listens on the port for real (the start waits for that), exits when told. */
function fakeDeps(opts: { listen?: boolean } = {}) {
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
      } else {
        setTimeout(() => exit(result(1, null, 'Error: TLS: no key')), 20);
      }
      const p: StartedProcess = {
        status: Promise.resolve(),
        done,
        kill: (signal) => exit(result(null, signal ?? 'SIGTERM')),
        pid: 1,
      };
      return p;
    },
    fence: {
      open: async (port, from) => void fence.push(`open ${port} ${from}`),
      close: async (port, from) => void fence.push(`close ${port} ${from}`),
    },
  };
  return { deps, fence, exit: (code: number, stderr = '') => exit(result(code, null, stderr)) };
}

const port = () => 40000 + Math.floor(Math.random() * 20000);

test('the page server is fenced to its source, listening before prepare ends, unfenced once it exits', async () => {
  const f = fakeDeps();
  const p = port();
  const ps = await IncomingPageServer.start(f.deps, { port: p, imagesDir: '/i', from: 'a' });
  assert.deepEqual(f.fence, [`open ${p} a`]);
  f.exit(0);
  await ps.finished();
  await ps.stop(); // an abort afterwards changes nothing
  assert.deepEqual(f.fence, [`open ${p} a`, `close ${p} a`]);
});

test('a page server that failed fails the restore, naming why', async () => {
  const f = fakeDeps();
  const ps = await IncomingPageServer.start(f.deps, { port: port(), imagesDir: '/i', from: 'a' });
  f.exit(1, 'Error (criu/page-xfer.c:1): Can not write pages\n');
  assert.equal(await ps.failed, 'Error (criu/page-xfer.c:1): Can not write pages', 'the cause, for the log');
  await assert.rejects(ps.finished(), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'FERRY_E_TRANSFER_FAILED');
    assert.match(err.message, /Can not write pages/);
    return true;
  });
});

test('an abort kills the page server and closes its port', async () => {
  const f = fakeDeps();
  const p = port();
  const ps = await IncomingPageServer.start(f.deps, { port: p, imagesDir: '/i', from: 'a' });
  await ps.stop();
  assert.equal(await ps.failed, undefined, 'killed by the abort: no failure of its own');
  assert.deepEqual(f.fence, [`open ${p} a`, `close ${p} a`]);
});

test('a page server that exits before it listens fails the prepare and leaves no fence', async () => {
  const f = fakeDeps({ listen: false });
  const p = port();
  await assert.rejects(
    IncomingPageServer.start(f.deps, { port: p, imagesDir: '/i', from: 'a' }),
    /did not start: Error: TLS: no key/,
  );
  assert.deepEqual(f.fence, [`open ${p} a`, `close ${p} a`]);
});

test('a host without a page server refuses a cold migration that asks for one', async () => {
  await assert.rejects(
    IncomingPageServer.start(undefined, { port: port(), imagesDir: '/i', from: 'a' }),
    (err: Error & { code?: string }) => err.code === 'FERRY_E_CAPABILITY',
  );
});
