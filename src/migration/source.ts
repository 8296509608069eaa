// The source half and the engine's loop: plan -> prepare -> checkpoint -> transfer -> restore -> confirm -> cleanup,
// with a defined rollback for every phase before the destination is confirmed.
// Over 400 lines until the strategies move into migration/strategies/ (one file each, phase runner and rollback
// apart); until then the strategy-specific steps are the private methods below.
import { randomBytes, randomInt } from 'node:crypto';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { asFerryError, type ErrorCode, FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { type ContainerHost, identity } from '../host/containers.ts';
import { bundleDir, imageDir } from '../host/paths.ts';
import { readStats } from '../images/stats.ts';
import type { LazyDump } from '../runtime/runc.ts';
import { PageDelta, pageImages, writeFiles, writeRecipes } from '../transport/block-store.ts';
import { encodeTree } from '../transport/image-stream/index.ts';
import { type FileRange, planRanges, readRange } from '../transport/ranges.ts';
import { GrowingFiles } from '../transport/tail.ts';
import { snapshotTree, type TreeSnapshot, treeChanges } from '../transport/tree-diff.ts';
import type { StrategyName } from './capabilities.ts';
import { DEFAULT_MAX_DOWNTIME_MS, linkRateMatters, planStrategy } from './plan.ts';
import type {
  CapabilitiesReport,
  DestinationPeer,
  MigrationEvent,
  MigrationPhase,
  MigrationReport,
  MigrationRequest,
} from './types.ts';

const PHASE_ERROR: Record<MigrationPhase, ErrorCode> = {
  plan: 'FERRY_E_PLAN_STRATEGY',
  prepare: 'FERRY_E_HOST_UNREACHABLE',
  rounds: 'FERRY_E_CHECKPOINT_FAILED',
  checkpoint: 'FERRY_E_CHECKPOINT_FAILED',
  transfer: 'FERRY_E_TRANSFER_FAILED',
  restore: 'FERRY_E_RESTORE_FAILED',
  confirm: 'FERRY_E_CONFIRM_FAILED',
  pages: 'FERRY_E_POSTCOPY_FAILED',
  cleanup: 'FERRY_E_INTERNAL',
};

/** What post-copy needs on the source: where its page server listens, a fence around it, a way to fail it. */
/** `--compress auto` turns zstd on below this measured link rate (zstd level 1 runs at several hundred MB/s). */
const COMPRESS_BELOW_BYTES_PER_S = 100e6;
/**
 * Parallel connections for large image files: each is a TLS stream hashed and written by one core, so they pay off
 * with cores to spare; on a 2-core host (this testbed: both agents share them) they only add overhead (measured:
 * 256 MiB in ~900 ms with 4 ranges vs ~820 ms with one stream).
 */
const DEFAULT_STREAMS = Math.min(4, Math.max(1, cpus().length - 1));

export interface PostcopyDeps {
  pageServerAddress: string;
  fence: {
    open(port: number, allow: string): Promise<void>;
    close(port: number, allow: string): Promise<void>;
  };
  /** Makes this host's page server on `port` fail (a connection reset): CRIU then releases the tasks alive. */
  failPageServer(port: number): Promise<void>;
}

export interface SourceDeps {
  host: ContainerHost;
  log: Logger;
  capabilities: () => Promise<CapabilitiesReport>;
  postcopy?: PostcopyDeps;
  now?: () => number;
}

/** What has happened so far; rollback reads it to know what to undo. */
interface Progress {
  phase: MigrationPhase;
  prepared: boolean;
  sourceStopped: boolean;
  /** The source's identity was cut off the LAN after the dump. */
  detached: boolean;
  /** Traffic to the source's address is being dropped (host mode, around the dump). */
  quiesced: boolean;
  restoreRequested: boolean;
  freezeStart?: number;
  /** Post-copy: the running lazy dump (CRIU serving pages) and the fenced port. */
  lazy?: LazyDump;
  fence?: { port: number; allow: string };
  /** Cold: page images being sent while CRIU writes them. */
  tail?: GrowingFiles;
}

/** One range of an image file to the destination, zero pages skipped; both sides' CRC-32 must agree. */
async function sendFileRange(
  peer: DestinationPeer,
  id: string,
  dir: string,
  r: FileRange,
  onBytes?: (n: number) => void,
): Promise<{ bytes: number; zeroBytes: number }> {
  const { body, meter, zeroBytes } = readRange(join(dir, r.file), r, {
    sparse: true,
    ...(onBytes ? { onBytes } : {}),
  });
  const got = await peer.sendRange(id, r, body, { sparse: true }).catch((err: unknown) => {
    body.destroy();
    throw err;
  });
  if (got.bytes !== meter.bytes || got.crc !== meter.crc >>> 0) {
    throw new FerryError(
      'FERRY_E_TRANSFER_CORRUPT',
      `${r.file} at ${r.offset}: the destination got other bytes than were sent`,
      { phase: 'transfer' },
    );
  }
  return { bytes: r.length, zeroBytes: zeroBytes() };
}

async function treeSize(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(join(e.parentPath, e.name))).size;
  }
  return total;
}

export class MigrationSource {
  private readonly host: ContainerHost;
  private readonly log: Logger;
  private readonly capabilities: () => Promise<CapabilitiesReport>;
  private readonly now: () => number;
  private readonly postcopy: PostcopyDeps | undefined;
  /** Transfer rates measured by earlier migrations, by destination. */
  private readonly rates = new Map<string, number>();

  constructor(deps: SourceDeps) {
    this.host = deps.host;
    this.postcopy = deps.postcopy;
    this.log = deps.log;
    this.capabilities = deps.capabilities;
    this.now = deps.now ?? (() => performance.now());
  }

  async migrate(
    req: MigrationRequest,
    peer: DestinationPeer,
    emit: (e: MigrationEvent) => void,
  ): Promise<MigrationReport> {
    const id = `m${randomBytes(6).toString('hex')}`;
    const started = this.now();
    const report: MigrationReport = {
      ok: false,
      id,
      container: req.name,
      from: this.host.hostName,
      to: req.to,
      strategy: req.strategy === 'auto' ? 'cold' : req.strategy,
      phases: [],
      freezeMs: 0,
      rounds: [],
      bytesSent: 0,
      totalMs: 0,
      criu: {},
    };
    const progress: Progress = {
      phase: 'plan',
      prepared: false,
      sourceStopped: false,
      detached: false,
      quiesced: false,
      restoreRequested: false,
    };
    const phase = async <T>(name: MigrationPhase, fn: () => Promise<T>): Promise<T> => {
      progress.phase = name;
      const t0 = this.now();
      emit({ type: 'phase', phase: name, state: 'start' });
      try {
        const out = await fn();
        const ms = Math.round(this.now() - t0);
        report.phases.push({ name, ms });
        emit({ type: 'phase', phase: name, state: 'end', ms });
        return out;
      } catch (err) {
        const ms = Math.round(this.now() - t0);
        report.phases.push({ name, ms });
        emit({ type: 'phase', phase: name, state: 'fail', ms });
        throw err;
      }
    };

    try {
      await this.host.exclusive(req.name, 'migration', async () => {
        try {
          await this.run(req, id, peer, report, progress, phase, emit);
        } catch (err) {
          const cause = asFerryError(err, PHASE_ERROR[progress.phase], progress.phase);
          if (progress.phase === 'plan') {
            // nothing was touched yet: the cause is the whole story
            report.error = { ...cause.toJSON(), phase: 'plan' };
            return;
          }
          const rb = await this.rollback(req.name, id, peer, progress);
          report.rollback = rb;
          const state = rb.sourceRunning
            ? `rolled back: ${req.name} is running on ${this.host.hostName}`
            : `ROLLBACK FAILED: ${rb.note ?? 'see the agent log'}`;
          const error = new FerryError(
            rb.sourceRunning ? cause.code : 'FERRY_E_ROLLBACK_FAILED',
            `migration of ${req.name} to ${req.to} failed in phase ${progress.phase}: ${cause.message}; ${state}`,
            { phase: progress.phase, cause, ...(cause.details ? { details: cause.details } : {}) },
          );
          report.error = error.toJSON();
        }
      });
    } catch (err) {
      // the container was busy or unknown before anything started
      report.error = asFerryError(err, 'FERRY_E_INTERNAL', 'plan').toJSON();
    }
    report.totalMs = Math.round(this.now() - started);
    this.log.info({ report }, report.ok ? 'migration done' : 'migration failed');
    return report;
  }

  private async run(
    req: MigrationRequest,
    id: string,
    peer: DestinationPeer,
    report: MigrationReport,
    progress: Progress,
    phase: <T>(name: MigrationPhase, fn: () => Promise<T>) => Promise<T>,
    emit: (e: MigrationEvent) => void,
  ): Promise<void> {
    const name = req.name;
    const images = imageDir(this.host.paths, id);
    const bundle = bundleDir(this.host.paths, name);

    const strategy: StrategyName = await phase('plan', async () => {
      if (req.to === this.host.hostName) {
        throw new FerryError('FERRY_E_HOST_SAME', `${name} is already on ${req.to}`, { phase: 'plan' });
      }
      await this.host.info(name);
      const st = await this.host.runc.state(name);
      if (st?.status !== 'running') {
        throw new FerryError(
          'FERRY_E_CONTAINER_NOT_RUNNING',
          `container ${name} is ${st?.status ?? 'stopped'}, not running`,
          {
            phase: 'plan',
          },
        );
      }
      const [local, remote] = await Promise.all([this.capabilities(), peer.capabilities()]);
      const memoryBytes = await this.host.memoryBytes(name);
      report.memoryBytes = memoryBytes;
      let rate = this.rates.get(peer.name);
      let dirtyRate: number | undefined;
      let dirtyHotBytes: number | undefined;
      if (req.strategy === 'auto' && memoryBytes >= 8 << 20) {
        // before anything is frozen: what the link to this destination carries now, and how fast the container
        // touches its memory (both take a fraction of a second, side by side)
        // The link is measured only when its rate can change the plan: sending megabytes queues behind them
        // every other packet on the link, the container's clients' included, and their retransmission timers
        // remember it (docs/benchmarks.md).
        const measure =
          rate === undefined &&
          linkRateMatters({
            memoryBytes,
            maxDowntimeMs: req.maxDowntimeMs ?? DEFAULT_MAX_DOWNTIME_MS,
            source: local.strategies,
            destination: remote.strategies,
          });
        const [measured, touch] = await Promise.all([
          measure ? peer.measureRate(4 << 20).catch(() => undefined) : Promise.resolve(rate),
          this.host.touchRate(name).catch(() => undefined),
        ]);
        rate = measured;
        if (rate) report.linkRate = Math.round(rate);
        if (touch) {
          dirtyRate = report.dirtyRate = touch.bytesPerSec;
          dirtyHotBytes = report.dirtyHotBytes = touch.hotBytes;
        }
      }
      const plan = planStrategy({
        requested: req.strategy,
        memoryBytes,
        ...(req.maxDowntimeMs !== undefined ? { maxDowntimeMs: req.maxDowntimeMs } : {}),
        ...(rate ? { transferRate: rate } : {}),
        ...(dirtyRate !== undefined ? { dirtyRate } : {}),
        ...(dirtyHotBytes !== undefined ? { dirtyHotBytes } : {}),
        source: local.strategies,
        destination: remote.strategies,
        sourceHost: this.host.hostName,
        destinationHost: peer.name,
      });
      if (await peer.hasContainer(name)) {
        throw new FerryError(
          'FERRY_E_CONTAINER_EXISTS',
          `host ${peer.name} already has a container named ${name}`,
          {
            phase: 'plan',
          },
        );
      }
      report.strategyReason = plan.reason;
      return plan.strategy;
    });
    report.strategy = strategy;

    const record = await this.host.readRecord(name);
    if (!record)
      throw new FerryError('FERRY_E_CONTAINER_UNKNOWN', `container ${name} vanished`, { phase: 'prepare' });
    let bundleBefore: TreeSnapshot = new Map();
    const compress =
      req.compress === 'on' ||
      (req.compress !== 'off' &&
        report.linkRate !== undefined &&
        report.linkRate < COMPRESS_BELOW_BYTES_PER_S);
    if (compress) report.compressed = true;
    const streams = compress ? 1 : (req.streams ?? DEFAULT_STREAMS);
    await phase('prepare', async () => {
      await mkdir(images, { recursive: true, mode: 0o700 });
      // staged before any freeze: the container's ARP cache goes to its new namespace with the identity
      const neighbours = await this.host.network.neighbours(name, identity(record)).catch(() => []);
      // post-copy: the page server's port is fenced now, and the destination starts its lazy-pages daemon
      const lazy =
        strategy === 'postcopy' || strategy === 'hybrid'
          ? await this.openPageServer(req, progress)
          : undefined;
      await peer.prepare({
        id,
        name,
        from: this.host.hostName,
        record,
        neighbours,
        ...(lazy ? { lazy } : {}),
      });
      progress.prepared = true;
      // the bundle goes now, while the container runs; after the final dump only what changed follows
      bundleBefore = await snapshotTree(bundle);
      const pre = await peer.send(id, 'bundle', encodeTree([{ root: bundle, prefix: '' }]));
      report.bundlePrestagedBytes = pre.bytes;
      // connections for the transfer's parallel requests (bundle, images, ranges), opened before the freeze
      await peer.warm?.(2 + streams).catch(() => {});
    });

    const net = identity(record);
    // pre-copy: soft-dirty pre-dump rounds where this kernel tracks dirty memory, content delta where it does not
    const softDirty =
      strategy === 'hybrid' ||
      (strategy === 'precopy' && (await this.capabilities()).facts.features['mem_dirty_track']?.ok === true);
    const delta = strategy === 'precopy' && !softDirty ? new PageDelta() : undefined;
    let parentRound: string | undefined;
    if (delta)
      await phase('rounds', () =>
        this.precopyRounds(req, id, images, net.mode !== 'none', delta, peer, report, emit),
      );
    if (softDirty)
      parentRound = await phase('rounds', () => this.preDumpRounds(req, id, images, peer, report, emit));
    // cold: page images go out while CRIU writes them (ranges, uncompressed: not when the link wants zstd)
    const ranged = { bytes: 0, zeroBytes: 0, early: 0 };
    const sendRangeNow = async (r: FileRange, onBytes?: (n: number) => void) => {
      const got = await sendFileRange(peer, id, images, r, onBytes);
      ranged.bytes += got.bytes;
      ranged.zeroBytes += got.zeroBytes;
    };
    let tail: GrowingFiles | undefined;
    let detaching: Promise<void> = Promise.resolve();
    let tailStart: number | undefined;
    await phase('checkpoint', async () => {
      progress.quiesced = true;
      progress.freezeStart = this.now();
      try {
        // the lock and the pause together (packets that arrive in between wait in the socket queues CRIU dumps);
        // frozen by us first, CRIU then skips its 100 ms freezer poll
        // (both settle before a failure is reported: rollback must not race a lock or a pause still landing)
        const settled = await Promise.allSettled([
          this.host.network.quiesce(name, net),
          this.host.runc.pause(name),
        ]);
        for (const s of settled) if (s.status === 'rejected') throw s.reason;
        if (strategy === 'postcopy' || strategy === 'hybrid') {
          progress.lazy = await this.lazyDump(name, images, net.mode !== 'none', progress, parentRound);
        } else {
          if (!delta && !parentRound && !compress) {
            tail = new GrowingFiles(images, (r) => sendRangeNow(r), { parallel: streams });
            progress.tail = tail;
            tailStart = this.now();
            tail.start();
          }
          try {
            await this.host.runc.checkpoint(name, {
              imagePath: images,
              workPath: images,
              tcpEstablished: net.mode !== 'none',
              ...(parentRound ? { parentPath: parentRound } : {}),
            });
          } catch (err) {
            await tail?.stop();
            throw err;
          }
          ranged.early = tail?.bytes ?? 0;
        }
      } finally {
        // CRIU stops the container only on success; after a failed dump it is still there, paused or running,
        // and rollback resumes it
        // (a post-copy dump leaves the tasks seized by CRIU, which serves their pages: stopped, whatever runc says)
        const st = progress.lazy ? undefined : (await this.host.runc.state(name))?.status;
        progress.sourceStopped = progress.lazy !== undefined || (st !== 'running' && st !== 'paused');
      }
      if (progress.sourceStopped) {
        // cut off beside the transfer (the destination attaches only at the restore, which waits for this)
        progress.detached = true;
        detaching = this.host.network.detach(name, net);
        detaching.catch(() => {});
      }
      const stats = await readStats(join(images, 'stats-dump'));
      if (stats?.dump) report.criu.dump = stats.dump;
    });

    await phase('transfer', async () => {
      const t0 = this.now();
      // cold: the page images went out while CRIU wrote them; now the rest of them
      const tailed = new Set(tail ? await tail.finish() : []);
      const total = await treeSize(images);
      let sent = ranged.bytes;
      let lastEmit = 0;
      const onBytes = (n: number) => {
        sent += n;
        const t = this.now();
        if (t - lastEmit > 100) {
          lastEmit = t;
          emit({ type: 'progress', phase: 'transfer', bytes: sent, total });
        }
      };
      // pre-copy: only pages the destination lacks; the page images travel as recipes. The page images stay
      // here until the destination runs the container: a rollback restores the source from them.
      const recipeOnly = new Set<string>();
      let deltaBlockBytes = 0;
      if (delta) {
        const files = await pageImages(images);
        const d = delta.delta(images, files);
        await peer.sendBlocks(id, d.blocks);
        const recipeBytes = await writeFiles(images, delta.encodeRecipes(await d.recipes));
        for (const f of files) recipeOnly.add(f);
        // what the switchover carries: the pages the destination lacked and the recipes (diffs where smaller)
        report.precopy!.switchoverBytes = d.newBytes() + recipeBytes;
        report.precopy!.changedPages = delta.changedPages;
        deltaBlockBytes = d.newBytes();
        sent += d.newBytes();
      }
      const isLog = (rel: string) => rel.endsWith('.log');
      // large image files go in ranges over parallel connections; the rest in the framed stream
      const ranges =
        streams > 1
          ? await planRanges(
              images,
              (await readdir(images)).filter((f) => !isLog(f) && !recipeOnly.has(f) && !tailed.has(f)),
              streams,
            )
          : [];
      const inRanges = new Set([...ranges.map((r) => r.file), ...tailed]);
      report.streams = (tailed.size > 0 ? streams : Math.max(1, ranges.length)) + 1;
      let zeroBytes = 0;
      const onZeroes = (n: number) => {
        zeroBytes += n;
      };
      // the bundle: what changed since it was sent at prepare (a writable rootfs the container wrote to)
      const { removals, unchanged } = treeChanges(bundleBefore, await snapshotTree(bundle));
      const [b, i] = await Promise.all([
        peer.send(
          id,
          'bundle',
          encodeTree([{ root: bundle, prefix: '' }], {
            onBytes,
            onZeroes,
            removals,
            exclude: (rel) => unchanged.has(rel),
          }),
          { compress, update: true },
        ),
        // (pre-dump rounds went already, into round-N directories the final images point at)
        peer.send(
          id,
          'images',
          encodeTree([{ root: images, prefix: '' }], {
            onBytes,
            onZeroes,
            exclude: (rel) =>
              isLog(rel) || /^round-\d+$/.test(rel) || inRanges.has(rel) || recipeOnly.has(rel),
          }),
          { compress },
        ),
        ...ranges.map((r) => sendRangeNow(r, onBytes)),
      ]);
      emit({ type: 'progress', phase: 'transfer', bytes: sent, total });
      zeroBytes += ranged.zeroBytes;
      // zero pages count as skipped, not sent
      report.bytesSent = b.bytes + i.bytes + ranged.bytes + deltaBlockBytes - zeroBytes;
      if (zeroBytes > 0) report.zeroBytesSkipped = zeroBytes;
      if (tailed.size > 0) report.streamedDuringDump = ranged.early;
      const ms = Math.round(this.now() - t0);
      report.rounds.push({ bytes: report.bytesSent, ms });
      // a large transfer measures the link (and both agents) well enough for the next plan; what went during
      // the dump counts with the dump's time (when CRIU was slower than the link, this underestimates it)
      const rateMs = tailStart !== undefined ? Math.round(this.now() - tailStart) : ms;
      if (report.bytesSent >= 16 << 20 && rateMs > 0)
        this.rates.set(peer.name, (report.bytesSent / rateMs) * 1000);
    });

    await phase('restore', async () => {
      await detaching;
      progress.restoreRequested = true;
      const lazy =
        progress.fence && this.postcopy
          ? { address: this.postcopy.pageServerAddress, port: progress.fence.port }
          : undefined;
      const r = await peer.restore(id, { neighbours: [], ...(lazy ? { lazy } : {}) });
      if (r.stats) report.criu.restore = r.stats;
    });
    const restoredAt = this.now();
    // the freeze ends when the destination reports the restored container running (it checked runc's state)
    const freezeMs = Math.round(restoredAt - (progress.freezeStart ?? restoredAt));

    await phase('confirm', async () => {
      if (!(await peer.hasContainer(name))) {
        throw new FerryError('FERRY_E_CONFIRM_FAILED', `${peer.name} does not report ${name} after restore`, {
          phase: 'confirm',
        });
      }
      await peer.commit(id);
      report.freezeMs = freezeMs;
    });
    report.ok = true;

    if (progress.lazy) {
      // past the point of no return: the container runs on the destination; its memory still streams from here
      const lazy = progress.lazy;
      await phase('pages', async () => {
        const [r, dest] = await Promise.all([
          lazy.done,
          peer
            .pagesResult(id)
            .catch((err: Error) => ({ ok: false, message: `destination unreachable: ${err.message}` })),
        ]);
        if (progress.fence) await this.postcopy?.fence.close(progress.fence.port, progress.fence.allow);
        if (r.code !== 0 || !dest.ok) {
          lazy.kill();
          report.ok = false;
          report.error = new FerryError(
            'FERRY_E_POSTCOPY_FAILED',
            `post-copy of ${name} to ${req.to}: not every page arrived (${dest.ok ? `page server ended with ${r.signal ?? `exit ${r.code}`}` : dest.message}); ` +
              `the container was restored on ${req.to} with its memory split between hosts and must be considered lost`,
            { phase: 'pages' },
          ).toJSON();
          return;
        }
        report.postcopy = {
          lastPageMs: Math.round(this.now() - restoredAt),
          pageServer: `${this.postcopy?.pageServerAddress}:${progress.fence?.port}`,
        };
      }).catch(() => {});
    }

    await phase('cleanup', async () => {
      try {
        await this.host.forget(name);
        await rm(images, { recursive: true, force: true });
      } catch (err) {
        // the container runs on the destination; leftovers here are reported, not fatal
        this.log.warn({ err, container: name }, 'source cleanup incomplete');
        emit({ type: 'info', message: `source cleanup incomplete: ${(err as Error).message}` });
      }
    });
  }

  /**
   * Pre-copy rounds (content delta): dump while the container keeps running (each dump still freezes it for as
   * long as CRIU reads its memory; this kernel has no soft-dirty tracking), send the pages the destination lacks.
   * Stops when what is left fits the downtime budget at the measured rate (QEMU's rule; --threshold overrides the
   * budget), when it stops shrinking, or after --max-rounds.
   */
  private async precopyRounds(
    req: MigrationRequest,
    id: string,
    images: string,
    tcpEstablished: boolean,
    delta: PageDelta,
    peer: DestinationPeer,
    report: MigrationReport,
    emit: (e: MigrationEvent) => void,
  ): Promise<void> {
    const maxRounds = req.maxRounds ?? 5;
    const budgetMs = req.maxDowntimeMs ?? 500;
    const roundBytes: number[] = [];
    let stop = `--max-rounds ${maxRounds} reached`;
    for (let r = 1; r <= maxRounds; r++) {
      const dir = join(images, `round-${r}`);
      await mkdir(dir, { recursive: true });
      const t0 = this.now();
      try {
        await this.host.runc.pause(req.name);
        await this.host.runc.checkpoint(req.name, {
          imagePath: dir,
          workPath: dir,
          leaveRunning: true,
          tcpEstablished,
        });
      } finally {
        await this.host.runc.resume(req.name).catch(() => {});
      }
      const dumpMs = this.now() - t0;
      const d = delta.delta(dir, await pageImages(dir));
      const t1 = this.now();
      await peer.sendBlocks(id, d.blocks);
      const sendMs = Math.max(1, this.now() - t1);
      const bytes = d.newBytes();
      await rm(dir, { recursive: true, force: true });
      // the round's recipes go too (while the container runs): the final dump's recipes are then sent as diffs
      const recipes = await d.recipes;
      const recipeDir = join(images, `recipes-${r}`);
      await mkdir(recipeDir, { recursive: true });
      await writeRecipes(recipeDir, recipes);
      await peer.send(id, 'images', encodeTree([{ root: recipeDir, prefix: `recipes-${r}` }]));
      await rm(recipeDir, { recursive: true, force: true });
      delta.remember(r, recipes);
      roundBytes.push(bytes);
      report.rounds.push({ bytes, ms: Math.round(this.now() - t0) });
      emit({
        type: 'info',
        message: `round ${r}: ${bytes} new bytes (dump ${Math.round(dumpMs)} ms, send ${Math.round(sendMs)} ms)`,
      });
      const rate = Math.max(bytes / sendMs, 50_000); // bytes per ms
      const budget = req.thresholdBytes ?? rate * budgetMs;
      if (bytes <= budget) {
        stop =
          req.thresholdBytes !== undefined
            ? `round ${r}: ${bytes} bytes <= --threshold`
            : `round ${r}: ${bytes} bytes fit the ${budgetMs} ms budget`;
        break;
      }
      const prev = roundBytes[roundBytes.length - 2];
      if (prev !== undefined && bytes > prev * 0.9) {
        stop = `round ${r}: the dirty set stopped shrinking (${prev} -> ${bytes} bytes)`;
        break;
      }
    }
    report.precopy = { stop, roundBytes, switchoverBytes: 0, distinctPages: delta.distinctPages };
  }

  /**
   * Pre-copy where the kernel tracks dirty memory (soft-dirty): `runc checkpoint --pre-dump` rounds, each chained
   * to the previous with --parent-path and streamed to the destination into round-N; the final dump then holds
   * only what changed since the last round. Same stop rule as the content delta. Returns the last round's
   * directory, relative to the images directory (the final dump's parent).
   */
  private async preDumpRounds(
    req: MigrationRequest,
    id: string,
    images: string,
    peer: DestinationPeer,
    report: MigrationReport,
    emit: (e: MigrationEvent) => void,
  ): Promise<string | undefined> {
    const maxRounds = req.maxRounds ?? 5;
    const budgetMs = req.maxDowntimeMs ?? 500;
    const roundBytes: number[] = [];
    let stop = `--max-rounds ${maxRounds} reached`;
    let last: string | undefined;
    for (let r = 1; r <= maxRounds; r++) {
      const name = `round-${r}`;
      const dir = join(images, name);
      await mkdir(dir, { recursive: true });
      const t0 = this.now();
      await this.host.runc.checkpoint(req.name, {
        imagePath: dir,
        workPath: dir,
        preDump: true,
        ...(last ? { parentPath: `../${last}` } : {}),
      });
      let bytes = 0;
      for (const f of await pageImages(dir)) bytes += (await stat(join(dir, f))).size;
      const t1 = this.now();
      await peer.send(
        id,
        'images',
        encodeTree([{ root: dir, prefix: name }], { exclude: (rel) => rel.endsWith('.log') }),
      );
      const sendMs = Math.max(1, this.now() - t1);
      last = name;
      roundBytes.push(bytes);
      report.rounds.push({ bytes, ms: Math.round(this.now() - t0) });
      emit({ type: 'info', message: `pre-dump round ${r}: ${bytes} bytes` });
      const budget = req.thresholdBytes ?? Math.max(bytes / sendMs, 50_000) * budgetMs;
      if (bytes <= budget) {
        stop = `round ${r}: ${bytes} bytes fit the budget`;
        break;
      }
      const prev = roundBytes[roundBytes.length - 2];
      if (prev !== undefined && bytes > prev * 0.9) {
        stop = `round ${r}: the dirty set stopped shrinking (${prev} -> ${bytes} bytes)`;
        break;
      }
    }
    report.precopy = { stop, roundBytes, switchoverBytes: 0, distinctPages: 0 };
    return last;
  }

  /** Post-copy: picks the page server's port and lets only the destination reach it, before any freeze. */
  private async openPageServer(
    req: MigrationRequest,
    progress: Progress,
  ): Promise<{ address: string; port: number }> {
    const pc = this.postcopy;
    if (!pc || !req.toAddress) {
      throw new FerryError('FERRY_E_PLAN_STRATEGY', 'post-copy needs the page server address of both hosts', {
        phase: 'prepare',
      });
    }
    const port = 27000 + randomInt(1000);
    await pc.fence.open(port, req.toAddress);
    progress.fence = { port, allow: req.toAddress };
    return { address: pc.pageServerAddress, port };
  }

  /** Post-copy dump: everything but memory is written; CRIU keeps serving pages from a fenced port. */
  private async lazyDump(
    name: string,
    images: string,
    tcpEstablished: boolean,
    progress: Progress,
    parentPath?: string,
  ): Promise<LazyDump> {
    const pc = this.postcopy;
    if (!pc || !progress.fence) {
      throw new FerryError('FERRY_E_PLAN_STRATEGY', 'post-copy needs the page server address of both hosts', {
        phase: 'checkpoint',
      });
    }
    const port = progress.fence.port;
    const lazy = this.host.runc.checkpointLazy(name, {
      imagePath: images,
      workPath: images,
      pageServer: `${pc.pageServerAddress}:${port}`,
      tcpEstablished,
      ...(parentPath ? { parentPath } : {}),
    });
    try {
      await lazy.ready;
    } catch (err) {
      lazy.kill();
      throw err;
    }
    return lazy;
  }

  private async rollback(
    name: string,
    id: string,
    peer: DestinationPeer,
    progress: Progress,
  ): Promise<{ sourceRunning: boolean; destinationCleaned: boolean; note?: string }> {
    const notes: string[] = [];
    await progress.tail?.stop();
    let destinationCleaned = !progress.prepared;
    // destination first: two copies must never run at once
    if (progress.prepared) {
      for (let attempt = 0; attempt < 3 && !destinationCleaned; attempt++) {
        try {
          await peer.abort(id);
          destinationCleaned = true;
        } catch (err) {
          if (attempt === 2) notes.push(`destination ${peer.name} not cleaned: ${(err as Error).message}`);
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      if (!destinationCleaned && progress.restoreRequested) {
        notes.push(`${peer.name} drops its uncommitted copy when its agent restarts`);
      }
    }
    const images = imageDir(this.host.paths, id);
    const rec = await this.host.readRecord(name);
    const net = rec ? identity(rec) : { mode: 'none' as const };
    if (progress.detached) {
      await this.host.network
        .attach(name, net)
        .catch((err: Error) => notes.push(`re-attaching the network failed: ${err.message}`));
    }
    let sourceRunning = false;
    if (progress.lazy && progress.fence && this.postcopy) {
      // post-copy: CRIU still holds the tasks, serving their pages. Failing its page server makes it let go of
      // them as they were (paused, sockets out of repair mode); finishing it cleanly would kill them.
      await this.postcopy.failPageServer(progress.fence.port).catch(() => {});
      const ended = await Promise.race([
        progress.lazy.done,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 10_000)),
      ]);
      if (!ended) {
        progress.lazy.kill();
        notes.push('the page server did not let go of the container within 10 s and was killed');
      }
    }
    const st = await this.host.runc.state(name);
    if (st?.status === 'running') {
      sourceRunning = true;
      if (progress.quiesced) await this.host.network.unlock(name, net).catch(() => {});
    } else if (st?.status === 'paused') {
      await this.host.runc.resume(name).catch(() => {});
      sourceRunning = (await this.host.runc.state(name))?.status === 'running';
      if (progress.quiesced) await this.host.network.unlock(name, net).catch(() => {});
      if (progress.detached) this.host.network.reannounce(name, net);
    } else if (progress.sourceStopped) {
      try {
        await this.host.runc.delete(name);
        await this.host.runc.restore(name, {
          bundle: bundleDir(this.host.paths, name),
          imagePath: images,
          workPath: images,
          tcpEstablished: net.mode !== 'none',
        });
        sourceRunning = (await this.host.runc.state(name))?.status === 'running';
        // the dump's lock held the client's packets; the restored sockets take over now
        await this.host.network.clearCriuLocks(name, net);
        if (progress.quiesced) await this.host.network.unlock(name, net);
        this.host.network.reannounce(name, net);
      } catch (err) {
        notes.push(`local restore failed: ${(err as Error).message}; images kept in ${images}`);
      }
    }
    if (progress.fence)
      await this.postcopy?.fence.close(progress.fence.port, progress.fence.allow).catch(() => {});
    if (sourceRunning) await rm(images, { recursive: true, force: true });
    this.log.warn(
      { container: name, migration: id, sourceRunning, destinationCleaned, notes },
      'migration rolled back',
    );
    const out: { sourceRunning: boolean; destinationCleaned: boolean; note?: string } = {
      sourceRunning,
      destinationCleaned,
    };
    if (notes.length) out.note = notes.join('; ');
    return out;
  }
}
