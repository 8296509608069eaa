// Runs the ClusterStore contract and the lease / leader tests against a real etcd started here (from PATH) on free
// loopback ports with a throwaway data dir. Without etcd: skipped, or failed when CI is set.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { storeContract } from '../../../test/support/store-contract.ts';
import type { HostRecord } from '../store.ts';
import { EtcdClient } from './client.ts';
import { EtcdLeaderElection } from './leader.ts';
import { EtcdStore } from './store.ts';

function findEtcd(): string | undefined {
  for (const d of (process.env['PATH'] ?? '').split(delimiter)) {
    if (!d) continue;
    const p = join(d, 'etcd');
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {}
  }
  return undefined;
}

const etcdBin = findEtcd();
const MISSING = 'etcd is not on PATH (scripts/setup.sh installs etcd-server)';
const skip = etcdBin === undefined && !process.env['CI'] ? MISSING : false;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(
  what: string,
  cond: () => Promise<boolean> | boolean,
  timeoutMs: number,
): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (await cond()) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await sleep(50);
  }
}

interface Etcd {
  endpoint: string;
  proc: ChildProcess;
  dataDir: string;
  log: string[];
}

let etcd: Etcd | undefined;

async function startEtcd(bin: string): Promise<Etcd> {
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const [cport, pport] = [await freePort(), await freePort()];
    const dataDir = mkdtempSync(join(tmpdir(), 'ferry-etcd-'));
    const client = `http://127.0.0.1:${cport}`;
    const peer = `http://127.0.0.1:${pport}`;
    // keep the environment's ETCD_* settings out
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD')));
    const proc = spawn(
      bin,
      [
        '--name=ferry-test',
        `--data-dir=${dataDir}`,
        `--listen-client-urls=${client}`,
        `--advertise-client-urls=${client}`,
        `--listen-peer-urls=${peer}`,
        `--initial-advertise-peer-urls=${peer}`,
        `--initial-cluster=ferry-test=${peer}`,
        '--initial-cluster-state=new',
        '--log-level=warn',
      ],
      { env, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const e: Etcd = { endpoint: client, proc, dataDir, log: [] };
    etcd = e; // from here on `after` cleans up
    proc.stderr?.on('data', (d: Buffer) => {
      e.log.push(d.toString());
      if (e.log.length > 200) e.log.shift();
    });
    let exited = false;
    proc.once('exit', () => {
      exited = true;
    });
    const c = new EtcdClient({ endpoints: client, timeoutMs: 500 });
    const t0 = Date.now();
    while (!exited && Date.now() - t0 < 10_000) {
      try {
        const v = await c.version();
        await c.get('/probe'); // the KV service answers too
        if (v.etcdserver) return e;
      } catch (err) {
        lastErr = err;
      }
      await sleep(100);
    }
    lastErr = new Error(`etcd did not come up (exited: ${exited}):\n${e.log.join('').slice(-2000)}`);
    await stopEtcd();
  }
  throw lastErr;
}

async function stopEtcd(): Promise<void> {
  const e = etcd;
  etcd = undefined;
  if (!e) return;
  if (e.proc.exitCode === null && e.proc.signalCode === null) {
    const gone = new Promise((r) => e.proc.once('exit', r));
    e.proc.kill('SIGKILL');
    await gone;
  }
  rmSync(e.dataDir, { recursive: true, force: true });
}

// if the test process dies without running `after`, do not leave etcd behind
process.once('exit', () => {
  if (etcd?.proc.exitCode === null) etcd.proc.kill('SIGKILL');
  if (etcd) rmSync(etcd.dataDir, { recursive: true, force: true });
});

let prefixes = 0;
const prefix = () => `/ferry-test/${process.pid}-${++prefixes}/`;

const host = (name: string): HostRecord => ({
  name,
  address: '127.0.0.1',
  port: 7001,
  capacity: { cores: 4, memoryBytes: 2 ** 33 },
  lastSeen: Date.now(),
  up: true,
});

describe('etcd store', { skip }, () => {
  before(async () => {
    if (!etcdBin) assert.fail(`${MISSING}; CI is set, so this is an error`);
    etcd = await startEtcd(etcdBin);
  });
  after(stopEtcd);

  const endpoint = () => {
    if (!etcd) throw new Error('etcd is not running');
    return etcd.endpoint;
  };

  it("speaks etcd's gRPC API (etcd >= 3.4)", async () => {
    const v = await new EtcdClient({ endpoints: endpoint() }).version();
    const [maj, min] = v.etcdserver.split('.').map(Number);
    assert.ok(maj === 3 && (min ?? 0) >= 4, `etcd ${v.etcdserver}`);
  });

  storeContract('etcd', async () => {
    const store = new EtcdStore({ endpoints: endpoint(), prefix: prefix() });
    return { store, cleanup: () => store.close() };
  });

  it('a host whose lease expired is listed down; refreshHost or setHostUp(true) bring it back', async () => {
    const store = new EtcdStore({ endpoints: endpoint(), prefix: prefix(), hostTtlSeconds: 2 });
    await store.upsertHost(host('short'));
    await store.upsertHost(host('kept'));
    assert.deepEqual(
      (await store.listHosts()).map((h) => [h.name, h.up]),
      [
        ['kept', true],
        ['short', true],
      ],
    );
    // keep 'kept' alive while 'short' expires
    const t0 = Date.now();
    while (Date.now() - t0 < 3500) {
      await store.refreshHost('kept');
      assert.equal((await store.getHost('kept'))?.up, true, 'refreshHost keeps the host up');
      await sleep(500);
    }
    await until('the expired host is down', async () => (await store.getHost('short'))?.up === false, 3000);
    assert.deepEqual(
      (await store.listHosts()).map((h) => [h.name, h.up]),
      [
        ['kept', true],
        ['short', false],
      ],
      'still listed, down',
    );
    await store.refreshHost('short');
    assert.equal((await store.getHost('short'))?.up, true, 'refreshHost re-creates an expired lease');
    await store.setHostUp('short', false);
    assert.equal((await store.getHost('short'))?.up, false);
    await store.setHostUp('short', true);
    assert.equal((await store.getHost('short'))?.up, true);
    await assert.rejects(store.refreshHost('nope'), /unknown host/);
    await store.close();
  });

  it('upsertHost keeps reusing one lease (heartbeats do not pile up leases)', async () => {
    const store = new EtcdStore({ endpoints: endpoint(), prefix: prefix(), hostTtlSeconds: 30 });
    const c = new EtcdClient({ endpoints: endpoint() });
    await store.upsertHost(host('h'));
    const l1 = (await c.get(`${store.prefix}alive/h`))?.lease;
    await store.upsertHost({ ...host('h'), lastSeen: 42 });
    const l2 = (await c.get(`${store.prefix}alive/h`))?.lease;
    assert.ok(l1 && l1 !== '0');
    assert.equal(l2, l1);
    assert.equal((await store.getHost('h'))?.lastSeen, 42);
    await c.revoke(l1);
    await store.close();
  });

  it('two candidates: exactly one leads; when it resigns the other takes over', async () => {
    const p = prefix();
    const a = new EtcdLeaderElection({ endpoints: endpoint(), prefix: p, ttlSeconds: 2, retryMs: 100 });
    const b = new EtcdLeaderElection({ endpoints: endpoint(), prefix: p, ttlSeconds: 2, retryMs: 100 });
    try {
      const won = await Promise.race([a.campaign('ctl-a').then(() => a), b.campaign('ctl-b').then(() => b)]);
      const other = won === a ? b : a;
      const otherDone = other.campaign(won === a ? 'ctl-b' : 'ctl-a');
      // across a couple of renewals (TTL/3 ≈ 0.67 s): still exactly one
      for (let i = 0; i < 4; i++) {
        assert.deepEqual([won.isLeader(), other.isLeader()], [true, false]);
        await sleep(400);
      }
      const leaderValue = (await won.client.get(won.key))?.value.toString();
      assert.equal(leaderValue, won === a ? 'ctl-a' : 'ctl-b');
      await won.resign();
      assert.equal(won.isLeader(), false);
      await until('the other candidate leads', () => other.isLeader(), 3000);
      await otherDone;
      assert.equal(won.isLeader(), false);
    } finally {
      await a.resign();
      await b.resign();
    }
  });

  it('a leader whose lease is revoked loses (onLost) and the other takes over', async () => {
    const p = prefix();
    const a = new EtcdLeaderElection({ endpoints: endpoint(), prefix: p, ttlSeconds: 2, retryMs: 100 });
    const b = new EtcdLeaderElection({ endpoints: endpoint(), prefix: p, ttlSeconds: 2, retryMs: 100 });
    let lostA = 0;
    a.onLost(() => lostA++);
    try {
      await a.campaign('ctl-a');
      const bDone = b.campaign('ctl-b');
      await sleep(200);
      assert.equal(b.isLeader(), false);
      const lease = (await a.client.get(a.key))?.lease;
      assert.ok(lease && lease !== '0');
      await a.client.revoke(lease); // as if etcd expired it (leader stalled)
      await until('b leads', () => b.isLeader(), 3000);
      await bDone;
      await until('a notices', () => lostA === 1, 3000);
      assert.equal(a.isLeader(), false);
      assert.equal((await b.client.get(b.key))?.value.toString(), 'ctl-b');
      // a rejoins as a follower
      const aAgain = a.campaign('ctl-a');
      await sleep(300);
      assert.equal(a.isLeader(), false);
      await b.resign();
      await aAgain;
      assert.equal(a.isLeader(), true);
      assert.equal(lostA, 1, 'onLost is not called on resign');
    } finally {
      await a.resign();
      await b.resign();
    }
  });

  it('resign stops a pending campaign (it never settles, nothing to catch)', async () => {
    const p = prefix();
    const a = new EtcdLeaderElection({ endpoint: endpoint(), prefix: p, ttlSeconds: 2, retryMs: 100 });
    const b = new EtcdLeaderElection({ endpoint: endpoint(), prefix: p, ttlSeconds: 2, retryMs: 100 });
    try {
      await a.campaign('ctl-a');
      let settled = false;
      const mark = () => {
        settled = true;
      };
      b.campaign('ctl-b').then(mark, mark);
      await sleep(150);
      await b.resign();
      await a.resign();
      await sleep(400);
      assert.equal(b.isLeader(), false, 'b stopped campaigning');
      assert.equal(settled, false);
      assert.equal(await a.client.get(a.key), undefined, 'nobody holds the key');
      // and may campaign again later
      await b.campaign('ctl-b');
      assert.equal(b.isLeader(), true);
    } finally {
      await a.resign();
      await b.resign();
    }
  });
});
