// The engine's loop and rollback, with a fake runc and a fake destination (no processes, no network).
import assert from 'node:assert/strict';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterEach, beforeEach, test } from 'node:test';
import { FerryError } from '../core/errors.ts';
import { silentLogger } from '../core/log.ts';
import { ContainerHost } from '../host/containers.ts';
import { bundleDir, hostPaths } from '../host/paths.ts';
import type { NetworkLike } from '../network/identity.ts';
import type { Neighbour } from '../network/ip.ts';
import type {
  CheckpointOptions,
  LazyCheckpointOptions,
  LazyDump,
  RestoreOptions,
  RuncContainerState,
  RuncLike,
} from '../runtime/runc.ts';
import { decodeTree } from '../transport/image-stream/index.ts';
import { type FileRange, writeRange } from '../transport/ranges.ts';
import { assessStrategies, type HostFacts } from './capabilities.ts';
import { MigrationJournal, type SourceJournalEntry } from './journal.ts';
import { MigrationSource } from './source.ts';
import { SourceRecovery } from './source-recovery.ts';
import type {
  CapabilitiesReport,
  DestinationPeer,
  IncomingRequest,
  MigrationEvent,
  RestoreOptions as PeerRestoreOptions,
  RestoreResult,
} from './types.ts';

const STATS = new URL('../images/fixtures/stats-dump', import.meta.url).pathname;

class FakeRunc implements RuncLike {
  readonly root = '/fake';
  states = new Map<string, RuncContainerState>();
  calls: string[] = [];
  failCheckpoint = false;
  failRestore = false;
  async run(id: string) {
    this.states.set(id, { id, pid: 100, status: 'running', bundle: '' });
  }
  async state(id: string) {
    return this.states.get(id);
  }
  async list() {
    return [...this.states.values()];
  }
  async kill() {}
  async delete(id: string) {
    this.calls.push(`delete ${id}`);
  }
  async pause(id: string) {
    this.calls.push(`pause ${id}`);
    const st = this.states.get(id);
    if (st) st.status = 'paused';
  }
  async resume(id: string) {
    this.calls.push(`resume ${id}`);
    const st = this.states.get(id);
    if (st) st.status = 'running';
  }
  async destroy(id: string) {
    this.calls.push(`destroy ${id}`);
    this.states.delete(id);
  }
  lazy: LazyCheckpointOptions[] = [];
  checkpointLazy(id: string, o: LazyCheckpointOptions): LazyDump {
    this.calls.push(`checkpoint-lazy ${id}`);
    this.lazy.push(o);
    writeFileSync(join(o.imagePath, 'pagemap-1.img'), 'x');
    // CRIU seizes the tasks and serves their pages until the destination has them all
    return {
      ready: Promise.resolve(),
      done: Promise.resolve({ argv: [], code: 0, signal: null, stdout: '', stderr: '', ms: 1 }),
      kill: () => {},
    };
  }
  checkpoints: CheckpointOptions[] = [];
  /** Sizes of the page images successive pre-dump rounds write. */
  preDumpSizes: number[] = [];
  /** What the container did to its rootfs up to the final dump (after the bundle was pre-staged). */
  onFinalDump?: () => void;
  async checkpoint(id: string, o: CheckpointOptions) {
    this.calls.push(`checkpoint ${id}`);
    this.checkpoints.push(o);
    if (this.failCheckpoint)
      throw new FerryError('FERRY_E_CHECKPOINT_FAILED', 'criu said no', { phase: 'checkpoint' });
    if (o.preDump) {
      // memory only; the container keeps running
      writeFileSync(join(o.imagePath, 'pages-1.img'), Buffer.alloc(this.preDumpSizes.shift() ?? 4096, 1));
      return { ms: 5 };
    }
    writeFileSync(join(o.imagePath, 'pages-1.img'), Buffer.alloc(8192, 7));
    // a content-delta round dumps into round-N; the final dump leaves the frozen container running too
    const round = /round-\d+$/.test(o.imagePath);
    if (!round) this.onFinalDump?.();
    copyFileSync(STATS, join(o.imagePath, 'stats-dump'));
    writeFileSync(join(o.imagePath, 'dump.log'), 'log');
    if (!o.leaveRunning) this.states.delete(id);
    return { ms: 5 };
  }
  async restore(id: string, _o: RestoreOptions) {
    this.calls.push(`restore ${id}`);
    if (this.failRestore)
      throw new FerryError('FERRY_E_RESTORE_FAILED', 'local restore broke', { phase: 'restore' });
    this.states.set(id, { id, pid: 101, status: 'running', bundle: '' });
    return { ms: 5 };
  }
}

class FakeNetwork implements NetworkLike {
  calls: string[] = [];
  netnsPath(name: string) {
    return `/run/netns/fake-${name}`;
  }
  async create(name: string) {
    this.calls.push(`create ${name}`);
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
  async quiesce(name: string) {
    this.calls.push(`quiesce ${name}`);
  }
  reannounce(name: string) {
    this.calls.push(`reannounce ${name}`);
  }
  async neighbours(): Promise<Neighbour[]> {
    return [{ address: '10.0.0.100', mac: '02:00:00:00:00:01' }];
  }
  async setNeighbours() {}
  async clearCriuLocks(name: string) {
    this.calls.push(`clear-locks ${name}`);
  }
  async silence(name: string) {
    this.calls.push(`silence ${name}`);
  }
  async unsilence(name: string) {
    this.calls.push(`unsilence ${name}`);
  }
  async destroy(name: string) {
    this.calls.push(`destroy ${name}`);
  }
}

class FakePeer implements DestinationPeer {
  readonly name = 'b';
  readonly endpoint = { name: 'b', address: '10.0.0.2', port: 7470 };
  calls: string[] = [];
  received: string;
  fail: Partial<
    Record<'prepare' | 'send' | 'restore' | 'commit' | 'abort' | 'capabilities' | 'status', Error>
  > = {};
  /** What status() answers (when it does not fail). */
  state: 'committed' | 'uncommitted' | 'unknown' = 'uncommitted';
  strategies = caps().strategies;
  constructor(dir: string) {
    this.received = dir;
  }
  private check(what: keyof FakePeer['fail']) {
    this.calls.push(what);
    const f = this.fail[what];
    if (f) throw f;
  }
  async capabilities(): Promise<CapabilitiesReport> {
    this.check('capabilities');
    return { ...caps(), strategies: this.strategies };
  }
  /** How often the destination was asked whether it lists the container. */
  asked = 0;
  async hasContainer() {
    this.asked++;
    return this.calls.includes('restore') && !this.fail.restore;
  }
  /** The pid the restore answers with (0: an answer without one). */
  restoredPid = 5;
  prepared: Neighbour[] = [];
  async prepare(r: IncomingRequest) {
    this.check('prepare');
    this.prepared = r.neighbours ?? [];
  }
  private sends = 0;
  async send(_id: string, part: 'bundle' | 'images', body: Readable, opts?: { update?: boolean }) {
    // the first send is the bundle at prepare; `fail.send` is about the transfer
    if (this.sends++ === 0) this.calls.push('send');
    else this.check('send');
    const s = await decodeTree(body, join(this.received, part), { allowRemove: opts?.update === true });
    return { bytes: s.bytes };
  }
  neighbours: Neighbour[] = [];
  async restore(_id: string, opts: PeerRestoreOptions): Promise<RestoreResult> {
    this.neighbours = opts.neighbours;
    this.check('restore');
    return { pid: this.restoredPid, ms: 3 };
  }
  async commit() {
    this.check('commit');
  }
  async sendRange(_id: string, r: FileRange, body: Readable, opts?: { sparse?: boolean }) {
    // (the destination made its image directory at prepare)
    mkdirSync(join(this.received, 'images'), { recursive: true });
    return writeRange(join(this.received, 'images'), r, body, opts);
  }
  async sendBlocks(_id: string, body: Readable) {
    for await (const _ of body) {
      // drained
    }
    return { pages: 0, added: 0 };
  }
  async measureRate() {
    return 1e9;
  }
  async pagesResult() {
    return { ok: true, message: '' };
  }
  async abort() {
    this.check('abort');
  }
  async status() {
    this.check('status');
    return this.state;
  }
}

function caps(softDirty = false): CapabilitiesReport {
  const facts: HostFacts = {
    host: 'x',
    kernel: '6.18',
    criuVersion: '4.2.1',
    runcVersion: '1.1.5',
    criuCheck: { ok: true, message: 'Looks good.' },
    features: { uffd: { ok: true, message: '' }, mem_dirty_track: { ok: softDirty, message: '' } },
    pipeMaxSize: 4 << 20,
    root: true,
  };
  return { facts, strategies: assessStrategies(facts) };
}

let dir: string;
let runc: FakeRunc;
let peer: FakePeer;
let host: ContainerHost;
let network: FakeNetwork;
let engine: MigrationSource;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ferry-src-'));
  runc = new FakeRunc();
  const paths = hostPaths(join(dir, 'a'));
  network = new FakeNetwork();
  host = new ContainerHost({
    hostName: 'a',
    paths,
    runc,
    cgroupParent: '/t-a',
    network,
    log: silentLogger(),
  });
  await host.init();
  const b = bundleDir(paths, 'c1');
  mkdirSync(join(b, 'rootfs', 'data'), { recursive: true });
  writeFileSync(
    join(b, 'config.json'),
    JSON.stringify({ root: { path: 'rootfs' }, process: { args: ['x'] } }),
  );
  writeFileSync(join(b, 'rootfs', 'data', 'f'), 'hello');
  writeFileSync(join(b, 'rootfs', 'data', 'gone'), 'deleted before the dump');
  runc.onFinalDump = () => {
    writeFileSync(join(b, 'rootfs', 'data', 'f'), 'written after the bundle went');
    writeFileSync(join(b, 'rootfs', 'data', 'new'), 'n');
    rmSync(join(b, 'rootfs', 'data', 'gone'));
  };
  await host.writeRecord({
    name: 'c1',
    createdAt: 'now',
    net: 'own',
    ip: '10.0.0.5',
    mac: '02:fc:0a:00:00:05',
    origin: { kind: 'run' },
  });
  await runc.run('c1');
  peer = new FakePeer(join(dir, 'peer'));
  engine = new MigrationSource({
    host,
    log: silentLogger(),
    capabilities: async () => caps(),
    statusRetryMs: 10,
  });
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

const migrate = (events: MigrationEvent[] = []) =>
  engine.migrate({ name: 'c1', to: 'b', strategy: 'cold' }, peer, (e) => events.push(e));

test('the confirm takes the restore answer: the destination is not asked again whether it runs the container', async () => {
  const r = await migrate();
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(peer.asked, 1, 'asked once, at plan (the name must be free there)');
});

test('a restore answer without a pid: the confirm asks the destination', async () => {
  peer.restoredPid = 0;
  const r = await migrate();
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(peer.asked, 2);
});

test('success: every phase in order, bundle and images sent (logs excluded), source forgotten after commit', async () => {
  const events: MigrationEvent[] = [];
  const r = await migrate(events);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual(
    r.phases.map((p) => p.name),
    ['plan', 'prepare', 'checkpoint', 'transfer', 'restore', 'confirm', 'cleanup'],
  );
  // the bundle before the freeze, then (with the images) only what changed in it
  assert.deepEqual(peer.calls, ['capabilities', 'prepare', 'send', 'send', 'send', 'restore', 'commit']);
  const got = join(peer.received, 'bundle', 'rootfs', 'data');
  assert.equal(readFileSync(join(got, 'f'), 'utf8'), 'written after the bundle went');
  assert.ok(existsSync(join(got, 'new')));
  assert.ok(!existsSync(join(got, 'gone')), 'a file deleted since is deleted there too');
  assert.ok(existsSync(join(peer.received, 'bundle', 'config.json')));
  assert.ok((r.bundlePrestagedBytes ?? 0) > 0);
  assert.ok(existsSync(join(peer.received, 'images', 'pages-1.img')));
  assert.ok(!existsSync(join(peer.received, 'images', 'dump.log')), 'CRIU logs stay home');
  assert.ok((r.criu.dump?.frozenTimeUs ?? 0) > 0);
  assert.ok(r.bytesSent >= 8192);
  assert.equal(await host.readRecord('c1'), undefined);
  assert.deepEqual(readdirSync(host.paths.imagesDir), []);
  assert.ok(events.some((e) => e.type === 'progress'));
  assert.deepEqual(
    network.calls,
    ['quiesce c1', 'detach c1', 'silence c1', 'destroy c1', 'unsilence c1'],
    'source cut off after the dump; its frozen copy killed silenced, after the commit',
  );
  assert.deepEqual(
    peer.prepared,
    [{ address: '10.0.0.100', mac: '02:00:00:00:00:01' }],
    'the ARP cache is staged with the identity, before the freeze',
  );
});

for (const failing of ['send', 'restore', 'commit'] as const) {
  const phase = { send: 'transfer', restore: 'restore', commit: 'confirm' }[failing];
  test(`${failing} fails: destination aborted first, then the frozen source thawed (phase ${phase})`, async () => {
    peer.fail[failing] = new FerryError('FERRY_E_HOST_UNREACHABLE', 'peer went away');
    const r = await migrate();
    assert.equal(r.ok, false);
    assert.equal(r.error?.phase, phase);
    assert.match(
      r.error?.message ?? '',
      new RegExp(`failed in phase ${phase}: peer went away; rolled back: c1 is running on a`),
    );
    assert.equal(r.rollback?.sourceRunning, true);
    assert.equal(r.rollback?.destinationCleaned, true);
    assert.ok(peer.calls.includes('abort'));
    // the dump left it frozen: a thaw, never a CRIU restore of the images just written
    assert.deepEqual(runc.calls, ['pause c1', 'checkpoint c1', 'resume c1']);
    assert.ok(peer.calls.indexOf('abort') < peer.calls.length, 'aborted');
    assert.deepEqual(
      network.calls,
      ['quiesce c1', 'detach c1', 'attach c1', 'unlock c1', 'reannounce c1'],
      're-attached',
    );
    assert.equal(r.rollback?.action, 'thawed');
    assert.equal((await runc.state('c1'))?.status, 'running');
    assert.ok(await host.readRecord('c1'), 'the source keeps its record and bundle');
    assert.deepEqual(readdirSync(host.paths.imagesDir), []);
  });
}

/** A destination that holds the container's packets through the switchover (decision 11). */
class HoldingPeer extends FakePeer {
  async hold() {
    this.calls.push('hold');
  }
  async announce() {
    this.calls.push('announce');
  }
}

test('held switchover: the hold is primed before the freeze, the address announced there once the lock landed', async () => {
  const holding = new HoldingPeer(join(dir, 'peer'));
  peer = holding;
  const r = await migrate();
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual(holding.calls.slice(0, 5), ['capabilities', 'prepare', 'send', 'hold', 'announce']);
  assert.ok(network.calls.indexOf('quiesce c1') >= 0);
});

test('held switchover: a dump that fails after the announcement aborts the destination and announces the source again', async () => {
  peer = new HoldingPeer(join(dir, 'peer'));
  runc.failCheckpoint = true;
  const r = await migrate();
  assert.equal(r.error?.phase, 'checkpoint');
  assert.ok(peer.calls.includes('announce') && peer.calls.includes('abort'));
  assert.equal(r.rollback?.sourceRunning, true);
  // never detached, yet the LAN was told the address lives on the destination: the thaw tells it otherwise
  assert.ok(network.calls.includes('reannounce c1'), network.calls.join(', '));
});

test('checkpoint fails with the container still running: nothing to restore, destination aborted', async () => {
  runc.failCheckpoint = true;
  const r = await migrate();
  assert.equal(r.error?.code, 'FERRY_E_CHECKPOINT_FAILED');
  assert.equal(r.error?.phase, 'checkpoint');
  assert.ok(!runc.calls.includes('restore c1'));
  assert.ok(runc.calls.includes('resume c1'), 'the container we paused for the dump is resumed');
  assert.equal((await runc.state('c1'))?.status, 'running');
  assert.ok(peer.calls.includes('abort'));
  assert.equal(r.rollback?.sourceRunning, true);
});

test('an impossible plan touches nothing', async () => {
  peer.strategies = { ...peer.strategies, cold: { ok: false, why: 'no criu' } };
  const r = await migrate();
  assert.equal(r.error?.code, 'FERRY_E_PLAN_STRATEGY');
  assert.equal(r.error?.phase, 'plan');
  assert.deepEqual(peer.calls, ['capabilities']);
  assert.deepEqual(runc.calls, []);
  assert.equal(r.rollback, undefined);
});

test('--skip-in-flight lifts the refusal of TCP connections not yet accepted, and the dump is told to drop them', async () => {
  const found = [
    {
      pid: 7,
      comm: 'srv',
      limit: 'its listening TCP socket 0.0.0.0:80 has 1 connection(s) not yet accepted',
      rule: 'tcp-in-flight' as const,
    },
  ];
  const scanned = new ContainerHost({
    hostName: 'a',
    paths: host.paths,
    runc,
    cgroupParent: '/t-a',
    network,
    log: silentLogger(),
    unmovable: async () => found,
  });
  const e = new MigrationSource({
    host: scanned,
    log: silentLogger(),
    capabilities: async () => caps(),
    statusRetryMs: 10,
  });
  const refused = await e.migrate({ name: 'c1', to: 'b', strategy: 'cold' }, peer, () => {});
  assert.equal(refused.error?.code, 'FERRY_E_CONTAINER_UNMOVABLE');
  assert.equal(runc.checkpoints.length, 0, 'nothing dumped');
  const r = await e.migrate({ name: 'c1', to: 'b', strategy: 'cold', skipInFlight: true }, peer, () => {});
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(runc.checkpoints.at(-1)?.skipInFlight, true);
});

test('destination unreachable after the restore was asked: the source waits out its commit deadline, then thaws', async () => {
  engine = new MigrationSource({
    host,
    log: silentLogger(),
    capabilities: async () => caps(),
    deadlines: { commitMs: 300 },
  });
  peer.fail.restore = new FerryError('FERRY_E_HOST_UNREACHABLE', 'gone');
  peer.fail.abort = new FerryError('FERRY_E_HOST_UNREACHABLE', 'gone');
  const t0 = Date.now();
  const r = await migrate();
  assert.ok(Date.now() - t0 >= 300, 'not thawed before the destination dropped its copy');
  assert.equal(r.rollback?.sourceRunning, true);
  assert.equal(r.rollback?.destinationCleaned, false);
  assert.match(r.rollback?.note ?? '', /waited for b's commit deadline before thawing/);
});

test('destination refusing connections after the restore was asked: its agent is gone, the source thaws without the commit deadline', async () => {
  engine = new MigrationSource({
    host,
    log: silentLogger(),
    capabilities: async () => caps(),
    deadlines: { commitMs: 60_000 },
  });
  const refusal = () =>
    new FerryError('FERRY_E_HOST_UNREACHABLE', 'host b unreachable: ECONNREFUSED', {
      cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }),
    });
  peer.fail.restore = refusal();
  peer.fail.abort = refusal();
  const t0 = Date.now();
  const r = await migrate();
  assert.ok(Date.now() - t0 < 30_000, 'thawed long before the commit deadline');
  assert.equal(r.error?.phase, 'restore');
  assert.equal(r.rollback?.sourceRunning, true);
  assert.match(r.rollback?.note ?? '', /b refused connections for 3 s: its agent is gone/);
});

test('the destination stops answering in the transfer: the source thaws without asking it again; the abort follows in the background', async () => {
  peer.fail.send = new FerryError('FERRY_E_PEER_TIMEOUT', 'host b stopped answering');
  const r = await migrate();
  assert.equal(r.error?.code, 'FERRY_E_PEER_TIMEOUT');
  assert.equal(r.error?.phase, 'transfer');
  assert.equal(r.rollback?.sourceRunning, true);
  assert.equal(r.rollback?.destinationCleaned, false);
  assert.match(r.rollback?.note ?? '', /destination b not cleaned: it stopped answering/);
  assert.ok(!peer.calls.includes('abort'), 'a silent peer is not asked (and waited for) before the thaw');
  assert.equal((await runc.state('c1'))?.status, 'running');
  for (let i = 0; i < 200 && !peer.calls.includes('abort'); i++)
    await new Promise((res) => setTimeout(res, 10));
  assert.ok(peer.calls.includes('abort'), 'asked in the background');
});

test('the commit answer is lost but the destination committed: a success, the frozen copy is killed', async () => {
  peer.fail.commit = new FerryError('FERRY_E_HOST_UNREACHABLE', 'answer lost');
  peer.state = 'committed';
  const r = await migrate();
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.ok(runc.calls.includes('destroy c1'));
  assert.ok(!runc.calls.includes('resume c1'), 'never resumed: it runs on b');
  assert.equal(await host.readRecord('c1'), undefined);
});

test('the commit answer is lost and the destination says it did not commit: aborted, then thawed', async () => {
  peer.fail.commit = new FerryError('FERRY_E_HOST_UNREACHABLE', 'answer lost');
  peer.state = 'unknown';
  const r = await migrate();
  assert.equal(r.ok, false);
  assert.equal(r.rollback?.action, 'thawed');
  assert.equal((await runc.state('c1'))?.status, 'running');
});

test('the commit is in doubt (the destination cannot be asked): the source copy stays frozen, never resumed blindly', async () => {
  peer.fail.commit = new FerryError('FERRY_E_HOST_UNREACHABLE', 'gone');
  peer.fail.status = new FerryError('FERRY_E_HOST_UNREACHABLE', 'gone');
  const r = await migrate();
  assert.equal(r.ok, false);
  assert.equal(r.rollback?.action, 'in-doubt');
  assert.equal(r.rollback?.sourceRunning, false);
  assert.match(r.error?.message ?? '', /IN DOUBT: b may have committed c1/);
  assert.equal((await runc.state('c1'))?.status, 'paused');
  assert.ok(!peer.calls.includes('abort'), 'an abort could not undo a commit that landed');
});

test('the frozen tasks died before the rollback: FERRY_E_ROLLBACK_FAILED, no CRIU restore attempted, images kept', async () => {
  peer.fail.restore = new FerryError('FERRY_E_RESTORE_FAILED', 'dest broke');
  const restore = peer.restore.bind(peer);
  peer.restore = async (id, o) => {
    runc.states.delete('c1'); // killed from outside meanwhile
    return restore(id, o);
  };
  const r = await migrate();
  assert.equal(r.error?.code, 'FERRY_E_ROLLBACK_FAILED');
  assert.match(r.error?.message ?? '', /ROLLBACK FAILED: .*nothing to thaw: c1 is gone/);
  assert.ok(!runc.calls.includes('restore c1'));
});

test('the report says how much memory the frozen source held until the commit', async () => {
  host.memoryBytes = async () => 123 << 20;
  const r = await migrate();
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(r.sourceHeldBytes, 123 << 20);
});

test("a rolled-back migration's report says it too, read beside the freeze however slowly", async () => {
  // the reading ends after the rollback: the report still waits for it (what the thaw-rollback kept frozen)
  host.memoryBytes = () => new Promise((r) => setTimeout(() => r(77 << 20), 50));
  peer.fail.restore = new FerryError('FERRY_E_RESTORE_FAILED', 'dest broke');
  const r = await migrate();
  assert.equal(r.ok, false);
  assert.equal(r.rollback?.action, 'thawed');
  assert.equal(r.sourceHeldBytes, 77 << 20);
});

test('a second migration of the same container while one runs is refused as busy', async () => {
  let release!: () => void;
  peer.restore = () => {
    peer.calls.push('restore');
    return new Promise((res) => {
      release = () => res({ pid: 1, ms: 1 });
    });
  };
  const first = migrate();
  for (let i = 0; i < 500 && !peer.calls.includes('restore'); i++)
    await new Promise((r) => setTimeout(r, 10));
  const second = await migrate();
  assert.equal(second.error?.code, 'FERRY_E_CONTAINER_BUSY');
  release();
  assert.equal((await first).ok, true);
});

test('pre-copy with soft-dirty (not this kernel): chained pre-dump rounds, streamed, then a final dump on the last', async () => {
  engine = new MigrationSource({ host, log: silentLogger(), capabilities: async () => caps(true) });
  runc.preDumpSizes = [40960, 20480, 4096];
  const events: MigrationEvent[] = [];
  const r = await engine.migrate(
    { name: 'c1', to: 'b', strategy: 'precopy', thresholdBytes: 5000, maxRounds: 5 },
    peer,
    (e) => events.push(e),
  );
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual(
    runc.checkpoints.map((c) => [
      c.preDump === true,
      c.parentPath ?? null,
      c.tcpEstablished === true,
      c.leaveRunning === true,
    ]),
    [
      [true, null, false, false],
      [true, '../round-1', false, false],
      [true, '../round-2', false, false],
      [false, 'round-3', true, true],
    ],
    'three rounds chained, then the final dump on the last one',
  );
  assert.deepEqual(r.precopy?.roundBytes, [40960, 20480, 4096]);
  assert.match(r.precopy?.stop ?? '', /round 3/);
  assert.ok(
    existsSync(join(peer.received, 'images', 'round-1', 'pages-1.img')),
    'each round went to the destination',
  );
  assert.ok(existsSync(join(peer.received, 'images', 'round-3', 'pages-1.img')));
  assert.deepEqual(
    r.phases.map((p) => p.name),
    ['plan', 'prepare', 'rounds', 'checkpoint', 'transfer', 'restore', 'confirm', 'cleanup'],
  );
});

test('pre-copy without soft-dirty (this kernel): content-delta rounds with --leave-running, no parent images', async () => {
  runc.preDumpSizes = [];
  const r = await engine.migrate({ name: 'c1', to: 'b', strategy: 'precopy', maxRounds: 2 }, peer, () => {});
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.ok(runc.checkpoints.every((c) => !c.preDump && !c.parentPath));
  assert.ok(
    runc.checkpoints.slice(0, -1).every((c) => c.leaveRunning),
    'rounds leave the container running',
  );
  assert.equal(runc.checkpoints.at(-1)?.leaveRunning, true, 'the final dump leaves the frozen tasks alive');
});

test('hybrid (soft-dirty kernels): pre-dump rounds, then a lazy final dump on the last round; the destination pulls the rest', async () => {
  const fences: string[] = [];
  engine = new MigrationSource({
    host,
    log: silentLogger(),
    capabilities: async () => caps(true),
    postcopy: {
      pageServerAddress: '10.0.0.1',
      fence: {
        open: async (port, allow) => {
          fences.push(`open ${port} ${allow}`);
        },
        close: async (port, allow) => {
          fences.push(`close ${port} ${allow}`);
        },
      },
      failPageServer: async () => {},
    },
  });
  runc.preDumpSizes = [40960, 2048];
  peer.strategies = caps(true).strategies;
  let lazy: { address: string; port: number } | undefined;
  const restore = peer.restore.bind(peer);
  peer.restore = async (id, opts) => {
    lazy = opts.lazy;
    return restore(id, opts);
  };
  const r = await engine.migrate(
    { name: 'c1', to: 'b', toAddress: '10.0.0.2', strategy: 'hybrid', thresholdBytes: 4096 },
    peer,
    () => {},
  );
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual(
    runc.checkpoints.map((c) => [c.preDump === true, c.parentPath ?? null]),
    [
      [true, null],
      [true, '../round-1'],
    ],
  );
  assert.equal(runc.lazy.length, 1);
  assert.equal(runc.lazy[0]?.parentPath, 'round-2', 'the lazy dump leaves out what the rounds hold');
  assert.match(runc.lazy[0]?.pageServer ?? '', /^10\.0\.0\.1:\d+$/);
  assert.equal(lazy?.address, '10.0.0.1');
  assert.deepEqual(
    fences.map((f) => f.split(' ')[0]),
    ['open', 'close'],
    'the page server is fenced to the destination for the whole transfer',
  );
  assert.ok(fences.every((f) => f.endsWith(' 10.0.0.2')));
  assert.ok(r.phases.some((p) => p.name === 'pages'));
  assert.ok(r.postcopy);
});

// ---- the journal and the settling of interrupted migrations ----

class StepLog extends MigrationJournal {
  steps: string[] = [];
  override async write(e: Omit<SourceJournalEntry, 'updatedAt'>) {
    this.steps.push(e.step);
    return super.write(e);
  }
}

function journaled(extra: Partial<ConstructorParameters<typeof MigrationSource>[0]> = {}) {
  const jdir = join(dir, 'journal');
  mkdirSync(jdir, { recursive: true });
  const journal = new StepLog(jdir);
  engine = new MigrationSource({
    host,
    log: silentLogger(),
    capabilities: async () => caps(),
    journal,
    ...extra,
  });
  return { journal, jdir };
}

test('journal: every step is written before its side effects, and the entry goes once the migration is settled', async () => {
  const { journal, jdir } = journaled();
  const prepare = peer.prepare.bind(peer);
  let atPrepare: string | undefined;
  peer.prepare = async (r) => {
    atPrepare = journal.steps.at(-1);
    return prepare(r);
  };
  const r = await migrate();
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(atPrepare, 'prepared', 'journaled before the destination reserved anything');
  assert.deepEqual(journal.steps, [
    'planned',
    'prepared',
    'frozen',
    'restore-requested',
    'commit-sent',
    'committed',
  ]);
  assert.deepEqual(readdirSync(jdir), []);
});

test('journal: a rolled-back migration leaves no entry', async () => {
  const { journal, jdir } = journaled();
  peer.fail.restore = new FerryError('FERRY_E_RESTORE_FAILED', 'dest broke');
  await migrate();
  assert.equal(journal.steps.at(-1), 'restore-requested');
  assert.deepEqual(readdirSync(jdir), []);
});

test('journal: an in-doubt migration keeps its entry (at commit-sent) for the background settling', async () => {
  const unsettled: SourceJournalEntry[] = [];
  const { jdir } = journaled({ onUnsettled: (e) => unsettled.push(e) });
  peer.fail.commit = new FerryError('FERRY_E_HOST_UNREACHABLE', 'gone');
  peer.fail.status = new FerryError('FERRY_E_HOST_UNREACHABLE', 'gone');
  await migrate();
  assert.equal(unsettled.length, 1);
  assert.equal(unsettled[0]?.step, 'commit-sent');
  assert.deepEqual(readdirSync(jdir), [`${unsettled[0]?.id}.json`]);
});

function recovery(
  journal: MigrationJournal,
  extra: { commitDeadlineMs?: number; settled?: string[]; log?: string[] } = {},
) {
  return new SourceRecovery({
    host,
    log: silentLogger(),
    journal,
    peerFor: () => peer,
    commitDeadlineMs: extra.commitDeadlineMs ?? 30_000,
    freezeCeilingMs: 1000,
    leftovers: {
      settle: async (text, deadline) => {
        extra.settled?.push(text);
        extra.log?.push(`leftovers ${deadline - Date.now() < 60_000 ? 'soon' : 'late'}`);
        return { killed: 0 };
      },
    },
    failPageServer: async (port) => {
      extra.log?.push(`fail page server ${port}`);
    },
    retryMs: 20,
  });
}

async function leftEntry(
  step: SourceJournalEntry['step'],
  updatedAt = Date.now(),
  extra: Partial<SourceJournalEntry> = {},
) {
  const jdir = join(dir, 'journal');
  mkdirSync(jdir, { recursive: true });
  const journal = new MigrationJournal(jdir, () => updatedAt);
  await journal.write({
    id: 'm0000000000aa',
    role: 'source',
    container: 'c1',
    peer: peer.endpoint,
    step,
    ...extra,
  });
  mkdirSync(join(host.paths.imagesDir, 'm0000000000aa'), { recursive: true });
  return { journal, jdir };
}

test('restart, frozen copy, destination never committed: abort it, then thaw; the dump the dead agent left is waited for', async () => {
  await runc.pause('c1');
  const { journal, jdir } = await leftEntry('restore-requested');
  const settled: string[] = [];
  const rec = recovery(journal, { settled });
  const { done } = await rec.recoverAll();
  assert.ok(rec.settling.has('c1'), 'marked before anything is asked');
  assert.deepEqual(await done, [{ id: 'm0000000000aa', outcome: 'thawed' }]);
  assert.ok(peer.calls.includes('abort'));
  assert.equal((await runc.state('c1'))?.status, 'running');
  assert.deepEqual(network.calls, ['attach c1', 'unlock c1', 'reannounce c1']);
  assert.deepEqual(settled, [join(host.paths.imagesDir, 'm0000000000aa')]);
  assert.deepEqual(readdirSync(jdir), []);
  assert.deepEqual(readdirSync(host.paths.imagesDir), []);
  assert.equal(rec.settling.size, 0);
});

test('restart after the commit was sent, destination committed: the frozen copy is killed, never resumed', async () => {
  await runc.pause('c1');
  peer.state = 'committed';
  const { journal } = await leftEntry('commit-sent');
  const { done } = await recovery(journal).recoverAll();
  assert.deepEqual(await done, [{ id: 'm0000000000aa', outcome: 'finished' }]);
  assert.ok(!runc.calls.includes('resume c1'));
  assert.ok(runc.calls.includes('destroy c1'));
  assert.equal(await host.readRecord('c1'), undefined);
});

test('restart, destination unreachable after the restore was asked: thawed only once its commit deadline passed', async () => {
  await runc.pause('c1');
  peer.fail.status = new FerryError('FERRY_E_HOST_UNREACHABLE', 'gone');
  const t0 = Date.now();
  const { journal } = await leftEntry('restore-requested', t0);
  const { done } = await recovery(journal, { commitDeadlineMs: 200 }).recoverAll();
  assert.deepEqual(await done, [{ id: 'm0000000000aa', outcome: 'thawed' }]);
  assert.ok(Date.now() - t0 >= 200);
  assert.equal((await runc.state('c1'))?.status, 'running');
});

test('restart, destination refusing connections after the restore was asked: thawed after a few seconds, not at its deadline', async () => {
  await runc.pause('c1');
  peer.fail.status = new FerryError('FERRY_E_HOST_UNREACHABLE', 'host b unreachable: ECONNREFUSED', {
    cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }),
  });
  const t0 = Date.now();
  const { journal } = await leftEntry('restore-requested', t0);
  const { done } = await recovery(journal, { commitDeadlineMs: 60_000 }).recoverAll();
  assert.deepEqual(await done, [{ id: 'm0000000000aa', outcome: 'thawed' }]);
  assert.ok(Date.now() - t0 < 30_000, 'long before the commit deadline');
  assert.equal((await runc.state('c1'))?.status, 'running');
});

test('restart, commit sent, destination unreachable: in doubt, asked again until it answers; a migration meanwhile is refused', async () => {
  await runc.pause('c1');
  peer.fail.status = new FerryError('FERRY_E_HOST_UNREACHABLE', 'gone');
  const { journal } = await leftEntry('commit-sent', 0);
  const rec = recovery(journal, { commitDeadlineMs: 0 });
  engine = new MigrationSource({ host, log: silentLogger(), capabilities: async () => caps(), guard: rec });
  const { done } = await rec.recoverAll();
  await new Promise((r) => setTimeout(r, 100));
  assert.equal((await runc.state('c1'))?.status, 'paused', 'never resumed blindly');
  const refused = await migrate();
  assert.equal(refused.error?.code, 'FERRY_E_CONTAINER_BUSY');
  delete peer.fail.status;
  peer.state = 'unknown';
  assert.deepEqual(await done, [{ id: 'm0000000000aa', outcome: 'thawed' }]);
  assert.equal((await runc.state('c1'))?.status, 'running');
});

test('restart before anything was frozen: the destination is aborted, the running container left as it is', async () => {
  const { journal } = await leftEntry('prepared');
  const { done } = await recovery(journal).recoverAll();
  assert.deepEqual(await done, [{ id: 'm0000000000aa', outcome: 'thawed' }]);
  assert.ok(peer.calls.includes('abort'));
  assert.deepEqual(network.calls, [], 'its network was never touched');
  assert.ok(!runc.calls.includes('resume c1'));
});

// ---- deadlines ----

test('a dump stuck past the freeze ceiling is killed (runc gets the time left) and the container thawed, never left paused', async () => {
  engine = new MigrationSource({
    host,
    log: silentLogger(),
    capabilities: async () => caps(),
    deadlines: { freezeMs: 150 },
  });
  runc.checkpoint = async (_id, o) => {
    assert.ok((o.timeoutMs ?? Infinity) <= 150, `runc is given at most the ceiling (${o.timeoutMs})`);
    await new Promise((r) => setTimeout(r, o.timeoutMs));
    runc.calls.push('checkpoint killed');
    throw new FerryError('FERRY_E_CHECKPOINT_FAILED', 'runc checkpoint: killed by SIGKILL', {
      phase: 'checkpoint',
    });
  };
  const r = await migrate();
  assert.equal(r.error?.phase, 'checkpoint');
  assert.equal(r.rollback?.sourceRunning, true);
  assert.deepEqual(runc.calls.slice(-2), ['checkpoint killed', 'resume c1']);
  assert.equal((await runc.state('c1'))?.status, 'running');
});

test('a restore that does not answer within the freeze ceiling: the destination is aborted and the source thawed', async () => {
  engine = new MigrationSource({
    host,
    log: silentLogger(),
    capabilities: async () => caps(),
    deadlines: { freezeMs: 200 },
  });
  peer.restore = () => new Promise(() => {});
  const t0 = Date.now();
  const r = await migrate();
  assert.ok(Date.now() - t0 < 5000);
  assert.equal(r.error?.phase, 'restore');
  assert.match(r.error?.message ?? '', /phase restore passed its deadline/);
  assert.ok(peer.calls.includes('abort'));
  assert.equal(r.rollback?.sourceRunning, true);
  assert.equal((await runc.state('c1'))?.status, 'running');
});

test('prepare past its deadline rolls back before anything froze', async () => {
  engine = new MigrationSource({
    host,
    log: silentLogger(),
    capabilities: async () => caps(),
    deadlines: { prepareMs: 100 },
  });
  peer.prepare = () => new Promise(() => {});
  const r = await migrate();
  assert.equal(r.error?.phase, 'prepare');
  assert.ok(!runc.calls.includes('pause c1'));
  assert.equal((await runc.state('c1'))?.status, 'running');
});

test('restart, post-copy not committed: the page server the dead agent left is made to fail (CRIU lets the tasks go), then thawed', async () => {
  await runc.pause('c1');
  const log: string[] = [];
  const { journal } = await leftEntry('restore-requested', Date.now(), { pageServerPort: 27042 });
  const { done } = await recovery(journal, { log }).recoverAll();
  assert.deepEqual(await done, [{ id: 'm0000000000aa', outcome: 'thawed' }]);
  assert.deepEqual(log, ['fail page server 27042', 'leftovers soon']);
  assert.ok(peer.calls.includes('abort'));
  assert.equal((await runc.state('c1'))?.status, 'running');
});

test('restart, post-copy committed: the page server is left to serve the last pages before the source copy goes', async () => {
  peer.state = 'committed';
  const log: string[] = [];
  const { journal } = await leftEntry('commit-sent', Date.now(), { pageServerPort: 27042 });
  const { done } = await recovery(journal, { log }).recoverAll();
  assert.deepEqual(await done, [{ id: 'm0000000000aa', outcome: 'finished' }]);
  assert.deepEqual(log, ['leftovers late'], 'waited for, never failed');
  assert.ok(runc.calls.includes('destroy c1'));
});

test('the commit lands although its answer and the first status were lost: the abort is refused, the migration succeeds, the source copy goes', async () => {
  peer.fail.commit = new FerryError('FERRY_E_HOST_UNREACHABLE', 'answer lost');
  // the status answers uncommitted first (the commit is still on its way), then committed
  let asked = 0;
  peer.status = async () => {
    peer.calls.push('status');
    return asked++ === 0 ? 'uncommitted' : 'committed';
  };
  peer.fail.abort = new FerryError('FERRY_E_INPUT_REQUEST', 'migration is committed: it cannot be aborted');
  const r = await migrate();
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(r.rollback, undefined);
  assert.ok(!runc.calls.includes('resume c1'), 'never thawed');
  assert.ok(runc.calls.includes('destroy c1'));
});
