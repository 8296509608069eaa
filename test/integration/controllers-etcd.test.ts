// Several controllers sharing a real etcd as an operator runs one: TLS with client certificates and etcd's own
// users at once (one controller logs in with a password, the other is the etcd user its certificate names):
// exactly one leads; when it dies, another takes over.
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { AgentClient } from '../../src/api/client.ts';
import { ClusterCA, tlsClientOptions } from '../../src/runtime/pki.ts';
import { MAIN, skipUnlessReady, startBed, waitFor } from './helpers.ts';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

test('two controllers on one etcd: one leader; kill it and the other takes over', async (t) => {
  if (!skipUnlessReady(t)) return;
  try {
    execFileSync('etcd', ['--version']);
  } catch {
    if (process.env['CI']) assert.fail('etcd is not installed (make setup installs etcd-server)');
    t.skip('needs etcd (make setup installs etcd-server)');
    return;
  }
  const bed = await startBed(['a']);
  const procs: ChildProcess[] = [];
  const dataDir = mkdtempSync(join(tmpdir(), 'ferry-etcd-it-'));
  t.after(async () => {
    for (const p of procs) p.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
    await bed.down();
  });
  const [cport, pport] = [await freePort(), await freePort()];
  const endpoint = `https://127.0.0.1:${cport}`;
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD')));
  const pki = join(bed.state.dir, 'pki');
  const ca = new ClusterCA(pki);
  const server = await ca.issue('etcd', { role: 'controller', ips: ['127.0.0.1'] });
  const certs = await ca.issue('controller', {
    role: 'controller',
    ips: [bed.state.bridgeAddress],
  });
  procs.push(
    spawn(
      'etcd',
      [
        '--name=ferry-it',
        `--data-dir=${dataDir}`,
        `--listen-client-urls=${endpoint}`,
        `--advertise-client-urls=${endpoint}`,
        `--listen-peer-urls=http://127.0.0.1:${pport}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${pport}`,
        `--initial-cluster=ferry-it=http://127.0.0.1:${pport}`,
        `--cert-file=${server.cert}`,
        `--key-file=${server.key}`,
        `--trusted-ca-file=${server.ca}`,
        '--client-cert-auth',
        '--log-level=warn',
      ],
      { env, stdio: 'ignore' },
    ),
  );
  // etcdctl with the user's certificate (CN cli) while etcd takes any certificate of the CA, then as root
  const etcdctl = (...args: string[]) =>
    execFileSync(
      'etcdctl',
      [
        `--endpoints=${endpoint}`,
        `--cacert=${certs.ca}`,
        `--cert=${join(pki, 'cli.crt')}`,
        `--key=${join(pki, 'cli.key')}`,
        ...args,
      ],
      { env: { ...env, ETCDCTL_API: '3' }, encoding: 'utf8', timeout: 20_000, stdio: 'pipe' },
    );
  await waitFor(
    'etcd',
    () => {
      etcdctl('endpoint', 'health');
      return true;
    },
    15_000,
  );
  const prefix = `/ferry/${bed.name}/`;
  etcdctl('user', 'add', 'root:rootpw');
  etcdctl('user', 'grant-role', 'root', 'root');
  etcdctl('role', 'add', 'ferry');
  etcdctl('role', 'grant-permission', 'ferry', '--prefix=true', 'readwrite', prefix);
  etcdctl('user', 'add', 'ferry:s3cret');
  etcdctl('user', 'grant-role', 'ferry', 'ferry');
  etcdctl('user', 'add', 'controller', '--no-password');
  etcdctl('user', 'grant-role', 'controller', 'ferry');
  etcdctl('auth', 'enable');
  const passwordFile = join(bed.state.dir, 'etcd-password');
  writeFileSync(passwordFile, 's3cret\n', { mode: 0o600 });
  const ports = [7481, 7482];
  const clients = ports.map(
    (port) =>
      new AgentClient(
        { name: 'controller', address: bed.state.bridgeAddress, port },
        tlsClientOptions({ ca: join(pki, 'ca.crt'), cert: join(pki, 'cli.crt'), key: join(pki, 'cli.key') }),
        { timeoutMs: 2000 },
      ),
  );
  t.after(() => {
    for (const c of clients) c.close();
  });
  const byPort = new Map<number, ChildProcess>();
  for (const [i, port] of ports.entries()) {
    const file = join(bed.state.dir, `controller-${i}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        name: `ctl${i}`,
        listen: { address: bed.state.bridgeAddress, port },
        tls: certs,
        store: {
          kind: 'etcd',
          endpoint,
          prefix,
          leaderTtlSeconds: 3,
          tls: certs,
          // ctl0: the user ferry's password on top of the certificate; ctl1: the certificate's name, controller
          ...(i === 0 ? { auth: { user: 'ferry', passwordFile } } : {}),
        },
        rebalanceIntervalMs: 0,
      }),
    );
    const p = spawn(process.execPath, ['--no-warnings', MAIN, 'controller', '--config', file], {
      stdio: 'ignore',
      env: bed.env,
    });
    procs.push(p);
    byPort.set(port, p);
  }
  const leaders = async () => {
    const out: number[] = [];
    for (const [i, c] of clients.entries()) {
      const h = await c.request<{ leader: boolean }>('GET', '/v1/health').catch(() => undefined);
      if (h?.leader) out.push(ports[i]!);
    }
    return out;
  };
  const first = await waitFor(
    'one leader',
    async () => {
      const l = await leaders();
      return l.length === 1 ? l[0] : undefined;
    },
    // two controllers starting at once on a busy machine may take a while to listen
    60_000,
  );
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual(await leaders(), [first], 'still exactly one leader');
  byPort.get(first)!.kill('SIGKILL');
  const other = ports.find((p) => p !== first)!;
  await waitFor(
    'the other takes over',
    async () => ((await leaders()).includes(other) ? true : undefined),
    60_000,
  );
});
