// The destination half's state machine and clean-up, with a fake runc, network and lazy-pages daemon (no processes).
import assert from 'node:assert/strict';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, test } from 'node:test';
import { silentLogger } from '../core/log.ts';
import { ContainerHost } from '../host/containers.ts';
import { bundleDir, containerDir, type HostPaths, hostPaths, imageDir } from '../host/paths.ts';
import type { NetworkLike } from '../network/identity.ts';
import type { Neighbour } from '../network/ip.ts';
import type { ExecResult, StartedProcess } from '../runtime/exec.ts';
import type { RestoreOptions, RuncContainerState, RuncLike } from '../runtime/runc.ts';
import { encodeTree } from '../transport/image-stream/index.ts';
import { PAGE_SERVER_PORT_BASE, PAGE_SERVER_PORT_SPAN } from './defaults.ts';
import { IncomingMigrations } from './destination.ts';
import type { IncomingRequest } from './types.ts';

class FakeRunc implements Partial<RuncLike> {
  readonly root = '/fake';
  states = new Map<string, RuncContainerState>();
  calls: string[] = [];
  restores: RestoreOptions[] = [];
  async state(id: string) {
    return this.states.get(id);
  }
  async list() {
    return [...this.states.values()];
  }
  async kill(id: string, signal = 'KILL') {
    this.calls.push(`kill ${id} ${signal}`);
  }
  async destroy(id: string) {
    this.calls.push(`destroy ${id}`);
    this.states.delete(id);
  }
  async restore(id: string, o: RestoreOptions) {
    this.calls.push(`restore ${id}`);
    this.restores.push(o);
    this.states.set(id, { id, pid: 42, status: 'running', bundle: o.bundle });
    return { ms: 7 };
  }
}

class FakeNetwork implements Partial<NetworkLike> {
  calls: string[] = [];
  netnsPath(name: string) {
    return `/run/netns/fake-${name}`;
  }
  async create(name: string, _id: unknown, o: { attached: boolean; locked: boolean }) {
    this.calls.push(`create ${name} attached=${o.attached} locked=${o.locked}`);
  }
  async setNeighbours(name: string, _id: unknown, list: Neighbour[]) {
    this.calls.push(`neighbours ${name} ${list.length}`);
  }
  async attach(name: string) {
    this.calls.push(`attach ${name}`);
  }
  async detach(name: string) {
    this.calls.push(`detach ${name}`);
  }
  async unlock(name: string) {
    this.calls.push(`unlock ${name}`);
  }
  reannounce() {}
  async destroy(name: string) {
    this.calls.push(`destroy ${name}`);
  }
}

/** CRIU's lazy-pages daemon as the destination sees it: it opens its socket, then ends when told. */
class FakeDaemon implements StartedProcess {
  readonly pid = 4242;
  readonly status = Promise.resolve();
  readonly done: Promise<ExecResult>;
  private end!: (r: ExecResult) => void;
  constructor(imagesDir: string) {
    this.done = new Promise((r) => {
      this.end = r;
    });
    writeFileSync(join(imagesDir, 'lazy-pages.socket'), '');
  }
  exit(code: number | null, signal: string | null = null) {
    this.end({ argv: ['criu', 'lazy-pages'], code, signal, stdout: '', stderr: '', ms: 9 });
  }
  kill(signal: NodeJS.Signals = 'SIGTERM') {
    this.exit(null, signal);
  }
}

const NEIGHBOURS = [{ address: '10.0.0.100', mac: '02:00:00:00:00:01' }];
const PAGE_SERVER = { address: '10.0.0.1', port: 27000 };

let dir: string;
let paths: HostPaths;
let runc: FakeRunc;
let network: FakeNetwork;
let host: ContainerHost;
let daemons: { o: { address: string; port: number; imagesDir: string }; d: FakeDaemon }[];
let incoming: IncomingMigrations;
/** What the source sends: a bundle and a checkpoint. */
let sent: { bundle: string; images: string };

function newIncoming(): IncomingMigrations {
  return new IncomingMigrations(host, silentLogger(), {
    lazyPages: (o) => {
      const d = new FakeDaemon(o.imagesDir);
      daemons.push({ o, d });
      return d;
    },
  });
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ferry-dest-'));
  paths = hostPaths(join(dir, 'b'));
  runc = new FakeRunc();
  network = new FakeNetwork();
  host = new ContainerHost({
    hostName: 'b',
    paths,
    runc: runc as unknown as RuncLike,
    cgroupParent: '/t-b',
    network: network as unknown as NetworkLike,
    log: silentLogger(),
  });
  await host.init();
  daemons = [];
  incoming = newIncoming();
  sent = { bundle: join(dir, 'sent', 'bundle'), images: join(dir, 'sent', 'images') };
  mkdirSync(join(sent.bundle, 'rootfs'), { recursive: true });
  writeFileSync(
    join(sent.bundle, 'config.json'),
    JSON.stringify({ root: { path: 'rootfs' }, process: { args: ['x'] } }),
  );
  mkdirSync(sent.images, { recursive: true });
  writeFileSync(join(sent.images, 'inventory.img'), 'inv');
  writeFileSync(join(sent.images, 'pages-1.img'), Buffer.alloc(8192, 3));
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

function request(id: string, name = 'c1', extra: Partial<IncomingRequest> = {}): IncomingRequest {
  return {
    id,
    name,
    from: 'a',
    record: {
      name,
      createdAt: 'now',
      net: 'own',
      ip: '10.0.0.5',
      mac: '02:fc:0a:00:00:05',
      origin: { kind: 'run' },
    },
    neighbours: NEIGHBOURS,
    ...extra,
  };
}

async function receiveBoth(id: string): Promise<void> {
  await incoming.receive(id, 'bundle', encodeTree([{ root: sent.bundle, prefix: '' }]));
  await incoming.receive(id, 'images', encodeTree([{ root: sent.images, prefix: '' }]));
}

const recordFile = (id: string) => join(paths.incomingDir, `${id}.json`);
const code = (c: string) => (err: unknown) => (err as { code?: string }).code === c;

test('prepare reserves the name, stages a locked, detached network and saves its record; a second one is refused', async () => {
  await incoming.prepare(request('m1'));
  assert.equal(incoming.isReserved('c1'), true);
  assert.deepEqual(network.calls, ['create c1 attached=false locked=true', 'neighbours c1 1']);
  assert.equal(JSON.parse(readFileSync(recordFile('m1'), 'utf8')).state, 'prepared');
  assert.ok(existsSync(imageDir(paths, 'm1')));
  await assert.rejects(incoming.prepare(request('m2')), code('FERRY_E_CONTAINER_EXISTS'));
  assert.ok(!existsSync(recordFile('m2')), 'the refused one left nothing');
  // a name this host already runs is refused the same way
  await host.writeRecord({ ...request('m3', 'c2').record });
  await assert.rejects(incoming.prepare(request('m3', 'c2')), code('FERRY_E_CONTAINER_EXISTS'));
  assert.equal(incoming.isReserved('c2'), false);
});

test('a prepared migration knows its source until it is forgotten', async () => {
  assert.equal(incoming.sourceOf('m1'), undefined);
  await incoming.prepare(request('m1'));
  assert.equal(incoming.sourceOf('m1'), 'a');
  await incoming.abort('m1');
  assert.equal(incoming.sourceOf('m1'), undefined);
});

test('two prepares of one name at once: one wins', async () => {
  const results = await Promise.allSettled([
    incoming.prepare(request('m1')),
    incoming.prepare(request('m2')),
  ]);
  assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
});

test('abort frees the name and removes what prepare and the transfer created; again is a no-op', async () => {
  await incoming.prepare(request('m1'));
  await receiveBoth('m1');
  assert.ok(existsSync(join(bundleDir(paths, 'c1'), 'config.json')));
  await incoming.abort('m1');
  assert.equal(incoming.isReserved('c1'), false);
  assert.ok(!existsSync(recordFile('m1')));
  assert.ok(!existsSync(imageDir(paths, 'm1')));
  assert.ok(!existsSync(containerDir(paths, 'c1')));
  assert.ok(network.calls.includes('destroy c1'));
  assert.ok(runc.calls.includes('destroy c1'));
  await incoming.abort('m1');
  await incoming.abort('never-was');
  await incoming.prepare(request('m2'));
  assert.equal(incoming.isReserved('c1'), true, 'the name is free for the next migration');
});

test('receive after abort is refused, and so is a stream still arriving when the abort came', async () => {
  await incoming.prepare(request('m1'));
  const slow = new PassThrough();
  const arriving = incoming.receive('m1', 'images', slow);
  await incoming.abort('m1');
  encodeTree([{ root: sent.images, prefix: '' }]).pipe(slow);
  // (refused when it ends, or as soon as its files are gone: both end the receive without saving)
  await assert.rejects(arriving, (err: Error & { code?: string }) =>
    ['FERRY_E_MIGRATION_UNKNOWN', 'FERRY_E_TRANSFER_FAILED'].includes(err.code ?? ''),
  );
  await assert.rejects(
    incoming.receive('m1', 'bundle', encodeTree([{ root: sent.bundle, prefix: '' }])),
    code('FERRY_E_MIGRATION_UNKNOWN'),
  );
  await assert.rejects(incoming.receiveBlocks('m1', new PassThrough()), code('FERRY_E_MIGRATION_UNKNOWN'));
  assert.ok(!existsSync(recordFile('m1')), 'the late receive did not write the record back');
});

test('out of order: restore before the parts, commit before restore, restore twice, receive after restore', async () => {
  await incoming.prepare(request('m1'));
  await assert.rejects(incoming.restore('m1'), code('FERRY_E_RESTORE_FAILED'));
  await assert.rejects(incoming.commit('m1'), code('FERRY_E_INPUT_REQUEST'));
  await assert.rejects(
    incoming.receive('m1', 'bundle', encodeTree([{ root: sent.bundle, prefix: '' }]), { update: true }),
    code('FERRY_E_INPUT_REQUEST'),
    'an update before the bundle',
  );
  await receiveBoth('m1');
  const first = incoming.restore('m1', { neighbours: NEIGHBOURS });
  await assert.rejects(incoming.restore('m1'), code('FERRY_E_INPUT_REQUEST'), 'while the first one runs');
  const r = await first;
  assert.equal(r.pid, 42);
  await assert.rejects(incoming.restore('m1'), code('FERRY_E_INPUT_REQUEST'), 'once restored');
  await assert.rejects(
    incoming.receive('m1', 'images', encodeTree([{ root: sent.images, prefix: '' }])),
    code('FERRY_E_INPUT_REQUEST'),
  );
  assert.deepEqual(runc.calls, ['restore c1'], 'runc restored once');
  await incoming.commit('m1');
  await assert.rejects(incoming.commit('m1'), code('FERRY_E_MIGRATION_UNKNOWN'));
});

test('an abort while runc restores waits for the restore, then removes the container it made', async () => {
  await incoming.prepare(request('m1'));
  await receiveBoth('m1');
  let entered!: () => void;
  let release!: () => void;
  const inRunc = new Promise<void>((r) => {
    entered = r;
  });
  const gate = new Promise<void>((r) => {
    release = r;
  });
  const restore = runc.restore.bind(runc);
  runc.restore = async (id, o) => {
    entered();
    await gate;
    return restore(id, o);
  };
  const restoring = incoming.restore('m1');
  await inRunc;
  const aborting = incoming.abort('m1');
  await new Promise((r) => setTimeout(r, 10));
  assert.ok(!runc.calls.includes('destroy c1'), 'nothing removed under a running restore');
  release();
  await assert.rejects(restoring, code('FERRY_E_MIGRATION_UNKNOWN'));
  await aborting;
  assert.deepEqual(runc.calls, ['restore c1', 'destroy c1']);
  assert.equal(runc.states.has('c1'), false);
  assert.ok(!existsSync(containerDir(paths, 'c1')));
  assert.ok(!existsSync(recordFile('m1')));
  assert.equal(incoming.isReserved('c1'), false);
});

test('cold restore: the bundle placed on this host, network attached before, unlocked only at the commit, record written', async () => {
  await incoming.prepare(request('m1'));
  await receiveBoth('m1');
  network.calls = [];
  await incoming.restore('m1', { neighbours: NEIGHBOURS });
  assert.deepEqual(network.calls, ['neighbours c1 1', 'attach c1'], 'locked while it may still be aborted');
  const [o] = runc.restores;
  assert.equal(o?.bundle, bundleDir(paths, 'c1'));
  assert.equal(o?.imagePath, imageDir(paths, 'm1'));
  assert.equal(o?.tcpEstablished, true);
  assert.equal(o?.lazyPages, undefined);
  const config = JSON.parse(readFileSync(join(bundleDir(paths, 'c1'), 'config.json'), 'utf8'));
  assert.equal(config.linux.cgroupsPath, '/t-b/c1');
  assert.deepEqual((await host.readRecord('c1'))?.origin, { kind: 'migration', from: 'a', id: 'm1' });
  assert.equal(JSON.parse(readFileSync(recordFile('m1'), 'utf8')).state, 'restored');
  await incoming.commit('m1');
  assert.deepEqual(network.calls.slice(2), ['unlock c1']);
  assert.equal(incoming.isReserved('c1'), false);
  assert.ok(!existsSync(recordFile('m1')), 'the record goes before the answer');
  // the images go right after the answer, outside the freeze
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(!existsSync(imageDir(paths, 'm1')));
  assert.ok(existsSync(join(containerDir(paths, 'c1'), 'record.json')), 'the container stays');
});

test('post-copy: the daemon starts when the images land, runc restores with lazy pages, the outcome outlives the commit', async () => {
  await incoming.prepare(request('m1', 'c1', { lazy: PAGE_SERVER }));
  await incoming.receive('m1', 'bundle', encodeTree([{ root: sent.bundle, prefix: '' }]));
  assert.equal(daemons.length, 0);
  await incoming.receive('m1', 'images', encodeTree([{ root: sent.images, prefix: '' }]));
  assert.equal(daemons.length, 1, 'started before the restore is asked for');
  assert.deepEqual(daemons[0]?.o, { ...PAGE_SERVER, imagesDir: imageDir(paths, 'm1') });
  await incoming.restore('m1', { neighbours: [], lazy: PAGE_SERVER });
  assert.equal(daemons.length, 1, 'the same daemon serves the restore');
  const [o] = runc.restores;
  assert.equal(o?.lazyPages, true);
  assert.equal(o?.workPath, imageDir(paths, 'm1'), 'runc finds the daemon socket in its work directory');
  await incoming.commit('m1');
  assert.ok(existsSync(imageDir(paths, 'm1')), 'the daemon still reads the images');
  const outcome = incoming.pagesResult('m1');
  daemons[0]?.d.exit(0);
  assert.deepEqual(await outcome, { ok: true, message: 'all pages arrived in 9 ms' });
  // asked again (the first answer lost on its way): the same answer, for a while
  assert.deepEqual(await incoming.pagesResult('m1'), { ok: true, message: 'all pages arrived in 9 ms' });
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(!existsSync(imageDir(paths, 'm1')), 'images removed once the daemon is done');
  assert.ok(!runc.calls.some((c) => c.startsWith('kill')));
});

test('post-copy: a daemon that dies after the commit stops the container; one killed by an abort does not', async () => {
  await incoming.prepare(request('m1', 'c1', { lazy: PAGE_SERVER }));
  await receiveBoth('m1');
  await incoming.restore('m1');
  await incoming.commit('m1');
  daemons[0]?.d.exit(1);
  const r = await incoming.pagesResult('m1');
  assert.equal(r.ok, false);
  assert.match(r.message, /criu lazy-pages on b ended with exit 1/);
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(
    runc.calls.filter((c) => c.startsWith('kill')),
    ['kill c1 KILL'],
  );
  runc.calls = [];
  await incoming.prepare(request('m2', 'c3', { lazy: PAGE_SERVER }));
  await receiveBoth('m2');
  await incoming.abort('m2');
  await new Promise((r) => setTimeout(r, 10));
  assert.ok(!runc.calls.some((c) => c.startsWith('kill')), runc.calls.join(', '));
});

test('post-copy on a host without lazy-pages: the restore fails with FERRY_E_CAPABILITY', async () => {
  incoming = new IncomingMigrations(host, silentLogger());
  await incoming.prepare(request('m1', 'c1', { lazy: PAGE_SERVER }));
  await receiveBoth('m1');
  await assert.rejects(incoming.restore('m1'), code('FERRY_E_CAPABILITY'));
  assert.deepEqual(runc.calls, []);
});

test('recover() on a fresh object drops the uncommitted migrations it finds on disk and keeps committed containers', async () => {
  await incoming.prepare(request('m1', 'kept'));
  await receiveBoth('m1');
  await incoming.restore('m1');
  await incoming.commit('m1');
  await incoming.prepare(request('m2', 'half'));
  await receiveBoth('m2');
  await incoming.prepare(request('m3', 'restored'));
  await receiveBoth('m3');
  await incoming.restore('m3');
  writeFileSync(join(paths.incomingDir, 'm4.json.123.9.tmp'), '{"half');
  runc.calls = [];
  network.calls = [];

  // the agent restarts
  const fresh = newIncoming();
  const aborted = await fresh.recover();
  assert.deepEqual(aborted.sort(), ['m2', 'm3']);
  assert.deepEqual(readdirSync(paths.incomingDir), []);
  assert.deepEqual(readdirSync(paths.imagesDir), []);
  assert.ok(!existsSync(containerDir(paths, 'half')));
  assert.ok(!existsSync(containerDir(paths, 'restored')));
  assert.deepEqual(runc.calls.sort(), ['destroy half', 'destroy restored']);
  // the restored copy is cut off before it dies; the half-received one never had a link up
  assert.deepEqual(network.calls.sort(), ['destroy half', 'destroy restored', 'detach restored']);
  assert.ok(existsSync(join(containerDir(paths, 'kept'), 'record.json')), 'the committed container stays');
  assert.equal(runc.states.has('kept'), true);
  assert.deepEqual(await fresh.recover(), [], 'nothing left the second time');
});

test('a restart never touches a container that took the name of a stale reservation (reservations are by id)', async () => {
  await incoming.prepare(request('m1', 'svc'));
  await receiveBoth('m1');
  await incoming.restore('m1');
  // the copy went away and another container now runs under the name (the record of m1 stayed behind)
  await host.writeRecord({ ...request('x', 'svc').record, origin: { kind: 'run' } });
  runc.states.set('svc', { id: 'svc', pid: 77, status: 'running', bundle: bundleDir(paths, 'svc') });
  writeFileSync(join(containerDir(paths, 'svc'), 'mine'), 'unrelated');
  runc.calls = [];
  network.calls = [];

  const aborted = await newIncoming().recover();
  assert.deepEqual(aborted, ['m1']);
  assert.deepEqual(runc.calls, [], 'the unrelated container is not killed');
  assert.deepEqual(network.calls, [], 'nor its network');
  assert.ok(existsSync(join(containerDir(paths, 'svc'), 'mine')), 'nor its files');
  assert.ok(!existsSync(imageDir(paths, 'm1')), "the stale migration's own files go");
  assert.deepEqual(readdirSync(paths.incomingDir), []);
});

test('status: uncommitted while in flight, committed once a container here came from it, unknown otherwise', async () => {
  assert.equal(await incoming.status('m1'), 'unknown');
  await incoming.prepare(request('m1'));
  assert.equal(await incoming.status('m1'), 'uncommitted');
  await receiveBoth('m1');
  await incoming.restore('m1');
  assert.equal(await incoming.status('m1'), 'uncommitted');
  await incoming.commit('m1');
  assert.equal(await incoming.status('m1'), 'committed');
  assert.equal(await newIncoming().status('m1'), 'committed', 'also after a restart');
  await incoming.prepare(request('m2', 'c2'));
  await incoming.abort('m2');
  assert.equal(await incoming.status('m2'), 'unknown');
});

test('an uncommitted copy is aborted at its commit deadline (the source then thaws its own)', async () => {
  incoming = new IncomingMigrations(host, silentLogger(), { commitDeadlineMs: 50 });
  await incoming.prepare(request('m1'));
  await receiveBoth('m1');
  // the deadline runs from the restore's start: on a busy machine it can end the restore itself, which then fails
  await incoming.restore('m1').catch((err: Error) => assert.match(err.message, /migration m1 was aborted/));
  for (let i = 0; i < 100 && (await incoming.status('m1')) !== 'unknown'; i++)
    await new Promise((r) => setTimeout(r, 10));
  assert.equal(await incoming.status('m1'), 'unknown');
  assert.ok(runc.calls.includes('destroy c1'));
  assert.equal(incoming.isReserved('c1'), false);
});

test('a commit before the deadline keeps the container', async () => {
  // a deadline the restore and the commit meet on a busy machine too, then waited past
  incoming = new IncomingMigrations(host, silentLogger(), { commitDeadlineMs: 1000 });
  await incoming.prepare(request('m1'));
  await receiveBoth('m1');
  await incoming.restore('m1');
  await incoming.commit('m1');
  await new Promise((r) => setTimeout(r, 1100));
  assert.equal(await incoming.status('m1'), 'committed');
  assert.ok(!runc.calls.includes('destroy c1'));
});

test('an abort after the commit is refused: the source must not thaw a container that runs here', async () => {
  await incoming.prepare(request('m1'));
  await receiveBoth('m1');
  await incoming.restore('m1');
  await incoming.commit('m1');
  await assert.rejects(incoming.abort('m1'), /is committed: it cannot be aborted/);
  assert.ok(!runc.calls.includes('destroy c1'));
  await incoming.abort('m-never-seen');
});

/** Cold's page server as the destination sees it: listens on its port for real (prepare waits for that). */
function pageServerIncoming(opts: { lifetimeMs?: number } = {}) {
  const fence: string[] = [];
  const servers: { o: { port: number; imagesDir: string }; exit: (code: number) => void; killed: boolean }[] =
    [];
  const m = new IncomingMigrations(host, silentLogger(), {
    ...(opts.lifetimeMs !== undefined ? { pageServerLifetimeMs: opts.lifetimeMs } : {}),
    pageServer: {
      start: (o) => {
        const srv = createServer().listen(o.port, '127.0.0.1');
        let end!: (r: ExecResult) => void;
        const done = new Promise<ExecResult>((r) => {
          end = (r2) => {
            srv.close();
            r(r2);
          };
        });
        const rec = {
          o,
          killed: false,
          exit: (code: number) =>
            end({ argv: ['criu'], code, signal: null, stdout: '', stderr: 'gone', ms: 1 }),
        };
        servers.push(rec);
        return {
          pid: process.pid, // (this process listens for it: the prepare finds the socket among its fds)
          status: Promise.resolve(),
          done,
          kill: () => {
            rec.killed = true;
            end({ argv: ['criu'], code: null, signal: 'SIGKILL', stdout: '', stderr: '', ms: 1 });
          },
        };
      },
      fence: {
        open: async (port, from, id) => void fence.push(`open ${port} ${from} ${id}`),
        close: async (port, from, id) => void fence.push(`close ${port} ${from} ${id}`),
      },
    },
  });
  return { m, fence, servers };
}

const psPort = () => PAGE_SERVER_PORT_BASE + Math.floor(Math.random() * PAGE_SERVER_PORT_SPAN);

test('cold with a page server: prepare starts it fenced to the source, the restore waits for its clean exit', async () => {
  const { m, fence, servers } = pageServerIncoming();
  const port = psPort();
  await m.prepare(request('m1', 'c1', { pages: { port } }));
  assert.deepEqual(servers[0]?.o, { port, imagesDir: imageDir(paths, 'm1') });
  assert.deepEqual(fence, [`open ${port} a m1`]);
  await m.receive('m1', 'bundle', encodeTree([{ root: sent.bundle, prefix: '' }]));
  await m.receive('m1', 'images', encodeTree([{ root: sent.images, prefix: '' }]));
  servers[0]!.exit(0); // the source's dump closed its connection
  await m.restore('m1', { neighbours: [] });
  assert.deepEqual(runc.calls, ['restore c1']);
  assert.deepEqual(fence, [`open ${port} a m1`, `close ${port} a m1`]);
  await m.commit('m1');
});

test('cold with a page server that failed: no restore, FERRY_E_TRANSFER_FAILED; an abort kills a running one', async () => {
  const { m, fence, servers } = pageServerIncoming();
  const port = psPort();
  await m.prepare(request('m1', 'c1', { pages: { port } }));
  await m.receive('m1', 'bundle', encodeTree([{ root: sent.bundle, prefix: '' }]));
  await m.receive('m1', 'images', encodeTree([{ root: sent.images, prefix: '' }]));
  servers[0]!.exit(1);
  await assert.rejects(m.restore('m1', { neighbours: [] }), code('FERRY_E_TRANSFER_FAILED'));
  assert.ok(!runc.calls.includes('restore c1'));
  await m.abort('m1');
  const other = psPort();
  await m.prepare(request('m2', 'c2', { pages: { port: other } }));
  await m.abort('m2');
  assert.equal(servers[1]?.killed, true);
  assert.deepEqual(fence.slice(-2), [`open ${other} a m2`, `close ${other} a m2`]);
});

test('cold with a page server whose restore never comes: aborted at its lifetime, page server and fence gone', async () => {
  const { m, fence, servers } = pageServerIncoming({ lifetimeMs: 50 });
  const port = psPort();
  await m.prepare(request('m1', 'c1', { pages: { port } }));
  while (m.isReserved('c1')) await new Promise((r) => setTimeout(r, 10));
  assert.equal(servers[0]?.killed, true);
  assert.deepEqual(fence, [`open ${port} a m1`, `close ${port} a m1`]);
  assert.equal(await m.status('m1'), 'unknown');
  // one whose restore was asked in time is the commit deadline's from then on
  const { m: m2, servers: s2 } = pageServerIncoming({ lifetimeMs: 50 });
  await m2.prepare(request('m2', 'c2', { pages: { port: psPort() } }));
  await m2.receive('m2', 'bundle', encodeTree([{ root: sent.bundle, prefix: '' }]));
  await m2.receive('m2', 'images', encodeTree([{ root: sent.images, prefix: '' }]));
  s2[0]!.exit(0);
  await m2.restore('m2', { neighbours: [] });
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(m2.isReserved('c2'), true, 'not aborted by the lifetime');
  await m2.commit('m2');
});

test('cold with a page server on a host that runs none: the prepare is refused, nothing stays', async () => {
  await assert.rejects(
    incoming.prepare(request('m1', 'c1', { pages: { port: psPort() } })),
    code('FERRY_E_CAPABILITY'),
  );
  assert.equal(incoming.isReserved('c1'), false);
  assert.ok(!existsSync(imageDir(paths, 'm1')));
});
