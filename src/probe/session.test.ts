import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { FerryError } from '../core/errors.ts';
import { LINE_COUNTER_PY, pythonArgs, SERVER_READY_RE, UDP_COUNTER_PY } from '../workloads/servers.ts';
import { parseTarget, probeOptions } from './cli.ts';
import { Probe } from './session.ts';
import type { ProbeResult } from './stats.ts';

const REDIS = '/usr/bin/redis-server';
const tmp = mkdtempSync(join(tmpdir(), 'ferry-probe-test-'));
const children: ChildProcess[] = [];

function kill(p: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (p.exitCode === null && p.signalCode === null) p.kill(signal);
}

after(() => {
  for (const p of children) kill(p);
  rmSync(tmp, { recursive: true, force: true });
});

/** Spawns a command, waits (up to 5 s) for a stdout line matching `ready`, returns the child and the match. */
async function spawnReady(
  argv: string[],
  ready: RegExp,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ proc: ChildProcess; m: RegExpExecArray }> {
  const proc = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env, cwd: tmp });
  children.push(proc);
  let out = '';
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const m = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${argv[0]} not ready in 5 s: ${out}${err}`)), 5000);
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const hit = ready.exec(out);
      if (hit) {
        clearTimeout(timer);
        resolve(hit);
      }
    });
    proc.on('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`${argv[0]} exited (${code ?? sig}) before ready: ${out}${err}`));
    });
  });
  proc.stdout?.resume();
  return { proc, m };
}

async function pyServer(code: string, counterFile = ''): Promise<{ proc: ChildProcess; port: number }> {
  const { proc, m } = await spawnReady(pythonArgs(code, 0), SERVER_READY_RE, {
    ...process.env,
    FERRY_COUNTER_FILE: counterFile,
  });
  return { proc, port: Number(m[1]) };
}

/** A port nothing listens on (bound then released). */
async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

function assertClean(r: ProbeResult): void {
  assert.equal(r.errors, 0, `errors: ${r.errorsDetail.join('; ')}`);
  assert.equal(r.resets, 0, `resets: ${r.errorsDetail.join('; ')}`);
  assert.ok(r.replies > 200, `only ${r.replies} replies`);
  assert.ok(r.sent >= r.replies);
  assert.ok(r.serverValues, 'server values recorded');
  assert.equal(r.serverValues.continuous, true, r.notes.join('; '));
  assert.equal(r.serverValues.monotonic, true);
  assert.ok(r.firstReplyAt !== undefined && r.lastReplyAt !== undefined && r.lastReplyAt >= r.firstReplyAt);
  assert.ok(r.gaps.length > 0 && r.gaps.length <= 16);
}

describe('probe arguments', () => {
  test('bad probe options are FERRY_E_INPUT_ARGS', () => {
    const base = { kind: 'tcp' as const, host: '127.0.0.1', port: 1, intervalMs: 2 };
    for (const bad of [
      { ...base, kind: 'http' as unknown as 'tcp' },
      { ...base, host: '' },
      { ...base, port: 0 },
      { ...base, port: 70000 },
      { ...base, intervalMs: 0 },
      { ...base, intervalMs: Number.NaN },
      { ...base, durationMs: -1 },
      { ...base, replyTimeoutMs: 0 },
    ])
      assert.throws(
        () => new Probe(bad),
        (e: unknown) => e instanceof FerryError && e.code === 'FERRY_E_INPUT_ARGS',
      );
  });

  test('the CLI parses IPV4:PORT, interval (ms) and duration (s)', () => {
    assert.deepEqual(parseTarget('10.0.0.2:7000'), { host: '10.0.0.2', port: 7000 });
    assert.deepEqual(probeOptions('udp', '10.1.2.3:53', {}), {
      kind: 'udp',
      host: '10.1.2.3',
      port: 53,
      intervalMs: 2,
    });
    assert.deepEqual(probeOptions('redis', '127.0.0.1:6379', { interval: '5', duration: '1.5' }), {
      kind: 'redis',
      host: '127.0.0.1',
      port: 6379,
      intervalMs: 5,
      durationMs: 1500,
    });
    const bad: [string, string, { interval?: string; duration?: string }][] = [
      ['tcp', 'localhost:80', {}],
      ['tcp', '10.0.0.256:80', {}],
      ['tcp', '10.0.0.1', {}],
      ['tcp', '10.0.0.1:0', {}],
      ['tcp', '10.0.0.1:65536', {}],
      ['tcp', '[::1]:80', {}],
      ['icmp', '10.0.0.1:80', {}],
      ['tcp', '10.0.0.1:80', { interval: '0' }],
      ['tcp', '10.0.0.1:80', { interval: '1001' }],
      ['tcp', '10.0.0.1:80', { interval: '2ms' }],
      ['tcp', '10.0.0.1:80', { duration: '0' }],
      ['tcp', '10.0.0.1:80', { duration: '-3' }],
    ];
    for (const [kind, target, o] of bad)
      assert.throws(
        () => probeOptions(kind, target, o),
        (e: unknown) => e instanceof FerryError && e.code === 'FERRY_E_INPUT_ARGS',
        `${kind} ${target} ${JSON.stringify(o)}`,
      );
  });
});

describe('probe against real servers on 127.0.0.1', { timeout: 60_000 }, () => {
  test('tcp: about a second at 2 ms, clean, and the server writes its counter file', async () => {
    const counterFile = join(tmp, 'tcp-counter');
    const { proc, port } = await pyServer(LINE_COUNTER_PY, counterFile);
    after(() => kill(proc));
    const probe = new Probe({ kind: 'tcp', host: '127.0.0.1', port, intervalMs: 2, durationMs: 1000 });
    await probe.start();
    const r = await probe.done();
    assertClean(r);
    assert.equal(r.lost, 0);
    assert.equal(r.replies, r.sent);
    assert.equal(r.serverValues?.first, 1);
    assert.equal(r.serverValues?.last, r.replies);
    assert.deepEqual(await probe.stop(), r, 'stop() after done() returns the same result');
    await sleep(200);
    assert.equal(readFileSync(counterFile, 'utf8').trim(), String(r.replies));

    // The counter is server-wide: a second connection continues where the first left off.
    const again = new Probe({ kind: 'tcp', host: '127.0.0.1', port, intervalMs: 2 });
    await again.start();
    await sleep(100);
    const r2 = await again.stop();
    assert.equal(r2.errors + r2.resets, 0, r2.errorsDetail.join('; '));
    assert.equal(r2.serverValues?.first, r.replies + 1);
  });

  test('tcp: a frozen server (SIGSTOP) is a gap, not an error', async () => {
    const { proc, port } = await pyServer(LINE_COUNTER_PY);
    after(() => kill(proc));
    const probe = new Probe({ kind: 'tcp', host: '127.0.0.1', port, intervalMs: 2 });
    await probe.start();
    await sleep(300);
    proc.kill('SIGSTOP');
    await sleep(300);
    proc.kill('SIGCONT');
    await sleep(400);
    const r = await probe.stop();
    assertClean(r);
    assert.equal(r.lost, 0);
  });

  test('tcp: the server killed mid-run is a reset, and the probe stops by itself', async () => {
    const { proc, port } = await pyServer(LINE_COUNTER_PY);
    after(() => kill(proc));
    const probe = new Probe({ kind: 'tcp', host: '127.0.0.1', port, intervalMs: 2, durationMs: 30_000 });
    await probe.start();
    await sleep(300);
    kill(proc);
    const r = await probe.done();
    assert.ok(r.resets >= 1, JSON.stringify(r));
    assert.ok(r.replies > 0);
    assert.match(r.errorsDetail.join('\n'), /reset/);
  });

  test('udp: about a second at 2 ms, clean', async () => {
    const { proc, port } = await pyServer(UDP_COUNTER_PY);
    after(() => kill(proc));
    const probe = new Probe({ kind: 'udp', host: '127.0.0.1', port, intervalMs: 2, durationMs: 1000 });
    await probe.start();
    const r = await probe.done();
    assertClean(r);
    assert.ok(r.replies + r.lost <= r.sent);
  });

  test('udp: ICMP port unreachable after the server died counts as errors, not resets', async () => {
    const { proc, port } = await pyServer(UDP_COUNTER_PY);
    after(() => kill(proc));
    const probe = new Probe({ kind: 'udp', host: '127.0.0.1', port, intervalMs: 2, replyTimeoutMs: 200 });
    await probe.start();
    await sleep(200);
    kill(proc);
    await new Promise((resolve) => proc.once('exit', resolve));
    await sleep(400);
    const r = await probe.stop();
    assert.ok(r.errors >= 1, JSON.stringify(r));
    assert.equal(r.resets, 0);
    assert.match(r.errorsDetail.join('\n'), /ECONNREFUSED/);
  });

  test('nothing listening: start() rejects with FERRY_E_HOST_UNREACHABLE (tcp, udp, redis)', async () => {
    for (const kind of ['tcp', 'udp', 'redis'] as const) {
      const port = await freePort();
      const probe = new Probe({ kind, host: '127.0.0.1', port, intervalMs: 2 });
      await assert.rejects(
        probe.start(),
        (e: unknown) => e instanceof FerryError && e.code === 'FERRY_E_HOST_UNREACHABLE',
      );
      const r = await probe.done();
      assert.equal(r.replies, 0);
      assert.ok(r.errorsDetail.length > 0);
    }
  });

  test(
    'redis: INCR replies increase by one',
    { skip: !existsSync(REDIS) && `${REDIS} not found` },
    async () => {
      const port = await freePort();
      const { proc } = await spawnReady(
        [
          REDIS,
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--save',
          '',
          '--appendonly',
          'no',
          '--dir',
          tmp,
        ],
        /Ready to accept connections/,
      );
      after(() => kill(proc));
      const probe = new Probe({ kind: 'redis', host: '127.0.0.1', port, intervalMs: 2, durationMs: 1000 });
      await probe.start();
      const r = await probe.done();
      assertClean(r);
      assert.equal(r.lost, 0);
      assert.equal(r.serverValues?.first, 1);
      assert.equal(r.serverValues?.last, r.replies);
    },
  );
});

describe('probe against misbehaving servers', { timeout: 30_000 }, () => {
  /** A TCP server answering each request through `answer` (undefined: no reply). */
  async function fakeServer(answer: (n: number, req: string) => string | undefined): Promise<number> {
    const srv = net.createServer((c) => {
      let buf = '';
      let n = 0;
      c.setEncoding('latin1');
      c.on('error', () => {});
      c.on('data', (d: string) => {
        buf += d;
        const parts = buf.split(/\r?\n/);
        buf = parts.pop() ?? '';
        for (const req of parts) {
          // RESP framing: of '*2', '$4', 'INCR', '$11', 'ferry:probe' only INCR counts
          if (req === '' || req.startsWith('*') || req.startsWith('$') || req === 'ferry:probe') continue;
          n++;
          const out = answer(n, req);
          if (out !== undefined) c.write(out);
        }
      });
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    after(() => {
      srv.close();
    });
    return (srv.address() as net.AddressInfo).port;
  }

  test('tcp: a skipped reply is an error; a counter jump breaks continuity', async () => {
    const port = await fakeServer((n, seq) => {
      if (n === 5) return undefined;
      return `${n < 20 ? n : n + 100} ${seq}\n`;
    });
    const probe = new Probe({ kind: 'tcp', host: '127.0.0.1', port, intervalMs: 2 });
    await probe.start();
    await sleep(200);
    const r = await probe.stop();
    assert.equal(r.resets, 0);
    assert.ok(r.errors >= 1);
    assert.equal(r.lost, 1);
    assert.match(r.errorsDetail.join('\n'), /missing/);
    assert.equal(r.serverValues?.continuous, false);
    assert.equal(r.serverValues?.monotonic, true);
  });

  test('tcp: a reply that never comes is lost after replyTimeoutMs', async () => {
    const port = await fakeServer((n, seq) => (n >= 10 ? undefined : `${n} ${seq}\n`));
    const probe = new Probe({ kind: 'tcp', host: '127.0.0.1', port, intervalMs: 2, replyTimeoutMs: 100 });
    await probe.start();
    await sleep(300);
    const r = await probe.stop();
    assert.equal(r.replies, 9);
    assert.ok(r.lost >= 1);
    assert.ok(r.errors >= r.lost);
    assert.equal(r.lost, r.sent - r.replies);
  });

  test('redis: an -ERR reply is an error', async () => {
    const port = await fakeServer((n) => (n === 3 ? '-ERR nope\r\n' : `:${n < 3 ? n : n - 1}\r\n`));
    const probe = new Probe({ kind: 'redis', host: '127.0.0.1', port, intervalMs: 2 });
    await probe.start();
    await sleep(100);
    const r = await probe.stop();
    assert.equal(r.errors, 1, r.errorsDetail.join('; '));
    assert.match(r.errorsDetail[0] ?? '', /-ERR nope/);
    assert.equal(r.serverValues?.continuous, true);
  });
});
