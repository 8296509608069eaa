// Each strategy's sequence through the engine's loop, against fakes that write one shared log (runc, network,
// destination, post-copy's fence and page server): which calls it makes in which order, and what a failure in
// each phase undoes.
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, test } from 'node:test';
import { createZstdCompress, createZstdDecompress } from 'node:zlib';
import { create, toBinary } from '@bufbuild/protobuf';
import { FerryError } from '../../core/errors.ts';
import { silentLogger } from '../../core/log.ts';
import { ContainerHost, type Unmovable } from '../../host/containers.ts';
import { bundleDir, hostPaths } from '../../host/paths.ts';
import { pagemap_entrySchema, pagemap_headSchema } from '../../images/gen/pagemap_pb.js';
import { IMG_COMMON_MAGIC, MAGIC } from '../../images/image-file.ts';
import type { NetworkLike } from '../../network/identity.ts';
import type { ExecResult } from '../../runtime/exec.ts';
import type {
  CheckpointOptions,
  LazyCheckpointOptions,
  LazyDump,
  RuncContainerState,
  RuncLike,
} from '../../runtime/runc.ts';
import { decodeTree } from '../../transport/image-stream/index.ts';
import { type FileRange, writeRange } from '../../transport/ranges.ts';
import { assessStrategies, type HostFacts } from '../capabilities.ts';
import { newProgress } from '../phases.ts';
import { rollback } from '../rollback.ts';
import { MigrationSource } from '../source.ts';
import type {
  CapabilitiesReport,
  DestinationPeer,
  IncomingRequest,
  MigrationReport,
  MigrationRequest,
  RestoreOptions,
  StrategyName,
} from '../types.ts';
import { type ColdDeps, ColdStrategy } from './cold.ts';
import type { PostcopyDeps } from './postcopy.ts';
import { createStrategy } from './registry.ts';
import type { Strategy } from './strategy.ts';

const STATS = new URL('../../images/fixtures/stats-dump', import.meta.url).pathname;
const OK: ExecResult = { argv: [], code: 0, signal: null, stdout: '', stderr: '', ms: 1 };

type Fail = Partial<Record<string, Error>>;

let log: string[];
let fail: Fail;
/** Calls of a failing step that still succeed first. */
let spare: Record<string, number>;

function step(what: string): void {
  log.push(what);
  const f = fail[what];
  if (!f) return;
  if ((spare[what] ?? 0) > 0) spare[what]! -= 1;
  else throw f;
}

/** Pages a fake lazy dump leaves with its page server. */
const LAZY_PAGES = 300;

/** A pagemap image (CRIU's framing: two magics, then length-prefixed messages) with one lazy entry. */
function lazyPagemap(pages: number): Uint8Array {
  const msgs = [
    toBinary(pagemap_headSchema, create(pagemap_headSchema, { pagesId: 1 })),
    toBinary(
      pagemap_entrySchema,
      create(pagemap_entrySchema, {
        vaddr: 0x400000n,
        nrPages: BigInt(pages),
        compatNrPages: pages,
        flags: 2,
      }),
    ),
  ];
  const head = Buffer.alloc(8);
  head.writeUInt32LE(IMG_COMMON_MAGIC, 0);
  head.writeUInt32LE(MAGIC.pagemap, 4);
  const parts: Uint8Array[] = [head];
  for (const m of msgs) {
    const len = Buffer.alloc(4);
    len.writeUInt32LE(m.length, 0);
    parts.push(len, m);
  }
  return Buffer.concat(parts);
}

class LogRunc implements RuncLike {
  readonly root = '/fake';
  states = new Map<string, RuncContainerState>();
  /** Page image sizes of successive pre-dump rounds. */
  preDumpSizes: number[] = [];
  lazyOptions: LazyCheckpointOptions[] = [];
  checkpoints: CheckpointOptions[] = [];
  /** The running lazy dump's end: resolved when the pages are all served, or when the page server fails. */
  private endLazy?: (r: ExecResult) => void;
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
    step('runc.delete');
    this.states.delete(id);
  }
  private set(id: string, status: string) {
    const st = this.states.get(id);
    if (st) st.status = status;
  }
  async pause(id: string) {
    step('runc.pause');
    this.set(id, 'paused');
  }
  async resume(id: string) {
    step('runc.resume');
    this.set(id, 'running');
  }
  async destroy(id: string) {
    this.states.delete(id);
  }
  async checkpoint(id: string, o: CheckpointOptions) {
    // the final dump leaves the frozen container running too (decision 9); rounds dump into round-N
    const round = /round-\d+$/.test(o.imagePath);
    const kind = o.preDump ? 'pre-dump' : round && o.leaveRunning ? 'leave-running' : 'final';
    step(`runc.checkpoint ${kind}${o.parentPath ? ` parent=${o.parentPath}` : ''}`);
    this.checkpoints.push(o);
    // (with a page server the pages are written there, not here)
    if (!o.pageServer)
      writeFileSync(
        join(o.imagePath, 'pages-1.img'),
        Buffer.alloc(o.preDump ? (this.preDumpSizes.shift() ?? 4096) : 8192, 7),
      );
    if (kind === 'final') {
      copyFileSync(STATS, join(o.imagePath, 'stats-dump'));
      if (!o.leaveRunning) this.states.delete(id);
    }
    return { ms: 1 };
  }
  async restore(id: string) {
    step('runc.restore');
    this.states.set(id, { id, pid: 101, status: 'running', bundle: '' });
    return { ms: 1 };
  }
  /** A lazy dump: its pagemap leaves LAZY_PAGES pages with the page server. */
  checkpointLazy(_id: string, o: LazyCheckpointOptions): LazyDump {
    this.lazyOptions.push(o);
    let ready: Promise<void>;
    try {
      step(`runc.checkpoint-lazy${o.parentPath ? ` parent=${o.parentPath}` : ''}`);
      writeFileSync(join(o.imagePath, 'pagemap-1.img'), lazyPagemap(LAZY_PAGES));
      // the pages it cannot leave lazy (a program's written data segment) are in the image directory
      writeFileSync(join(o.imagePath, 'pages-1.img'), Buffer.alloc(8192, 7));
      ready = Promise.resolve();
    } catch (err) {
      ready = Promise.reject(err);
    }
    // CRIU seizes the tasks: runc reports nothing useful until it lets go of them
    const done = new Promise<ExecResult>((res) => {
      this.endLazy = res;
    });
    return {
      ready,
      done,
      kill: () => {
        log.push('lazy.kill');
        this.endLazy?.({ ...OK, code: 1 });
      },
    };
  }
  /** The destination has every page: CRIU ends its page server and the tasks with it. */
  pagesServed(id: string) {
    this.states.delete(id);
    this.endLazy?.(OK);
  }
  /** The page server failed: CRIU lets the tasks go as they were (paused). */
  pageServerFailed(id: string) {
    this.set(id, 'paused');
    this.endLazy?.({ ...OK, code: 1 });
  }
}

class LogNetwork implements NetworkLike {
  netnsPath(name: string) {
    return `/run/netns/fake-${name}`;
  }
  async create() {}
  async attach() {
    step('net.attach');
  }
  async detach() {
    step('net.detach');
  }
  async unlock() {
    step('net.unlock');
  }
  async quiesce() {
    step('net.quiesce');
  }
  reannounce() {
    log.push('net.reannounce');
  }
  async neighbours() {
    return [];
  }
  async setNeighbours() {}
  async clearCriuLocks() {
    step('net.clear-locks');
  }
  async destroy() {
    step('net.destroy');
  }
}

class LogPeer implements DestinationPeer {
  readonly name = 'b';
  strategies = caps(true).strategies;
  prepared?: IncomingRequest;
  restored?: RestoreOptions;
  private restoredOk = false;
  private readonly dir: string;
  private readonly runc: LogRunc;
  constructor(dir: string, runc: LogRunc) {
    this.dir = dir;
    this.runc = runc;
  }
  async capabilities(): Promise<CapabilitiesReport> {
    return { ...caps(true), strategies: this.strategies };
  }
  async hasContainer() {
    return this.restoredOk;
  }
  async prepare(r: IncomingRequest) {
    step(`peer.prepare${r.lazy ? ' lazy' : ''}`);
    this.prepared = r;
  }
  /** What each stream wrote there and, compressed, what crossed the link (zstd for real, as the agent's client). */
  sends: { bytes: number; wireBytes?: number }[] = [];
  async send(
    _id: string,
    part: 'bundle' | 'images',
    body: Readable,
    opts?: { update?: boolean; compress?: boolean },
  ) {
    step(`peer.send ${part}`);
    let wireBytes: number | undefined;
    let stream = body;
    if (opts?.compress) {
      const compressed = Buffer.concat(await body.pipe(createZstdCompress()).toArray());
      wireBytes = compressed.length;
      stream = Readable.from([compressed]).pipe(createZstdDecompress());
    }
    const s = await decodeTree(stream, join(this.dir, part), { allowRemove: opts?.update === true });
    const sent = { bytes: s.bytes, ...(wireBytes !== undefined ? { wireBytes } : {}) };
    this.sends.push(sent);
    return sent;
  }
  async restore(_id: string, opts: RestoreOptions) {
    step(`peer.restore${opts.lazy ? ' lazy' : ''}`);
    this.restored = opts;
    this.restoredOk = true;
    return { pid: 5, ms: 1 };
  }
  async commit() {
    step('peer.commit');
  }
  async sendRange(_id: string, r: FileRange, body: Readable, opts?: { sparse?: boolean }) {
    log.push('peer.send-range');
    mkdirSync(join(this.dir, 'images'), { recursive: true });
    return writeRange(join(this.dir, 'images'), r, body, opts);
  }
  async sendBlocks(_id: string, body: Readable) {
    step('peer.send-blocks');
    for await (const _ of body) {
      // drained
    }
    return { pages: 0, added: 0 };
  }
  async measureRate() {
    return 1e9;
  }
  async pagesResult() {
    step('peer.pages-result');
    this.runc.pagesServed('c1');
    return { ok: true, message: '' };
  }
  async abort() {
    step('peer.abort');
    this.restoredOk = false;
  }
  async status() {
    return 'uncommitted' as const;
  }
}

function caps(softDirty: boolean): CapabilitiesReport {
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
let runc: LogRunc;
let peer: LogPeer;
let host: ContainerHost;

const postcopy = (): PostcopyDeps => ({
  pageServerAddress: '10.0.0.1',
  fence: {
    open: async () => step('fence.open'),
    close: async () => step('fence.close'),
  },
  failPageServer: async () => {
    step('page-server.fail');
    runc.pageServerFailed('c1');
  },
});

/** What the /proc scan finds in c1 (nothing unless a test says so). */
let unmovable: Unmovable[] = [];

beforeEach(async () => {
  unmovable = [];
  log = [];
  fail = {};
  spare = {};
  dir = mkdtempSync(join(tmpdir(), 'ferry-strategies-'));
  runc = new LogRunc();
  const paths = hostPaths(join(dir, 'a'));
  host = new ContainerHost({
    hostName: 'a',
    paths,
    runc,
    cgroupParent: '/t-a',
    network: new LogNetwork(),
    log: silentLogger(),
    unmovable: async () => unmovable,
  });
  await host.init();
  const b = bundleDir(paths, 'c1');
  mkdirSync(join(b, 'rootfs'), { recursive: true });
  writeFileSync(
    join(b, 'config.json'),
    JSON.stringify({ root: { path: 'rootfs' }, process: { args: ['x'] } }),
  );
  await host.writeRecord({
    name: 'c1',
    createdAt: 'now',
    net: 'own',
    ip: '10.0.0.5',
    mac: '02:fc:0a:00:00:05',
    origin: { kind: 'run' },
  });
  await runc.run('c1');
  peer = new LogPeer(join(dir, 'peer'), runc);
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** softDirty: what this host's kernel tracks (decides which pre-copy runs). */
async function migrate(
  strategy: StrategyName,
  over: Partial<MigrationRequest> = {},
  softDirty = true,
  cold?: ColdDeps,
): Promise<MigrationReport> {
  const engine = new MigrationSource({
    host,
    log: silentLogger(),
    ...(cold ? { cold } : {}),
    capabilities: async () => caps(softDirty),
    postcopy: postcopy(),
  });
  return engine.migrate(
    { name: 'c1', to: 'b', toAddress: '10.0.0.2', strategy, compress: 'off', streams: 1, ...over },
    peer,
    () => {},
  );
}

const FREEZE = ['net.quiesce', 'runc.pause'];
const AFTER_TRANSFER = ['peer.commit', 'net.destroy'];

test('cold: prepare stages the bundle, one final dump streamed as CRIU writes it, the rest, restore, commit', async () => {
  const r = await migrate('cold');
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual(log, [
    'peer.prepare',
    'peer.send bundle',
    ...FREEZE,
    'runc.checkpoint final',
    'net.detach',
    // the page images went in ranges while CRIU wrote them (here: all at once, at the end)
    'peer.send-range',
    'peer.send bundle',
    'peer.send images',
    'peer.restore',
    ...AFTER_TRANSFER,
  ]);
  assert.deepEqual(peer.restored, { neighbours: [] });
});

const TLS = { ca: '/pki/ca.crt', cert: '/pki/a.crt', key: '/pki/a.key' };
const COLD: ColdDeps = { tls: TLS, stallMs: 1000, watch: () => ({ stop() {} }), cutDump: async () => {} };

test('cold with a page server: the destination starts one at prepare, the dump sends its pages there over TLS', async () => {
  const r = await migrate('cold', {}, true, COLD);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  const port = peer.prepared?.pages?.port;
  assert.ok(port !== undefined && port >= 27000, 'the page server port goes with prepare');
  const final = runc.checkpoints.find((o) => !o.preDump);
  assert.equal(final?.pageServer, `10.0.0.2:${port}`);
  assert.deepEqual(final?.pageServerTls, TLS);
  assert.ok(!log.includes('peer.send-range'), 'no page image travels in ranges');
  // CRIU's own count of the pages it wrote there counts as sent
  assert.ok(r.bytesSent >= (r.criu.dump?.pagesWritten ?? 0) * 4096);
});

test('cold with a page server whose link stalls: the connection is cut (no kill), a peer timeout in checkpoint, the source thaws', async () => {
  let cut = '';
  const checkpoint = runc.checkpoint.bind(runc);
  runc.checkpoint = async (id, o) => {
    // CRIU's write to the destroyed socket fails: it cleans up after itself and runc reports the failure
    if (cut) throw new Error('runc checkpoint: criu failed: Connection aborted');
    return checkpoint(id, o);
  };
  const r = await migrate('cold', {}, true, {
    ...COLD,
    watch: (_o, onStall) => {
      onStall(); // at once: the link was cut before the dump connected
      return { stop() {} };
    },
    cutDump: async (o) => {
      cut = `${o.address}:${o.port}`;
    },
  });
  assert.equal(r.ok, false);
  assert.equal(r.error?.code, 'FERRY_E_PEER_TIMEOUT');
  assert.equal(r.error?.phase, 'checkpoint');
  assert.match(r.error?.message ?? '', /made no progress for 1000 ms/);
  assert.equal(cut, `10.0.0.2:${peer.prepared?.pages?.port}`, "the dump's own connection to the page server");
  assert.equal(r.rollback?.sourceRunning, true);
  // (a peer found silent is not asked first: its abort, which kills the page server, is repeated in the background)
  assert.ok(log.includes('runc.resume'), 'thawed');
  // that abort comes a retry interval later: waited for here, or it would land in the next test's log
  const thawedAt = log.indexOf('runc.resume');
  for (let i = 0; i < 100 && !log.slice(thawedAt).includes('peer.abort'); i++)
    await new Promise((r) => setTimeout(r, 50));
  assert.ok(log.slice(thawedAt).includes('peer.abort'), 'the destination is aborted in the background');
});

test('cold with a page server but zstd: the page images stream as before, no page server', async () => {
  const r = await migrate('cold', { compress: 'on' }, true, COLD);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(peer.prepared?.pages, undefined);
  assert.equal(runc.checkpoints.find((o) => !o.preDump)?.pageServer, undefined);
});

test('cold with zstd: no ranges while dumping, everything in the compressed streams', async () => {
  const r = await migrate('cold', { compress: 'on' });
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.ok(!log.includes('peer.send-range'));
  assert.equal(r.compressed, true);
  assert.equal(r.streamedDuringDump, undefined);
  // the report counts what crossed the link, the files' bytes beside it: the transfer's two streams, the bundle's
  // changes and the images (the bundle sent at prepare is counted apart)
  const [bundle, images] = peer.sends.slice(-2);
  assert.equal(r.bytesSent, bundle!.wireBytes! + images!.wireBytes!);
  assert.equal(r.bytesUncompressed, bundle!.bytes + images!.bytes);
  assert.ok(r.bytesSent < r.bytesUncompressed!, 'page images of one byte value shrink');
});

test('without zstd the report has no uncompressed figure: what was sent is the files', async () => {
  const r = await migrate('cold');
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(r.bytesUncompressed, undefined);
  assert.ok(r.bytesSent >= 8192, 'the page image at least');
});

test('content-delta pre-copy: rounds leave it running and send blocks and recipes, then blocks at the switchover', async () => {
  const r = await migrate('precopy', { maxRounds: 2, thresholdBytes: 1 }, false);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  const round = [
    'runc.pause',
    'runc.checkpoint leave-running',
    'runc.resume',
    'peer.send-blocks',
    'peer.send images',
  ];
  assert.deepEqual(log, [
    'peer.prepare',
    'peer.send bundle',
    ...round,
    ...round,
    ...FREEZE,
    'runc.checkpoint final',
    'net.detach',
    'peer.send-blocks',
    'peer.send bundle',
    'peer.send images',
    'peer.restore',
    ...AFTER_TRANSFER,
  ]);
  assert.equal(r.precopy?.stop, 'round 2: 0 bytes <= --threshold');
});

test('soft-dirty pre-copy: chained pre-dumps, each streamed, the final dump on the last', async () => {
  runc.preDumpSizes = [40960, 20480, 4096];
  const r = await migrate('precopy', { thresholdBytes: 5000 });
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual(log, [
    'peer.prepare',
    'peer.send bundle',
    'runc.checkpoint pre-dump',
    'peer.send images',
    'runc.checkpoint pre-dump parent=../round-1',
    'peer.send images',
    'runc.checkpoint pre-dump parent=../round-2',
    'peer.send images',
    ...FREEZE,
    'runc.checkpoint final parent=round-3',
    'net.detach',
    'peer.send bundle',
    'peer.send images',
    'peer.restore',
    ...AFTER_TRANSFER,
  ]);
  assert.equal(r.precopy?.stop, 'round 3: 4096 bytes <= --threshold');
});

test('post-copy: the fence opens before prepare, a lazy dump, a lazy restore, the pages phase closes the fence', async () => {
  const r = await migrate('postcopy');
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual(log, [
    'fence.open',
    'peer.prepare lazy',
    'peer.send bundle',
    ...FREEZE,
    'runc.checkpoint-lazy',
    'net.detach',
    // the non-lazy pages went in ranges while CRIU wrote them (here: all at once, at the end)
    'peer.send-range',
    'peer.send bundle',
    'peer.send images',
    'peer.restore lazy',
    'peer.commit',
    'peer.pages-result',
    'fence.close',
    'net.destroy',
  ]);
  const port = peer.prepared?.lazy?.port;
  assert.deepEqual(peer.prepared?.lazy, { address: '10.0.0.1', port });
  assert.deepEqual(peer.restored?.lazy, { address: '10.0.0.1', port });
  assert.equal(runc.lazyOptions[0]?.pageServer, `10.0.0.1:${port}`);
  assert.deepEqual(
    r.phases.map((p) => p.name),
    ['plan', 'prepare', 'checkpoint', 'transfer', 'restore', 'confirm', 'pages', 'cleanup'],
  );
  assert.equal(r.postcopy?.pageServer, `10.0.0.1:${port}`);
  // the window: the lazy pages the dump left, over the time from the restore to the last page
  assert.equal(r.postcopy?.bytes, LAZY_PAGES * 4096);
  assert.ok((r.postcopy?.rate ?? 0) > 0, `rate ${r.postcopy?.rate}`);
});

test('post-copy with zstd: its non-lazy pages go in the compressed stream, not in ranges while dumping', async () => {
  const r = await migrate('postcopy', { compress: 'on' });
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.ok(!log.includes('peer.send-range'));
  assert.equal(r.streamedDuringDump, undefined);
});

test('hybrid: pre-dump rounds, then the lazy dump chained to the last round', async () => {
  runc.preDumpSizes = [40960, 2048];
  const r = await migrate('hybrid', { thresholdBytes: 4096 });
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual(log, [
    'fence.open',
    'peer.prepare lazy',
    'peer.send bundle',
    'runc.checkpoint pre-dump',
    'peer.send images',
    'runc.checkpoint pre-dump parent=../round-1',
    'peer.send images',
    ...FREEZE,
    'runc.checkpoint-lazy parent=round-2',
    'net.detach',
    'peer.send-range',
    'peer.send bundle',
    'peer.send images',
    'peer.restore lazy',
    'peer.commit',
    'peer.pages-result',
    'fence.close',
    'net.destroy',
  ]);
});

test('post-copy without the destination address fails in prepare and opens nothing', async () => {
  const r = await migrate('postcopy', { toAddress: undefined as never });
  assert.equal(r.error?.code, 'FERRY_E_PLAN_STRATEGY');
  assert.equal(r.error?.phase, 'prepare');
  assert.deepEqual(log, []);
  assert.equal(r.rollback?.sourceRunning, true);
});

/** What rollback did after the failing step, for a failure injected at `at`. */
async function failAt(
  strategy: StrategyName,
  at: string,
  over: Partial<MigrationRequest> = {},
  softDirty = true,
) {
  fail[at] = new FerryError('FERRY_E_HOST_UNREACHABLE', `${at} broke`);
  const r = await migrate(strategy, over, softDirty);
  assert.equal(r.ok, false);
  assert.equal(r.rollback?.sourceRunning, true, JSON.stringify(r.error));
  assert.equal((await runc.state('c1'))?.status, 'running');
  return { r, undo: log.slice(log.lastIndexOf(at) + 1) };
}

const THAW = ['runc.resume', 'net.unlock', 'net.reannounce'];

for (const [strategy, finalDump] of [
  ['cold', 'runc.checkpoint final'],
  ['precopy', 'runc.checkpoint final parent=round-1'],
] as const) {
  test(`${strategy}: failures before the dump undo the destination only, a failed dump resumes the source`, async () => {
    const prep = await failAt(strategy, 'peer.prepare', { thresholdBytes: 1 << 30 });
    assert.equal(prep.r.error?.phase, 'prepare');
    assert.deepEqual(prep.undo, [], 'nothing was staged: nothing to undo');

    log = [];
    fail = {};
    await runc.run('c1');
    const dump = await failAt(strategy, finalDump, { thresholdBytes: 1 << 30 });
    assert.equal(dump.r.error?.phase, 'checkpoint');
    assert.deepEqual(
      dump.undo,
      ['peer.abort', ...THAW],
      'resumed where the dump left it (and announced again: the destination may have announced the address)',
    );
  });
}

for (const [strategy, softDirty, rounds] of [
  ['cold', true, 0],
  ['precopy', false, 1],
  ['precopy', true, 1],
] as const) {
  test(`${strategy}${strategy === 'precopy' ? (softDirty ? ' (soft-dirty)' : ' (content delta)') : ''}: a transfer failure aborts the destination, then thaws the source`, async () => {
    // one round (the threshold is met at once): its images went; the final images fail
    spare['peer.send images'] = rounds;
    const { r, undo } = await failAt(strategy, 'peer.send images', { thresholdBytes: 1 << 30 }, softDirty);
    assert.equal(r.error?.phase, 'transfer');
    assert.deepEqual(undo, ['peer.abort', 'net.attach', ...THAW]);
  });
}

test('pre-copy: a round that cannot reach the destination aborts it; the container never stopped', async () => {
  const { r, undo } = await failAt('precopy', 'peer.send images', {}, true);
  assert.equal(r.error?.phase, 'rounds');
  assert.deepEqual(undo, ['peer.abort']);
});

test('pre-copy: a failing round resumes the container it paused and aborts the destination', async () => {
  const { r, undo } = await failAt('precopy', 'runc.checkpoint leave-running', {}, false);
  assert.equal(r.error?.phase, 'rounds');
  assert.deepEqual(undo, ['runc.resume', 'peer.abort']);
});

for (const strategy of ['postcopy', 'hybrid'] as const) {
  test(`${strategy}: a failed prepare closes the fence it opened`, async () => {
    const { r, undo } = await failAt(strategy, 'peer.prepare lazy');
    assert.equal(r.error?.phase, 'prepare');
    assert.deepEqual(undo, ['fence.close']);
  });

  test(`${strategy}: a failed lazy dump resumes the container, aborts the destination, closes the fence`, async () => {
    const at = strategy === 'hybrid' ? 'runc.checkpoint-lazy parent=round-1' : 'runc.checkpoint-lazy';
    const { r, undo } = await failAt(strategy, at, { thresholdBytes: 1 << 30, maxRounds: 1 });
    assert.equal(r.error?.phase, 'checkpoint');
    assert.deepEqual(undo, ['lazy.kill', 'peer.abort', ...THAW, 'fence.close']);
  });

  test(`${strategy}: a failed restore fails the page server (CRIU lets the tasks go), resumes them, closes the fence`, async () => {
    const { r, undo } = await failAt(strategy, 'peer.restore lazy', {
      thresholdBytes: 1 << 30,
      maxRounds: 1,
    });
    assert.equal(r.error?.phase, 'restore');
    assert.deepEqual(undo, [
      'peer.abort',
      'net.attach',
      'page-server.fail',
      'runc.resume',
      'net.unlock',
      'net.reannounce',
      'fence.close',
    ]);
  });
}

test('hybrid: a failed round aborts the destination and closes the fence', async () => {
  const { r, undo } = await failAt('hybrid', 'runc.checkpoint pre-dump');
  assert.equal(r.error?.phase, 'rounds');
  assert.deepEqual(undo, ['peer.abort', 'fence.close']);
});

test('rollback asks the strategy in order: stop sending, (destination), release the source, (resume), close what it staged', async () => {
  const hooks: string[] = [];
  const spy: Strategy = Object.assign(new ColdStrategy(), {
    stopSending: async () => {
      hooks.push('stop-sending');
    },
    releaseSource: async (notes: string[]) => {
      hooks.push(`release (runc ${(await runc.state('c1'))?.status})`);
      notes.push('released');
    },
    closeStaged: async () => {
      hooks.push('close-staged');
    },
  });
  const progress = { ...newProgress(), phase: 'transfer' as const, prepared: true, quiesced: true };
  await runc.pause('c1');
  const abort = peer.abort.bind(peer);
  peer.abort = async () => {
    hooks.push('peer.abort');
    return abort();
  };
  const rb = await rollback(
    { host, log: silentLogger(), commitDeadlineMs: 0 },
    { name: 'c1', id: 'm1', peer, progress, strategy: spy },
  );
  assert.deepEqual(hooks, ['stop-sending', 'peer.abort', 'release (runc paused)', 'close-staged']);
  assert.equal(rb.sourceRunning, true);
  assert.equal(rb.note, 'released');
});

test('the registry builds the pre-copy the source kernel supports', () => {
  assert.equal(
    createStrategy('precopy', {}, caps(true).strategies).constructor.name,
    'PrecopySoftDirtyStrategy',
  );
  assert.equal(
    createStrategy('precopy', {}, caps(false).strategies).constructor.name,
    'PrecopyDeltaStrategy',
  );
  for (const s of ['cold', 'postcopy', 'hybrid'] as const)
    assert.equal(createStrategy(s, {}, caps(true).strategies).name, s);
});

test('a process CRIU cannot move is refused in the plan phase, before anything is touched', async () => {
  unmovable = [{ pid: 4242, nsPid: 7, comm: 'pthread02', limit: 'CRIU cannot dump a zombie with threads' }];
  const r = await migrate('cold');
  assert.equal(r.ok, false);
  assert.equal(r.error?.code, 'FERRY_E_CONTAINER_UNMOVABLE');
  assert.equal(r.error?.phase, 'plan');
  assert.match(
    r.error!.message,
    /pid 7 \(host pid 4242, pthread02\): CRIU cannot dump a zombie with threads/,
  );
  assert.deepEqual(log, []);
  assert.equal((await runc.state('c1'))?.status, 'running');
});
