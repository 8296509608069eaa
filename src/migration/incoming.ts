// One migration arriving at this host: its name reserved, its bundle and images received, the container restored,
// then committed or aborted. The state machine (each operation checks it is allowed now):
//
//   prepared --restore--> restoring --> restored --commit--> committed
//       \______________________\___________\______abort____> aborted
//
// Beside it, a held switchover (decision 11): while prepared, `hold` primes a qdisc that queues the container's
// packets and `announce` (once the source is locked) moves the address here; the commit delivers what was held,
// an abort drops it.
//
// Pre-copy rounds add pages to a block store while prepared; post-copy starts CRIU's lazy-pages daemon as soon as
// the images' inventory lands (lazy-pages.ts); cold's prepare starts the page server its dump sends pages to
// (page-server.ts). The record on disk lets a restarted agent undo what was left.
// Over 400 lines because it is one state machine: each transition sits beside the undo an abort runs for it.
import { access, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { FerryError, type Phase } from '../core/errors.ts';
import type { Faults } from '../core/faults.ts';
import type { Logger } from '../core/log.ts';
import { traceStep } from '../core/trace.ts';
import { type ContainerHost, identity } from '../host/containers.ts';
import { bundleDir, containerDir, imageDir } from '../host/paths.ts';
import { readStats } from '../images/stats.ts';
import type { Neighbour } from '../network/ip.ts';
import { readConfig, validateConfig, writeConfig } from '../runtime/bundle.ts';
import { BlockStore } from '../transport/block-store.ts';
import { decodeTree } from '../transport/image-stream/index.ts';
import { type FileRange, writeRange } from '../transport/ranges.ts';
import { type IncomingRecord, RecordFile, readRecord } from './incoming-record.ts';
import { LazyPages, type LazyPagesStarter } from './lazy-pages.ts';
import { IncomingPageServer, type PageServerDeps, removeLeftPageServer } from './page-server.ts';
import { StagedRestore } from './staged-restore.ts';
import type { IncomingRequest, RestoreResult } from './types.ts';

export type IncomingState = IncomingRecord['state'] | 'committed' | 'aborted';

export interface IncomingDeps {
  host: ContainerHost;
  log: Logger;
  /** Test-only fault injection: 'invalid-bundle' breaks the received bundle before restore; kill-at points. */
  faults: Faults;
  lazyPages: LazyPagesStarter | undefined;
  /** Cold: CRIU's page server for the source's dump, and its fence; undefined: this host runs none. */
  pageServer?: PageServerDeps | undefined;
  /** A restore still running this long is killed: the copy could not be committed in time anyway. */
  restoreTimeoutMs?: number;
  /** Keep CRIU's restore log of a restore that worked too (the agent's `keepLogs`). */
  keepLogs?: boolean;
}

type Part = 'bundle' | 'images';
/** The image files a staged restore writes before the images arrive (staged-restore.ts). */
const STAGED_FILES: ReadonlySet<string> = new Set(['descriptors.json']);
type PageServer = { address: string; port: number };

export class IncomingMigration {
  readonly id: string;
  readonly name: string;
  /** The source host: the only one that may drive this migration. */
  readonly from: string;
  private readonly deps: IncomingDeps;
  /** The parts arrive concurrently, so this (not the file) is the truth; the file follows it. */
  private readonly rec: IncomingRecord;
  private readonly file: RecordFile;
  private current: IncomingState;
  /** Pre-copy: the pages received in rounds. */
  private blocks: BlockStore | undefined;
  /** Post-copy: the lazy-pages daemon, started when the images arrived (or at restore). */
  private lazy: LazyPages | undefined;
  /** Cold: the page server the source's dump writes the pages through, from prepare until it exits. */
  private pageServer: IncomingPageServer | undefined;
  /** The restore in flight: an abort waits for it, then removes what it made. */
  private restoring: Promise<RestoreResult> | undefined;
  private aborting: Promise<void> | undefined;
  /** The held switchover: none, primed (packets for the container wait here), announced (the LAN sends them here). */
  private held: 'none' | 'primed' | 'announced' = 'none';
  private holding: Promise<void> | undefined;
  /** The restore's runc, started once the bundle is in, or at the hold (staged-restore.ts); undefined when it was not staged. */
  private staging: Promise<StagedRestore | undefined> | undefined;

  private constructor(deps: IncomingDeps, rec: IncomingRecord) {
    this.deps = deps;
    this.rec = rec;
    this.id = rec.id;
    this.name = rec.name;
    this.from = rec.from;
    this.current = rec.state;
    this.file = new RecordFile(deps.host.paths.incomingDir, rec.id);
  }

  /** A migration about to be prepared (nothing is on disk until prepare). */
  static create(deps: IncomingDeps, req: IncomingRequest): IncomingMigration {
    return new IncomingMigration(deps, {
      ...req,
      state: 'prepared',
      received: [],
      createdAt: new Date().toISOString(),
    });
  }

  /** A migration a previous run of the agent left on disk; undefined when its record is missing or unreadable. */
  static async load(deps: IncomingDeps, id: string): Promise<IncomingMigration | undefined> {
    const rec = await readRecord(deps.host.paths.incomingDir, id);
    return rec ? new IncomingMigration(deps, rec) : undefined;
  }

  /** The container's record as the source sent it (its network identity). */
  get record(): IncomingRecord['record'] {
    return this.rec.record;
  }

  get state(): IncomingState {
    return this.current;
  }

  /** Post-copy: the lazy-pages daemon, if one was started. */
  get pages(): LazyPages | undefined {
    return this.lazy;
  }

  private get images(): string {
    return imageDir(this.deps.host.paths, this.id);
  }

  private get bundle(): string {
    return bundleDir(this.deps.host.paths, this.name);
  }

  /** Throws unless the migration is in `state`: aborted ones are unknown from now on, others are out of order. */
  private expect(state: IncomingState, phase: Phase | undefined, doing: string): void {
    if (this.current === state) return;
    const opts = phase ? { phase } : {};
    if (this.current === 'aborted')
      throw new FerryError('FERRY_E_MIGRATION_UNKNOWN', `migration ${this.id} was aborted`, opts);
    throw new FerryError('FERRY_E_INPUT_REQUEST', `migration ${this.id} is ${this.current}, ${doing}`, opts);
  }

  /** A transition: in memory at once (the next request already sees it), then on disk. */
  private moveTo(state: IncomingRecord['state']): Promise<void> {
    this.stopIfAborted();
    this.current = state;
    this.rec.state = state;
    return this.file.save(this.rec);
  }

  /** Makes the image directory, saves the record and stages the network identity (everything before the freeze). */
  async prepare(): Promise<void> {
    this.expect('prepared', 'prepare', 'cannot prepare');
    const { network } = this.deps.host;
    const net = identity(this.rec.record);
    await mkdir(this.images, { recursive: true, mode: 0o700 });
    await this.file.save(this.rec);
    // same address and MAC, cut off from the LAN and locked until restore
    await network.create(this.name, net, { attached: false, locked: true });
    await network.setNeighbours(this.name, net, this.rec.neighbours ?? []);
    network.stageUnlock?.(this.name, net);
    if (this.rec.pages) {
      const o = { port: this.rec.pages.port, imagesDir: this.images, from: this.from, migration: this.id };
      this.pageServer = await IncomingPageServer.start(this.deps.pageServer, o);
      void this.pageServer.failed.then(async (why) => {
        if (!why) return;
        this.deps.log.warn({ migration: this.id, container: this.name, why }, 'criu page-server failed');
        await this.keepLog('page-server.log');
      });
    }
  }

  /**
   * Right before the source freezes: the container's link comes up with a hold that queues every packet for it
   * (nothing reaches the locked copy, nothing is dropped). A host whose network cannot hold answers with an error
   * and the source goes on without (the restore then attaches the link, as before).
   */
  async hold(): Promise<void> {
    this.expect('prepared', 'checkpoint', 'cannot hold its traffic');
    const { network } = this.deps.host;
    if (!network.primeHold) throw new FerryError('FERRY_E_CAPABILITY', 'this host cannot hold traffic');
    // an abort waits for this, then removes the hold with the rest
    this.holding = network.primeHold(this.name, identity(this.rec.record));
    await this.holding;
    this.stopIfAborted();
    this.held = 'primed';
    // the restore's runc starts now if the bundle did not start it; not waited for (an abort and the restore are)
    this.staging ??= this.stageRestore();
  }

  /** Starts the restore's runc ahead (staged-restore.ts) when the source sent the descriptors; never fails. */
  private async stageRestore(): Promise<StagedRestore | undefined> {
    const { host, faults, log } = this.deps;
    const descriptors = this.rec.descriptors;
    // (the test-only faults of the restore's path take the unstaged one, where they are)
    const faulted = faults.has('invalid-bundle', this.name) || faults.has('dest:restoring', this.name);
    if (!descriptors || faulted || !this.rec.received.includes('bundle')) return undefined;
    try {
      return await StagedRestore.start({
        runc: host.runc,
        name: this.name,
        bundle: this.bundle,
        images: this.images,
        descriptors,
        place: (config) => host.place(config, this.rec.record),
        restore: this.restoreOptions(this.rec.lazy !== undefined),
      });
    } catch (err) {
      log.warn(
        { container: this.name, migration: this.id, err: (err as Error).message },
        'restore not staged',
      );
      return undefined;
    }
  }

  private restoreOptions(lazy: boolean) {
    return {
      bundle: this.bundle,
      imagePath: this.images,
      workPath: this.images,
      tcpEstablished: identity(this.rec.record).mode !== 'none',
      ...(lazy ? { lazyPages: true } : {}),
      ...(this.deps.restoreTimeoutMs ? { timeoutMs: this.deps.restoreTimeoutMs } : {}),
    };
  }

  /** Once the source is locked: the address is announced here, so its packets come here and wait. */
  async announce(): Promise<void> {
    this.expect('prepared', 'checkpoint', 'cannot announce');
    if (this.held !== 'primed') {
      const message = `migration ${this.id}: no hold was primed for ${this.name}`;
      throw new FerryError('FERRY_E_INPUT_REQUEST', message, { phase: 'checkpoint' });
    }
    await this.deps.host.network.holdTraffic?.(this.name, identity(this.rec.record));
    this.held = 'announced';
  }

  /** The bundle (or an update of it after the dump) or the images, as one framed tree stream. */
  async receive(part: Part, body: Readable, opts: { update?: boolean } = {}): Promise<{ bytes: number }> {
    traceStep(`incoming: ${part} request`, performance.now(), { migration: this.id });
    this.expect('prepared', 'transfer', 'not receiving');
    const dest = part === 'bundle' ? this.bundle : this.images;
    const update = part === 'bundle' && opts.update === true;
    if (update && !this.rec.received.includes('bundle')) {
      const message = `migration ${this.id}: a bundle update before the bundle`;
      throw new FerryError('FERRY_E_INPUT_REQUEST', message, { phase: 'transfer' });
    }
    // a staged restore wrote config.json and descriptors.json: what the stream brings comes after, and is checked
    // against them at the restore
    if (update || part === 'images') await this.staging;
    if (part === 'bundle' && !update) {
      await rm(dest, { recursive: true, force: true });
      await mkdir(dest, { recursive: true, mode: 0o700 });
    }
    // a rootfs may hold device nodes (its own /dev); the sender is a peer agent of this cluster, authenticated by
    // mutual TLS. Checkpoint images never do.
    const traced = performance.now();
    const stats = await decodeTree(body, dest, {
      ...(update ? { allowRemove: true } : {}),
      ...(part === 'bundle' ? { allowDevices: true } : {}),
      // a staged restore wrote the descriptors the source predicted; the dump's own replace them
      ...(part === 'images' && this.staging ? { replaceable: STAGED_FILES } : {}),
    });
    traceStep(`incoming: ${part}${update ? ' update' : ''} received`, traced, { migration: this.id });
    // aborted meanwhile (the source rolled back while this stream was still arriving): start nothing, save nothing
    this.expect('prepared', 'transfer', 'not receiving');
    if (!this.rec.received.includes(part)) this.rec.received.push(part);
    // (hybrid's pre-dump rounds arrive in subdirectories first: only the final dump has a top-level inventory)
    const inventory = part === 'images' && (await exists(join(dest, 'inventory.img')));
    if (inventory && this.rec.lazy && !this.lazy) {
      // post-copy: the daemon starts as soon as its inventory is here, while the source asks for the restore;
      // it reads the rest of the images only when the restore connects to it
      this.lazy = this.startLazyPages(this.rec.lazy);
    }
    await this.file.save(this.rec);
    // cold and post-copy freeze right after the bundle is here: the restore's runc starts now, and its start, its
    // CRIU version check and its mounts are behind it at the freeze (started at the hold they ran beside the dump,
    // and slowed it where the hosts share CPUs). Pre-copy's rounds may last longer than a staged runc waits: at
    // its hold.
    if (part === 'bundle' && !update && (this.rec.lazy || this.rec.pages))
      this.staging ??= this.stageRestore();
    return { bytes: stats.bytes };
  }

  /** One range of a large image file, on one of several parallel connections. */
  async receiveRange(r: FileRange, body: Readable, opts: { sparse?: boolean } = {}) {
    this.expect('prepared', 'transfer', 'not receiving');
    return writeRange(this.images, r, body, opts);
  }

  /** Pre-copy round (or the final delta): pages the destination did not have yet. */
  async receiveBlocks(body: Readable): Promise<{ pages: number; added: number }> {
    this.expect('prepared', 'transfer', 'not receiving');
    this.blocks ??= new BlockStore(this.images);
    return this.blocks.add(body);
  }

  /** The switchover: places the bundle, attaches the network, runs runc restore, unlocks; once only. */
  async restore(opts: { neighbours?: Neighbour[]; lazy?: PageServer } = {}): Promise<RestoreResult> {
    this.expect('prepared', 'restore', 'cannot restore');
    for (const part of ['bundle', 'images'] as const) {
      if (!this.rec.received.includes(part)) {
        const message = `cannot restore ${this.name}: its ${part} did not arrive`;
        throw new FerryError('FERRY_E_RESTORE_FAILED', message, { phase: 'restore' });
      }
    }
    const restoring = this.runRestore(opts);
    this.restoring = restoring;
    return await restoring;
  }

  private async runRestore(opts: { neighbours?: Neighbour[]; lazy?: PageServer }): Promise<RestoreResult> {
    const { host, faults, log } = this.deps;
    const { bundle, images, name } = this;
    const traced = performance.now();
    await this.moveTo('restoring'); // (a second restore is refused from here on)
    const lazy = opts.lazy ?? this.rec.lazy;
    let staged = await this.staging;
    this.staging = undefined;
    const unusable = await staged?.usable({ lazy: lazy !== undefined });
    if (staged && unusable) {
      log.info({ container: name, migration: this.id, why: unusable }, 'the staged restore is not used');
      await staged.cancel();
      staged = undefined;
    }
    if (!staged) {
      const config = await readConfig(bundle);
      validateConfig(config);
      const placed = host.place(config, this.rec.record);
      if (faults.has('invalid-bundle', name)) placed.root.path = 'rootfs-missing';
      await writeConfig(bundle, placed);
    }
    // pre-copy: the page images are rebuilt from the pages received in the rounds and the final delta
    if (this.blocks) {
      await this.blocks.rebuild(images);
      await this.blocks.close();
      this.blocks = undefined;
      await rm(join(images, 'blocks.bin'), { force: true });
    }
    const net = identity(this.rec.record);
    // the container's ARP cache, then the switchover: attach, announce, restore, unlock, announce again (a held
    // switchover is attached and announced since the source froze)
    await host.network.setNeighbours(name, net, opts.neighbours ?? []);
    if (this.held !== 'announced') await host.network.attach(name, net);
    let ms: number;
    try {
      // cold: every page came through the page server, which exits cleanly only once it has written them all
      await this.pageServer?.finished();
      if (lazy) {
        this.lazy ??= this.startLazyPages(lazy);
        await this.lazy.ready;
        const ended = this.lazy.exited;
        if (ended) {
          throw new FerryError(
            'FERRY_E_RESTORE_FAILED',
            `criu lazy-pages ended before the restore: ${ended.stderr.trim().split('\n').pop() || `exit ${ended.code}`}`,
            { phase: 'restore' },
          );
        }
      }
      this.stopIfAborted();
      await faults.reach('dest:restoring', name, 100);
      traceStep('incoming: restore staged', traced, { migration: this.id });
      ({ ms } = staged
        ? await staged.go(this.deps.restoreTimeoutMs)
        : await host.runc.restore(name, this.restoreOptions(lazy !== undefined)));
    } catch (err) {
      // (a staged restore that never got its go: runc ends without restoring)
      await staged?.cancel().catch(() => {});
      await this.keepLog('restore.log');
      if (this.rec.pages) await this.keepLog('page-server.log');
      throw err;
    }
    // aborted while runc restored: the abort (waiting for this) removes the container
    this.stopIfAborted();
    // its network stays locked until the commit: a copy that may still be aborted must never have talked to a
    // client (the client would then see the source's older state when the source thaws)
    // (runc's own files say so without a process; runc is asked when they cannot tell, and names what it is instead)
    const quick = await host.runc.quickStatus?.(name);
    let pid = quick?.status === 'running' ? quick.pid : undefined;
    if (pid === undefined) {
      const st = await host.runc.state(name);
      if (st?.status !== 'running') {
        const message = `${name} is ${st?.status ?? 'gone'} right after restore`;
        throw new FerryError('FERRY_E_CONFIRM_FAILED', message, { phase: 'confirm' });
      }
      pid = st.pid;
    }
    this.stopIfAborted();
    await host.writeRecord({
      ...this.rec.record,
      origin: { kind: 'migration', from: this.rec.from, id: this.id },
    });
    await this.moveTo('restored');
    await faults.reach('dest:restored', name);
    if (this.deps.keepLogs) await this.keepLog('restore.log');
    // (figures only: a stats file CRIU could not finish, its tmpfs full, must not fail a restore that worked)
    const stats = await readStats(join(images, 'stats-restore')).catch((err: Error) => {
      log.warn({ container: name, migration: this.id, err: err.message }, 'no restore statistics');
      return undefined;
    });
    const out: RestoreResult = { pid, ms, ...(staged ? { staged: true } : {}) };
    if (stats?.restore) out.stats = stats.restore;
    log.info({ container: name, migration: this.id, ms }, 'restored');
    traceStep('incoming: restore', traced, { migration: this.id });
    return out;
  }

  private stopIfAborted(): void {
    if (this.current === 'aborted')
      throw new FerryError('FERRY_E_MIGRATION_UNKNOWN', `migration ${this.id} was aborted`, {
        phase: 'restore',
      });
  }

  /**
   * The container is this host's now: its network is unlocked and what was held delivered (the freeze ends here),
   * and its record goes (a restarted agent no longer aborts it). What the answer need not wait for, the hold's
   * removal, the second announcement and the images (post-copy: once the pages are in), follows it.
   */
  async commit(): Promise<void> {
    this.expect('restored', undefined, 'cannot commit');
    const traced = performance.now();
    const { network } = this.deps.host;
    const net = identity(this.rec.record);
    await network.unlock(this.name, net);
    traceStep('incoming: commit: unlocked', traced, { migration: this.id });
    // unlocked first: what was held goes to the restored sockets now, none of it to the lock
    if (this.held !== 'none') await network.releaseHold?.(this.name, net);
    traceStep('incoming: commit: released', traced, { migration: this.id });
    this.current = 'committed';
    try {
      await this.file.remove();
    } finally {
      // after the answer has gone: each of these starts a process or frees memory, and inside the freeze they made
      // the commit 44-144 ms (median) instead of 16-17 on a shared two-core test machine (an images directory a
      // crash leaves here goes at the agent's next start, with the other orphans)
      setImmediate(() => this.afterCommit(net));
    }
    traceStep('incoming: commit', traced, { migration: this.id });
    this.deps.log.info({ container: this.name, migration: this.id }, 'incoming migration committed');
  }

  private afterCommit(net: ReturnType<typeof identity>): void {
    const { network } = this.deps.host;
    const log = this.deps.log;
    if (this.held !== 'none') {
      void network.finishHold?.(this.name, net).then(
        (stats) => log.info({ container: this.name, migration: this.id, hold: stats }, 'hold released'),
        (err: Error) => log.warn({ err, container: this.name }, 'hold not removed'),
      );
    }
    network.reannounce(this.name, net);
    const images = this.images;
    // post-copy: the daemon still reads the images while pages stream in; they go after it
    const after = this.lazy ? this.lazy.done : Promise.resolve();
    void after.then(() => rm(images, { recursive: true, force: true })).catch(() => {});
  }

  /** Removes everything this migration created here, a restored container included. Idempotent. */
  abort(): Promise<void> {
    // a source that thinks it may thaw must learn otherwise: the container runs here now
    if (this.current === 'committed') return Promise.reject(committedError(this.id));
    this.aborting ??= this.removeAll(this.current);
    return this.aborting;
  }

  private async removeAll(was: IncomingState): Promise<void> {
    const { host, log } = this.deps;
    this.current = 'aborted';
    // the daemon first: a restore waiting on it gives up
    await this.lazy?.stop();
    // the page server too (a dump still sending to it then fails and its source thaws); one a previous run of the
    // agent started is found by its image directory
    if (this.pageServer) await this.pageServer.stop();
    else if (this.rec.pages)
      await removeLeftPageServer(this.deps.pageServer, {
        port: this.rec.pages.port,
        imagesDir: this.images,
        from: this.from,
        migration: this.id,
      });
    // a restore still running would otherwise create the container after it was removed; a staged one ends unused
    await this.restoring?.catch(() => {});
    const staged = await this.staging;
    this.staging = undefined;
    await staged?.cancel().catch(() => {});
    await this.holding?.catch(() => {});
    await this.blocks?.close();
    this.blocks = undefined;
    if (await this.ownsName()) {
      const net = identity(this.rec.record);
      const restored = was === 'restoring' || was === 'restored';
      // a restored copy is cut off before it dies: its sockets' packets carry CRIU's mark, which the lock lets
      // through, and its FIN would reach the client the source is about to serve again
      if (restored) {
        await host.network.detach(this.name, net).catch(() => {});
        await host.network.silence?.(this.name, net).catch(() => {});
      }
      await host.runc.destroy(this.name);
      if (restored) await host.network.unsilence?.(this.name, net).catch(() => {});
      await host.network.destroy(this.name, net).catch(() => {});
      await rm(containerDir(host.paths, this.name), { recursive: true, force: true });
    } else {
      log.warn(
        { container: this.name, migration: this.id },
        'the name belongs to another container now: only the migration files go',
      );
    }
    await rm(this.images, { recursive: true, force: true });
    await this.file.remove();
    log.warn({ container: this.name, migration: this.id, state: was }, 'incoming migration aborted');
  }

  /**
   * Whether what goes by this migration's name here is this migration's: no container record (the restore had not
   * written one yet), or a record that came from this very migration. A record of any other origin is a container
   * that took the name after this reservation went stale (by id, never by name alone): never touched.
   */
  private async ownsName(): Promise<boolean> {
    const rec = await this.deps.host.readRecord(this.name).catch(() => undefined);
    return !rec || (rec.origin?.kind === 'migration' && rec.origin.id === this.id);
  }

  private startLazyPages(source: PageServer): LazyPages {
    const { host, log, lazyPages } = this.deps;
    return new LazyPages(
      {
        start: lazyPages,
        hostName: host.hostName,
        log,
        migration: this.id,
        container: this.name,
        onLost: () => host.runc.kill(this.name, 'KILL'),
      },
      source,
      this.images,
    );
  }

  /** Copies a CRIU log of this migration to the agent's logs/ (the images directory goes at commit or abort). */
  private async keepLog(file: string): Promise<void> {
    const { logsDir } = this.deps.host.paths;
    try {
      await mkdir(logsDir, { recursive: true });
      await writeFile(join(logsDir, `${this.id}-${file}`), await readFile(join(this.images, file)));
    } catch {
      // no log to keep
    }
  }
}

/** The answer to an abort that came too late: the source must not thaw its copy. */
export function committedError(id: string): FerryError {
  return new FerryError('FERRY_E_INPUT_REQUEST', `migration ${id} is committed: it cannot be aborted`, {
    phase: 'rollback',
  });
}

function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
