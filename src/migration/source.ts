// The source half and the engine's loop: plan -> prepare -> [rounds] -> checkpoint -> transfer -> restore -> confirm
// -> [pages] -> cleanup, with a defined rollback for every phase before the destination is confirmed. What differs
// between strategies is in strategies/; this loop runs the phases every strategy shares.
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { asFerryError, FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { type ContainerHost, identity } from '../host/containers.ts';
import { bundleDir, imageDir } from '../host/paths.ts';
import { readStats } from '../images/stats.ts';
import { encodeTree } from '../transport/image-stream/index.ts';
import { snapshotTree } from '../transport/tree-diff.ts';
import { resolveOptions } from './defaults.ts';
import { ImageSender } from './image-sender.ts';
import { newReport, PHASE_ERROR, PhaseRunner } from './phases.ts';
import { planMigration } from './plan-phase.ts';
import { rollback } from './rollback.ts';
import type { PostcopyDeps } from './strategies/postcopy.ts';
import { createStrategy } from './strategies/registry.ts';
import type { MigrationContext, Strategy } from './strategies/strategy.ts';
import { transferImages } from './transfer.ts';
import type {
  CapabilitiesReport,
  DestinationPeer,
  MigrationEvent,
  MigrationReport,
  MigrationRequest,
} from './types.ts';

export type { PostcopyDeps } from './strategies/postcopy.ts';

export interface SourceDeps {
  host: ContainerHost;
  log: Logger;
  capabilities: () => Promise<CapabilitiesReport>;
  postcopy?: PostcopyDeps;
  now?: () => number;
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
    const report = newReport(req, id, this.host.hostName);
    const runner = new PhaseRunner(report, emit, this.now);
    const { progress } = runner;
    // set once planned: rollback asks it what only the strategy knows to undo
    const chosen: { strategy?: Strategy } = {};
    try {
      await this.host.exclusive(req.name, 'migration', async () => {
        try {
          await this.run(req, id, peer, report, runner, emit, chosen);
        } catch (err) {
          const cause = asFerryError(err, PHASE_ERROR[progress.phase], progress.phase);
          if (progress.phase === 'plan') {
            // nothing was touched yet: the cause is the whole story
            report.error = { ...cause.toJSON(), phase: 'plan' };
            return;
          }
          const rb = await rollback(
            { host: this.host, log: this.log },
            { name: req.name, id, peer, progress, strategy: chosen.strategy },
          );
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
    runner: PhaseRunner,
    emit: (e: MigrationEvent) => void,
    chosen: { strategy?: Strategy },
  ): Promise<void> {
    const { progress } = runner;
    const name = req.name;
    const images = imageDir(this.host.paths, id);
    const bundle = bundleDir(this.host.paths, name);

    const planned = await runner.run('plan', () =>
      planMigration(
        { host: this.host, capabilities: this.capabilities },
        req,
        peer,
        report,
        this.rates.get(peer.name),
      ),
    );
    report.strategy = planned.strategy;
    const strategy = createStrategy(planned.strategy, { postcopy: this.postcopy }, planned.local);
    chosen.strategy = strategy;

    const record = await this.host.readRecord(name);
    if (!record)
      throw new FerryError('FERRY_E_CONTAINER_UNKNOWN', `container ${name} vanished`, { phase: 'prepare' });
    const net = identity(record);
    const options = resolveOptions(req, report.linkRate);
    if (options.compress) report.compressed = true;
    const ctx: MigrationContext = {
      req,
      id,
      name,
      images,
      options,
      tcpEstablished: net.mode !== 'none',
      host: this.host,
      peer,
      report,
      progress,
      sender: new ImageSender(peer, id, images),
      emit,
      now: this.now,
    };

    const bundleBefore = await runner.run('prepare', async () => {
      await mkdir(images, { recursive: true, mode: 0o700 });
      // staged before any freeze: the container's ARP cache goes to its new namespace with the identity
      const neighbours = await this.host.network.neighbours(name, net).catch(() => []);
      const staged = await strategy.prepare(ctx);
      await peer.prepare({ id, name, from: this.host.hostName, record, neighbours, ...staged });
      progress.prepared = true;
      // the bundle goes now, while the container runs; after the final dump only what changed follows
      const before = await snapshotTree(bundle);
      const pre = await peer.send(id, 'bundle', encodeTree([{ root: bundle, prefix: '' }]));
      report.bundlePrestagedBytes = pre.bytes;
      // connections for the transfer's parallel requests (bundle, images, ranges), opened before the freeze
      await peer.warm?.(2 + options.streams).catch(() => {});
      return before;
    });

    if (strategy.rounds) await runner.run('rounds', () => strategy.rounds!(ctx));

    let detaching: Promise<void> = Promise.resolve();
    await runner.run('checkpoint', async () => {
      progress.quiesced = true;
      progress.freezeStart = this.now();
      let seized = false;
      try {
        // the lock and the pause together (packets that arrive in between wait in the socket queues CRIU dumps);
        // frozen by us first, CRIU then skips its 100 ms freezer poll
        // (both settle before a failure is reported: rollback must not race a lock or a pause still landing)
        const settled = await Promise.allSettled([
          this.host.network.quiesce(name, net),
          this.host.runc.pause(name),
        ]);
        for (const s of settled) if (s.status === 'rejected') throw s.reason;
        seized = (await strategy.dump(ctx)).seized;
      } finally {
        // CRIU stops the container only on success; after a failed dump it is still there, paused or running,
        // and rollback resumes it (tasks CRIU seized are gone from here, whatever runc says)
        const st = seized ? undefined : (await this.host.runc.state(name))?.status;
        progress.sourceStopped = seized || (st !== 'running' && st !== 'paused');
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

    await runner.run('transfer', async () => {
      const t0 = this.now();
      const share = await strategy.transfer(ctx);
      const rate = await transferImages(ctx, share, { dir: bundle, before: bundleBefore }, t0);
      if (rate !== undefined) this.rates.set(peer.name, rate);
    });

    await runner.run('restore', async () => {
      await detaching;
      progress.restoreRequested = true;
      const r = await peer.restore(id, { neighbours: [], ...strategy.restoreOptions() });
      if (r.stats) report.criu.restore = r.stats;
    });
    const restoredAt = this.now();
    // the freeze ends when the destination reports the restored container running (it checked runc's state)
    const freezeMs = Math.round(restoredAt - (progress.freezeStart ?? restoredAt));

    await runner.run('confirm', async () => {
      if (!(await peer.hasContainer(name))) {
        throw new FerryError('FERRY_E_CONFIRM_FAILED', `${peer.name} does not report ${name} after restore`, {
          phase: 'confirm',
        });
      }
      await peer.commit(id);
      report.freezeMs = freezeMs;
    });
    report.ok = true;

    // past the point of no return: what the strategy still has to finish (post-copy: the last pages) is reported,
    // not rolled back
    if (strategy.afterConfirm) {
      await runner.run('pages', () => strategy.afterConfirm!(ctx, restoredAt)).catch(() => {});
    }

    await runner.run('cleanup', async () => {
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
}
