// The destination half: receive a container's bundle and images, restore it, then commit or abort.
import { access, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { checkName } from '../core/names.ts';
import { type ContainerHost, identity } from '../host/containers.ts';
import { bundleDir, containerDir, imageDir } from '../host/paths.ts';
import { readStats } from '../images/stats.ts';
import type { Neighbour } from '../network/ip.ts';
import { readConfig, validateConfig, writeConfig } from '../runtime/bundle.ts';
import type { ExecResult, StartedProcess } from '../runtime/exec.ts';
import { BlockStore } from '../transport/block-store.ts';
import { decodeTree } from '../transport/image-stream/index.ts';
import { type FileRange, writeRange } from '../transport/ranges.ts';
import type { IncomingRequest, RestoreResult } from './types.ts';

type IncomingState = 'prepared' | 'restoring' | 'restored';

interface IncomingRecord extends IncomingRequest {
  state: IncomingState;
  received: ('bundle' | 'images')[];
  createdAt: string;
}

export interface DestinationOptions {
  /** Test-only fault injection: 'invalid-bundle' breaks the received bundle before restore. */
  faults?: string[];
  /** Post-copy: starts CRIU's lazy-pages daemon against the source's page server. */
  lazyPages?: (o: { address: string; port: number; imagesDir: string }) => StartedProcess;
}

export class IncomingMigrations {
  private readonly host: ContainerHost;
  private readonly log: Logger;
  private readonly faults: Set<string>;
  private readonly lazyPages: DestinationOptions['lazyPages'];
  /** Post-copy: lazy-pages daemons still pulling pages, by migration id. */
  private readonly daemons = new Map<string, StartedProcess>();
  /** Post-copy: the lazy-pages daemon's start, begun when the images arrived. */
  private readonly lazyStarts = new Map<string, Promise<void>>();
  /** Lazy-pages daemons that have exited, with how. */
  private readonly daemonsEnded = new Map<string, ExecResult>();
  private readonly aborted = new Set<string>();
  /** Post-copy outcome per migration: did every page arrive? */
  private readonly pageResults = new Map<string, Promise<{ ok: boolean; message: string }>>();
  /** Pre-copy: the pages received in rounds, by migration id. */
  private readonly blockStores = new Map<string, BlockStore>();
  /** Names reserved by an incoming migration, so nothing else takes them meanwhile. */
  private readonly reserved = new Map<string, string>();
  /** Incoming migrations by id; the parts arrive concurrently, so this (not the file) is the truth. */
  private readonly records = new Map<string, IncomingRecord>();
  private writes = 0;

  constructor(host: ContainerHost, log: Logger, opts: DestinationOptions = {}) {
    this.host = host;
    this.log = log;
    this.faults = new Set(opts.faults ?? []);
    this.lazyPages = opts.lazyPages;
  }

  private recordPath(id: string): string {
    return join(this.host.paths.incomingDir, `${checkName(id, 'migration')}.json`);
  }

  private async load(id: string): Promise<IncomingRecord> {
    const cached = this.records.get(id);
    if (cached) return cached;
    try {
      const rec = JSON.parse(await readFile(this.recordPath(id), 'utf8')) as IncomingRecord;
      this.records.set(id, rec);
      return rec;
    } catch {
      throw new FerryError(
        'FERRY_E_MIGRATION_UNKNOWN',
        `no incoming migration ${id} on host ${this.host.hostName}`,
      );
    }
  }

  /** Write-through of the in-memory record; atomic, so a crash never leaves half a file. */
  private async save(rec: IncomingRecord): Promise<void> {
    this.records.set(rec.id, rec);
    const path = this.recordPath(rec.id);
    const tmp = `${path}.${process.pid}.${++this.writes}.tmp`;
    await writeFile(tmp, JSON.stringify(rec));
    await rename(tmp, path);
  }

  isReserved(name: string): boolean {
    return this.reserved.has(name);
  }

  async prepare(req: IncomingRequest): Promise<void> {
    checkName(req.id, 'migration');
    checkName(req.name);
    if (this.reserved.has(req.name) || this.host.isBusy(req.name) || (await this.host.exists(req.name))) {
      throw new FerryError(
        'FERRY_E_CONTAINER_EXISTS',
        `host ${this.host.hostName} already has a container named ${req.name}`,
        { phase: 'prepare' },
      );
    }
    this.reserved.set(req.name, req.id);
    try {
      await mkdir(imageDir(this.host.paths, req.id), { recursive: true, mode: 0o700 });
      await this.save({ ...req, state: 'prepared', received: [], createdAt: new Date().toISOString() });
      // staged before the freeze: same address and MAC, cut off from the LAN and locked until restore
      await this.host.network.create(req.name, identity(req.record), { attached: false, locked: true });
      await this.host.network.setNeighbours(req.name, identity(req.record), req.neighbours ?? []);
      this.host.network.stageUnlock?.(req.name, identity(req.record));
    } catch (err) {
      await this.abort(req.id).catch(() => {});
      this.reserved.delete(req.name);
      throw err;
    }
  }

  async receive(
    id: string,
    part: 'bundle' | 'images',
    body: Readable,
    opts: { update?: boolean } = {},
  ): Promise<{ bytes: number }> {
    const rec = await this.load(id);
    if (rec.state !== 'prepared') {
      throw new FerryError('FERRY_E_INPUT_REQUEST', `migration ${id} is ${rec.state}, not receiving`, {
        phase: 'transfer',
      });
    }
    const dest = part === 'bundle' ? bundleDir(this.host.paths, rec.name) : imageDir(this.host.paths, id);
    const update = part === 'bundle' && opts.update === true;
    if (update && !rec.received.includes('bundle')) {
      throw new FerryError('FERRY_E_INPUT_REQUEST', `migration ${id}: a bundle update before the bundle`, {
        phase: 'transfer',
      });
    }
    if (part === 'bundle' && !update) {
      await rm(dest, { recursive: true, force: true });
      await mkdir(dest, { recursive: true, mode: 0o700 });
    }
    // a rootfs may hold device nodes (its own /dev); the sender is a peer agent of this cluster, authenticated by
    // mutual TLS. Checkpoint images never do.
    const stats = await decodeTree(body, dest, {
      ...(update ? { allowRemove: true } : {}),
      ...(part === 'bundle' ? { allowDevices: true } : {}),
    });
    // aborted meanwhile (the source rolled back while this stream was still arriving): start nothing, save nothing
    if (this.aborted.has(id)) {
      throw new FerryError('FERRY_E_MIGRATION_UNKNOWN', `migration ${id} was aborted`, { phase: 'transfer' });
    }
    if (!rec.received.includes(part)) rec.received.push(part);
    // (hybrid's pre-dump rounds arrive in subdirectories first: only the final dump has a top-level inventory)
    const inventory =
      part === 'images' &&
      (await access(join(dest, 'inventory.img')).then(
        () => true,
        () => false,
      ));
    if (inventory && rec.lazy && !this.lazyStarts.has(id)) {
      // post-copy: CRIU's lazy-pages daemon starts as soon as its inventory is here, while the source asks for
      // the restore; it reads the rest of the images only when the restore connects to it
      const started = this.startLazyPages(id, rec.name, rec.lazy, dest);
      started.catch(() => {});
      this.lazyStarts.set(id, started);
    }
    await this.save(rec);
    return { bytes: stats.bytes };
  }

  /** One range of a large image file, on one of several parallel connections. */
  async receiveRange(
    id: string,
    r: FileRange,
    body: Readable,
    opts: { sparse?: boolean } = {},
  ): Promise<{ crc: number; bytes: number }> {
    const rec = await this.load(id);
    if (rec.state !== 'prepared') {
      throw new FerryError('FERRY_E_INPUT_REQUEST', `migration ${id} is ${rec.state}, not receiving`, {
        phase: 'transfer',
      });
    }
    return writeRange(imageDir(this.host.paths, id), r, body, opts);
  }

  /** Pre-copy round (or the final delta): pages the destination did not have yet. */
  async receiveBlocks(id: string, body: Readable): Promise<{ pages: number; added: number }> {
    const rec = await this.load(id);
    if (rec.state !== 'prepared') {
      throw new FerryError('FERRY_E_INPUT_REQUEST', `migration ${id} is ${rec.state}, not receiving`, {
        phase: 'transfer',
      });
    }
    let store = this.blockStores.get(id);
    if (!store) {
      store = new BlockStore(imageDir(this.host.paths, id));
      this.blockStores.set(id, store);
    }
    return store.add(body);
  }

  async restore(
    id: string,
    opts: { neighbours?: Neighbour[]; lazy?: { address: string; port: number } } = {},
  ): Promise<RestoreResult> {
    const rec = await this.load(id);
    for (const part of ['bundle', 'images'] as const) {
      if (!rec.received.includes(part)) {
        throw new FerryError(
          'FERRY_E_RESTORE_FAILED',
          `cannot restore ${rec.name}: its ${part} did not arrive`,
          {
            phase: 'restore',
          },
        );
      }
    }
    rec.state = 'restoring';
    await this.save(rec);
    const bundle = bundleDir(this.host.paths, rec.name);
    const images = imageDir(this.host.paths, id);
    const config = await readConfig(bundle);
    validateConfig(config);
    const placed = this.host.place(config, rec.record);
    if (this.faults.has('invalid-bundle')) placed.root.path = 'rootfs-missing';
    await writeConfig(bundle, placed);
    // pre-copy: the page images are rebuilt from the pages received in the rounds and the final delta
    const blocks = this.blockStores.get(id);
    if (blocks) {
      await blocks.rebuild(images);
      await blocks.close();
      this.blockStores.delete(id);
      await rm(join(images, 'blocks.bin'), { force: true });
    }
    const net = identity(rec.record);
    // the container's ARP cache, then the switchover: attach, announce, restore, unlock, announce again
    await this.host.network.setNeighbours(rec.name, net, opts.neighbours ?? []);
    await this.host.network.attach(rec.name, net);
    let ms: number;
    try {
      const lazy = opts.lazy ?? rec.lazy;
      if (lazy) {
        let started = this.lazyStarts.get(id);
        if (!started) {
          started = this.startLazyPages(id, rec.name, lazy, images);
          this.lazyStarts.set(id, started);
        }
        await started;
      }
      const ended = this.daemonsEnded.get(id);
      if (lazy && ended) {
        throw new FerryError(
          'FERRY_E_RESTORE_FAILED',
          `criu lazy-pages ended before the restore: ${ended.stderr.trim().split('\n').pop() || `exit ${ended.code}`}`,
          { phase: 'restore' },
        );
      }
      ({ ms } = await this.host.runc.restore(rec.name, {
        bundle,
        imagePath: images,
        workPath: images,
        tcpEstablished: net.mode !== 'none',
        ...(lazy ? { lazyPages: true } : {}),
      }));
    } catch (err) {
      await this.keepLog(id, images, 'restore.log');
      throw err;
    }
    // unlocked at once (the restored sockets are live), checked in parallel
    const [, st] = await Promise.all([
      this.host.network.unlock(rec.name, net),
      this.host.runc.state(rec.name),
    ]);
    this.host.network.reannounce(rec.name, net);
    if (st?.status !== 'running') {
      throw new FerryError(
        'FERRY_E_CONFIRM_FAILED',
        `${rec.name} is ${st?.status ?? 'gone'} right after restore`,
        {
          phase: 'confirm',
        },
      );
    }
    await this.host.writeRecord({ ...rec.record, origin: { kind: 'migration', from: rec.from, id } });
    rec.state = 'restored';
    await this.save(rec);
    if (process.env['FERRY_KEEP_LOGS']) await this.keepLog(id, images, 'restore.log');
    const stats = await readStats(join(images, 'stats-restore'));
    const out: RestoreResult = { pid: st.pid, ms };
    if (stats?.restore) out.stats = stats.restore;
    this.log.info({ container: rec.name, migration: id, ms }, 'restored');
    return out;
  }

  private async startLazyPages(
    id: string,
    name: string,
    lazy: { address: string; port: number },
    images: string,
  ): Promise<void> {
    if (!this.lazyPages)
      throw new FerryError('FERRY_E_CAPABILITY', 'this host cannot run post-copy restores', {
        phase: 'restore',
      });
    const daemon = this.lazyPages({ ...lazy, imagesDir: images });
    this.daemons.set(id, daemon);
    void daemon.done.then((r) => {
      if (this.daemons.get(id) === daemon) this.daemonsEnded.set(id, r);
    });
    this.pageResults.set(
      id,
      daemon.done.then((r) =>
        r.code === 0
          ? { ok: true, message: `all pages arrived in ${r.ms} ms` }
          : {
              ok: false,
              message: `criu lazy-pages on ${this.host.hostName} ended with ${r.signal ?? `exit ${r.code}`}`,
            },
      ),
    );
    void daemon.done.then(async (r) => {
      if (r.code === 0) {
        this.log.info({ migration: id, ms: r.ms }, 'post-copy: all pages arrived');
        return;
      }
      if (this.aborted.has(id)) return;
      // pages that never arrive would read as zeroes once the fault handler is gone: stop the container
      // rather than let it run on corrupted memory
      this.log.error(
        { migration: id, code: r.code, signal: r.signal, container: name },
        'post-copy failed: stopping the container',
      );
      await this.host.runc.kill(name, 'KILL');
    });
    // runc restore finds the daemon through its socket in the work directory
    const deadline = Date.now() + 5000;
    for (;;) {
      try {
        await access(join(images, 'lazy-pages.socket'));
        return;
      } catch {
        const exited = await Promise.race([
          daemon.done,
          new Promise<undefined>((r) => setTimeout(() => r(undefined), 5)),
        ]);
        if (exited)
          throw new FerryError(
            'FERRY_E_RESTORE_FAILED',
            `criu lazy-pages exited: ${exited.stderr.trim() || exited.code}`,
            { phase: 'restore' },
          );
        if (Date.now() > deadline)
          throw new FerryError('FERRY_E_RESTORE_FAILED', 'criu lazy-pages did not start', {
            phase: 'restore',
          });
      }
    }
  }

  /** Post-copy: resolves once the lazy-pages daemon of a migration is done, with whether every page arrived. */
  async pagesResult(id: string): Promise<{ ok: boolean; message: string }> {
    const p = this.pageResults.get(id);
    if (!p)
      throw new FerryError(
        'FERRY_E_MIGRATION_UNKNOWN',
        `no post-copy migration ${id} on host ${this.host.hostName}`,
      );
    const r = await p;
    this.pageResults.delete(id);
    return r;
  }

  async commit(id: string): Promise<void> {
    const rec = await this.load(id);
    if (rec.state !== 'restored') {
      throw new FerryError('FERRY_E_INPUT_REQUEST', `migration ${id} is ${rec.state}, cannot commit`);
    }
    const daemon = this.daemons.get(id);
    if (daemon) {
      // post-copy: the daemon still reads the images while pages stream in; clean up after it
      this.daemons.delete(id);
      this.lazyStarts.delete(id);
      this.daemonsEnded.delete(id);
      void daemon.done.then(() => rm(imageDir(this.host.paths, id), { recursive: true, force: true }));
    } else {
      await rm(imageDir(this.host.paths, id), { recursive: true, force: true });
    }
    await rm(this.recordPath(id), { force: true });
    this.records.delete(id);
    this.reserved.delete(rec.name);
    this.log.info({ container: rec.name, migration: id }, 'incoming migration committed');
  }

  /** Removes everything this migration created here, including a restored container. Idempotent. */
  async abort(id: string): Promise<void> {
    let rec: IncomingRecord;
    try {
      rec = await this.load(id);
    } catch {
      return;
    }
    this.aborted.add(id);
    await this.blockStores.get(id)?.close();
    this.blockStores.delete(id);
    await this.lazyStarts.get(id)?.catch(() => {}); // a daemon being started is killed too
    this.daemons.get(id)?.kill('SIGKILL');
    this.daemons.delete(id);
    this.lazyStarts.delete(id);
    this.daemonsEnded.delete(id);
    await this.host.runc.destroy(rec.name);
    await this.host.network.destroy(rec.name, identity(rec.record)).catch(() => {});
    await rm(containerDir(this.host.paths, rec.name), { recursive: true, force: true });
    await rm(imageDir(this.host.paths, id), { recursive: true, force: true });
    await rm(this.recordPath(id), { force: true });
    this.records.delete(id);
    this.reserved.delete(rec.name);
    this.log.warn({ container: rec.name, migration: id, state: rec.state }, 'incoming migration aborted');
  }

  /** At agent start: nothing uncommitted survives a restart (the source has rolled back or will). */
  async recover(): Promise<string[]> {
    let files: string[] = [];
    try {
      files = await readdir(this.host.paths.incomingDir);
    } catch {
      return [];
    }
    const aborted: string[] = [];
    for (const f of files) {
      if (f.endsWith('.tmp')) await rm(join(this.host.paths.incomingDir, f), { force: true });
      if (!f.endsWith('.json')) continue;
      const id = f.slice(0, -5);
      await this.abort(id);
      aborted.push(id);
    }
    return aborted;
  }

  private async keepLog(id: string, dir: string, file: string): Promise<void> {
    try {
      await mkdir(this.host.paths.logsDir, { recursive: true });
      await writeFile(join(this.host.paths.logsDir, `${id}-${file}`), await readFile(join(dir, file)));
    } catch {
      // no log to keep
    }
  }
}
