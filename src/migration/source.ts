// The source half and the engine's loop: plan -> prepare -> [rounds] -> checkpoint -> transfer -> restore -> confirm
// -> [pages] -> cleanup, with a defined rollback for every phase before the destination is confirmed. What differs
// between strategies is in strategies/; this loop runs the phases every strategy shares.
// Over 400 lines: the phases, their journal steps and fault points, and what a failure in each rolls back are one
// sequence that is read top to bottom; split, the order of side effects and journal writes would be hidden.
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { asFerryError, FerryError } from '../core/errors.ts';
import { Faults } from '../core/faults.ts';
import type { Logger } from '../core/log.ts';
import { traceStep } from '../core/trace.ts';
import { type ContainerHost, identity } from '../host/containers.ts';
import { linkImages } from '../host/images.ts';
import { relinkRemaps } from '../host/link-remaps.ts';
import { bundleDir, imageDir } from '../host/paths.ts';
import { readStats } from '../images/stats.ts';
import { cgroupPids } from '../runtime/cgroups.ts';
import { encodeTree } from '../transport/image-stream/index.ts';
import { snapshotTree } from '../transport/tree-diff.ts';
import { DEFAULT_DEADLINES, type Deadlines, resolveOptions } from './defaults.ts';
import { FreezeCalibration } from './freeze-model.ts';
import { ImageSender } from './image-sender.ts';
import type { MigrationJournal, SourceJournalEntry, SourceStep } from './journal.ts';
import { newReport, PHASE_ERROR, PhaseRunner, withDeadline } from './phases.ts';
import { planMigration } from './plan-phase.ts';
import { withDumpProgress } from './progress.ts';
import { finishSource, rollback } from './rollback.ts';
import type { ColdDeps } from './strategies/cold.ts';
import type { PostcopyDeps } from './strategies/postcopy.ts';
import { createStrategy } from './strategies/registry.ts';
import { finalDumpOptions, type MigrationContext, type Strategy } from './strategies/strategy.ts';
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
  /** Cold's pages to the destination's CRIU page server (the agent's TLS material); absent: ranges. */
  cold?: ColdDeps;
  /** Phase deadlines (defaults.ts); `commitMs` is the destination's (it kills an uncommitted copy past it). */
  deadlines?: Partial<Deadlines>;
  /** Each step is written here before its side effects, so a restarted agent settles it (source-recovery.ts). */
  journal?: MigrationJournal;
  /** When an unsettled migration is left (the commit in doubt): settled again in the background. */
  onUnsettled?: (entry: SourceJournalEntry) => void;
  faults?: Faults;
  /** Refuses a container still being settled after an interrupted migration (source-recovery.ts). */
  guard?: { check(name: string): void };
  /** Between two questions to a destination whose commit answer was lost (default 1 s; tests shorten it). */
  statusRetryMs?: number;
  /** Each migration's report once it is final (the agent's metrics count them). */
  onReport?: (report: MigrationReport) => void;
  now?: () => number;
}

export class MigrationSource {
  private readonly host: ContainerHost;
  private readonly log: Logger;
  private readonly capabilities: () => Promise<CapabilitiesReport>;
  private readonly now: () => number;
  private readonly postcopy: PostcopyDeps | undefined;
  private readonly cold: ColdDeps | undefined;
  private readonly deadlines: Deadlines;
  private readonly journal: MigrationJournal | undefined;
  private readonly onUnsettled: ((entry: SourceJournalEntry) => void) | undefined;
  private readonly faults: Faults;
  private readonly guard: { check(name: string): void } | undefined;
  private readonly statusRetryMs: number;
  private readonly onReport: ((report: MigrationReport) => void) | undefined;
  /** Transfer rates measured by earlier migrations, by destination. */
  private readonly rates = new Map<string, number>();
  /** The freezes earlier migrations measured, by destination: what the next plan predicts from. */
  private readonly freezes = new Map<string, FreezeCalibration>();

  constructor(deps: SourceDeps) {
    this.host = deps.host;
    this.postcopy = deps.postcopy;
    this.cold = deps.cold;
    this.log = deps.log;
    this.capabilities = deps.capabilities;
    this.now = deps.now ?? (() => performance.now());
    this.deadlines = { ...DEFAULT_DEADLINES, ...deps.deadlines };
    this.journal = deps.journal;
    this.onUnsettled = deps.onUnsettled;
    this.faults = deps.faults ?? Faults.none();
    this.guard = deps.guard;
    this.statusRetryMs = deps.statusRetryMs ?? COMMIT_STATUS_RETRY_MS;
    this.onReport = deps.onReport;
  }

  async migrate(
    req: MigrationRequest,
    peer: DestinationPeer,
    emit: (e: MigrationEvent) => void,
  ): Promise<MigrationReport> {
    const id = `m${randomBytes(6).toString('hex')}`;
    emit({ type: 'started', id });
    const started = this.now();
    const report = newReport(req, id, this.host.hostName);
    const runner = new PhaseRunner(report, emit, this.now);
    const { progress } = runner;
    // set by run: the strategy once planned (rollback asks it what only it knows to undo), and the reading of what
    // the frozen copy holds, which goes on beside the freeze and which the report waits for however the run ends
    const leaves: RunLeaves = {};
    const journal = this.journalFor(id, req.name, peer);
    try {
      this.guard?.check(req.name);
      await this.host.exclusive(req.name, 'migration', async () => {
        try {
          await this.run(req, id, peer, report, runner, emit, leaves, journal);
        } catch (err) {
          const cause = asFerryError(err, PHASE_ERROR[progress.phase], progress.phase);
          if (progress.phase === 'plan') {
            // nothing was touched yet: the cause is the whole story
            report.error = { ...cause.toJSON(), phase: 'plan' };
            await journal.done();
            return;
          }
          const rb = await rollback(
            { host: this.host, log: this.log, commitDeadlineMs: this.deadlines.commitMs },
            {
              name: req.name,
              id,
              peer,
              progress,
              strategy: leaves.strategy,
              peerSilent: cause.code === 'FERRY_E_PEER_TIMEOUT',
            },
          );
          report.rollback = rb;
          if (rb.action === 'committed') {
            // the commit landed although its answer was lost: a success; the frozen copy here goes
            await finishSource(this.host, req.name, id).catch((e: Error) =>
              this.log.warn({ err: e, container: req.name }, 'source cleanup incomplete'),
            );
            await journal.done();
            delete report.rollback;
            emit({
              type: 'info',
              message: `${peer.name} committed ${req.name} although its answer was lost`,
            });
            report.ok = true;
            return;
          }
          // in doubt: the entry stays (at commit-sent) and is settled once the destination answers
          if (rb.action === 'in-doubt') journal.unsettled();
          else await journal.done();
          // a destination that could not be reached keeps its reservation until it hears the abort
          if (rb.action !== 'in-doubt' && !rb.destinationCleaned) void this.abortLater(peer, id);
          const state = rb.sourceRunning
            ? `rolled back: ${req.name} is running on ${this.host.hostName}`
            : rb.action === 'in-doubt'
              ? `IN DOUBT: ${rb.note}`
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
    await leaves.heldReading;
    report.totalMs = Math.round(this.now() - started);
    this.log.info({ report }, report.ok ? 'migration done' : 'migration failed');
    this.onReport?.(report);
    return report;
  }

  private async run(
    req: MigrationRequest,
    id: string,
    peer: DestinationPeer,
    report: MigrationReport,
    runner: PhaseRunner,
    emit: (e: MigrationEvent) => void,
    leaves: RunLeaves,
    journal: StepJournal,
  ): Promise<void> {
    const { progress } = runner;
    const name = req.name;
    const images = imageDir(this.host.paths, id);
    const bundle = bundleDir(this.host.paths, name);

    const planned = await runner.run('plan', async () => {
      await this.faults.reach('source:plan', name);
      return planMigration(
        { host: this.host, capabilities: this.capabilities },
        req,
        peer,
        report,
        this.rates.get(peer.name),
        this.freezes.get(peer.name)?.model(),
      );
    });
    report.strategy = planned.strategy;
    const strategy = createStrategy(
      planned.strategy,
      { postcopy: this.postcopy, cold: this.cold },
      planned.local,
    );
    leaves.strategy = strategy;

    const record = await this.host.readRecord(name);
    if (!record)
      throw new FerryError('FERRY_E_CONTAINER_UNKNOWN', `container ${name} vanished`, { phase: 'prepare' });
    const net = identity(record);
    const options = resolveOptions(req, report.linkRate);
    if (options.compress) report.compressed = true;
    const deadlines = this.deadlines;
    const now = this.now;
    const ctx: MigrationContext = {
      get dumpTimeoutMs() {
        return Math.max(1, (progress.freezeStart ?? now()) + deadlines.freezeMs - now());
      },
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

    await journal.step('planned');
    const bundleBefore = await runner.run(
      'prepare',
      async () => {
        await journal.step('prepared');
        await mkdir(images, { recursive: true, mode: 0o700 });
        // the images belong to the container: `ferry rm` and an agent restart find them by it
        await linkImages(this.host.paths, name, id);
        // staged before any freeze: the container's ARP cache goes to its new namespace with the identity
        const neighbours = await this.host.network.neighbours(name, net).catch(() => []);
        const staged = await strategy.prepare(ctx);
        // what the dump will write as descriptors.json: the destination stages its restore with them (staged-restore.ts)
        const descriptors = await this.host.runc.externalDescriptors?.(name).catch(() => undefined);
        await peer.prepare({
          id,
          name,
          from: this.host.hostName,
          record,
          neighbours,
          ...staged,
          ...(descriptors ? { descriptors } : {}),
        });
        progress.prepared = true;
        await this.faults.reach('source:prepare', name);
        // the bundle goes now, while the container runs; after the final dump only what changed follows
        const before = await snapshotTree(bundle);
        const pre = await peer.send(id, 'bundle', encodeTree([{ root: bundle, prefix: '' }]));
        report.bundlePrestagedBytes = pre.bytes;
        // connections for the transfer's parallel requests (bundle, images, ranges), opened before the freeze
        await peer.warm?.(2 + options.streams).catch(() => {});
        return before;
      },
      this.now() + deadlines.prepareMs,
    );

    if (strategy.rounds)
      await runner.run(
        'rounds',
        async () => {
          await this.faults.reach('source:rounds', name);
          await strategy.rounds!(ctx);
        },
        this.now() + deadlines.roundsMs,
      );

    let detaching: Promise<void> = Promise.resolve();
    await runner.run('checkpoint', async () => {
      // before the freeze: the destination primes the hold its packets will wait in (decision 11), and beside it
      // the lock's process starts here, so that at the pause it only has to read its rules
      this.host.network.stageQuiesce?.(name, net);
      // and the dump's runc starts, so that its own start and CRIU version check are behind it at the freeze
      // (runtime/criu-gate.ts: its CRIU waits for the release; meanwhile the hold is primed; post-copy's lazy dump too;
      // its deadline is set again at the release, from what is left of the freeze ceiling then)
      const staging = strategy.plainFinalDump
        ? this.host.runc.stageCheckpoint?.(name, finalDumpOptions(ctx))?.catch(() => undefined)
        : undefined;
      const lazyOptions = strategy.lazyDumpOptions?.(ctx);
      const stagingLazy = lazyOptions
        ? this.host.runc.stageCheckpointLazy?.(name, lazyOptions)?.catch(() => undefined)
        : undefined;
      let held = false;
      try {
        held = net.mode !== 'none' && (await this.primeHold(peer, id, emit));
        await journal.step('frozen', strategy.journalExtra?.());
      } catch (err) {
        this.host.network.dropQuiesce?.(name, net);
        ctx.stagedDump = await staging;
        ctx.stagedLazyDump = await stagingLazy;
        await this.dropStagedDump(ctx);
        throw err;
      }
      ctx.stagedDump = await staging;
      ctx.stagedLazyDump = await stagingLazy;
      progress.quiesced = true;
      progress.freezeStart = this.now();
      let seized = false;
      let after: string | undefined;
      let announcing: Promise<void> | undefined;
      try {
        // the lock and the pause together (packets that arrive in between wait in the socket queues CRIU dumps);
        // frozen by us first, CRIU then skips its 100 ms freezer poll
        // (both settle before a failure is reported: rollback must not race a lock or a pause still landing)
        // the address is announced there once the lock here has landed: before it, the source's own packets would
        // teach the LAN its old place again; after it, a packet that arrives here is dropped (the window is one
        // request and a staged announcement)
        const traced = performance.now();
        // (the dump waits for the announcement: the dump streams images to the destination, and a stream that
        // fails there, a full disk say, aborts the destination; an announcement still landing then could leave the
        // address announced on a destination that has let the container go, and the client's packets with it)
        const locking = this.host.network.quiesce(name, net);
        announcing = held ? locking.then(() => this.announce(peer, id, emit)) : undefined;
        const settled = await Promise.allSettled([locking, this.host.runc.pause(name), announcing]);
        for (const s of settled) if (s.status === 'rejected') throw s.reason;
        traceStep('source: locked and paused', traced, { migration: id });
        // (a kill comes 10 ms into the dump, which takes 30 ms and more: 100 ms could now land after the commit)
        await this.faults.reach('source:checkpoint', name, 10);
        // (what CRIU has written so far is reported while it writes)
        const dumping = performance.now();
        seized = (await withDumpProgress(images, emit, this.now, () => strategy.dump(ctx))).seized;
        traceStep('source: dump', dumping, { migration: id });
      } finally {
        // a dump that never started (the lock or the pause failed): its runc ends without its CRIU having run
        await this.dropStagedDump(ctx);
        await announcing?.catch(() => {});
        // a dump leaves the tasks alive (frozen by us, --leave-running) whether it worked or not, and rollback
        // thaws them; tasks CRIU still holds (post-copy) are its until it lets go of them, whatever runc says
        // (read from runc's own files, what `runc state` reads, without its process; runc is asked when they
        // cannot tell)
        const st = seized
          ? undefined
          : ((await this.host.runc.quickStatus?.(name))?.status ??
            (await this.host.runc.state(name))?.status);
        progress.sourceStopped = seized || (st !== 'running' && st !== 'paused');
        after = st;
      }
      if (!seized && after !== 'paused') {
        // running after the dump would let it change behind the images: two diverging copies
        throw new FerryError(
          'FERRY_E_CHECKPOINT_FAILED',
          `${name} is ${after ?? 'gone'} after the dump, not frozen`,
          {
            phase: 'checkpoint',
          },
        );
      }
      // links CRIU made for unlinked open files, removed again when the tasks stay alive: the restore needs them
      progress.relinked = [];
      const pids = () => cgroupPids(this.host.cgroupsPath(name));
      await relinkRemaps({ images, bundle, pids }, progress.relinked);
      // cut off beside the transfer (the destination attaches only at the restore, which waits for this)
      progress.detached = true;
      detaching = this.host.network.detach(name, net);
      detaching.catch(() => {});
      if (!seized) {
        // the frozen copy keeps its memory until the commit: what a thaw-rollback costs. Read beside the freeze, not
        // in it: a cgroup's memory usage read flushes the kernel's memory statistics (3-8 ms on the test machine)
        leaves.heldReading = this.host
          .memoryBytes(name)
          .then((held) => {
            report.sourceHeldBytes = held;
          })
          .catch(() => {});
      }
      const stats = await readStats(join(images, 'stats-dump'));
      if (stats?.dump) report.criu.dump = stats.dump;
    });

    // the freeze's hard ceiling bounds everything from the dump to the confirm
    const freezeDeadline = () => (progress.freezeStart ?? this.now()) + deadlines.freezeMs;
    await runner.run(
      'transfer',
      async () => {
        await this.faults.reach('source:transfer', name);
        const t0 = this.now();
        const shared = performance.now();
        const share = await strategy.transfer(ctx);
        traceStep("source: transfer: the strategy's share", shared, { migration: id });
        const rate = await transferImages(ctx, share, { dir: bundle, before: bundleBefore }, t0);
        if (rate !== undefined) this.rates.set(peer.name, rate);
        // sent: the images are no longer needed here (a rollback thaws), their tmpfs memory goes back now
        if (!progress.sourceStopped) await rm(images, { recursive: true, force: true });
      },
      freezeDeadline(),
    );

    // the restore's answer carries the restored container's pid: the destination saw it running right after the
    // restore, the question the confirm would otherwise ask again (one round trip and one `runc state` less)
    let restoredPid: number | undefined;
    await runner.run(
      'restore',
      async () => {
        await detaching;
        await journal.step('restore-requested');
        progress.restoreRequested = true;
        progress.restoreRequestedAt = Date.now();
        const restoring = peer.restore(id, { neighbours: [], ...strategy.restoreOptions() });
        // (a hold here holds the answer: the restore runs on meanwhile; a kill comes 5 ms after the request went
        // out, while the destination restores: an empty container's restore takes 30 ms and more, and the 50 ms
        // this waited before now came after the commit)
        restoring.catch(() => {});
        await this.faults.reach('source:restore', name, 5);
        const r = await restoring;
        if (r.stats) report.criu.restore = r.stats;
        if (r.staged) report.restoreStaged = true;
        if (r.pid > 0) restoredPid = r.pid;
      },
      freezeDeadline(),
    );
    const restoredAt = this.now();

    // (no deadline once the commit is sent: its outcome is settled by asking, never by giving up on it)
    await runner.run('confirm', async () => {
      const reported =
        restoredPid !== undefined ||
        (await withDeadline('confirm', peer.hasContainer(name), freezeDeadline() - this.now()));
      if (!reported) {
        throw new FerryError('FERRY_E_CONFIRM_FAILED', `${peer.name} does not report ${name} after restore`, {
          phase: 'confirm',
        });
      }
      await this.faults.reach('source:confirm', name);
      await journal.step('commit-sent');
      progress.commitSent = true;
      await this.commit(peer, id, progress);
      // the freeze ends at the commit: the destination unlocks the container's network only then
      report.freezeMs = Math.round(this.now() - (progress.freezeStart ?? restoredAt));
      const calibration = this.freezes.get(peer.name) ?? new FreezeCalibration();
      calibration.add({
        strategy: report.strategy,
        memoryBytes: report.memoryBytes ?? 0,
        freezeMs: report.freezeMs,
      });
      this.freezes.set(peer.name, calibration);
      await journal.step('committed');
    });
    report.ok = true;

    // past the point of no return: what the strategy still has to finish (post-copy: the last pages) is reported,
    // not rolled back
    if (strategy.afterConfirm) {
      await runner
        .run('pages', async () => {
          await this.faults.reach('source:pages', name);
          await strategy.afterConfirm!(ctx, restoredAt);
        })
        .catch(() => {});
    }

    await runner.run('cleanup', async () => {
      try {
        await finishSource(this.host, name, id);
        await journal.done();
      } catch (err) {
        // the container runs on the destination; leftovers here are reported, not fatal
        this.log.warn({ err, container: name }, 'source cleanup incomplete');
        emit({ type: 'info', message: `source cleanup incomplete: ${(err as Error).message}` });
      }
    });
  }

  /** Ends a staged dump that was not used; its CRIU never ran, and its runc has ended when this resolves. */
  private async dropStagedDump(ctx: MigrationContext): Promise<void> {
    const staged = [ctx.stagedDump, ctx.stagedLazyDump];
    ctx.stagedDump = undefined;
    ctx.stagedLazyDump = undefined;
    for (const s of staged) await s?.cancel();
  }

  /** Asks the destination to prime a hold; a destination that cannot is moved to the old way (drop and resend). */
  private async primeHold(
    peer: DestinationPeer,
    id: string,
    emit: (e: MigrationEvent) => void,
  ): Promise<boolean> {
    if (!peer.hold || !peer.announce) return false;
    try {
      await peer.hold(id);
      return true;
    } catch (err) {
      emit({ type: 'info', message: `no held switchover on ${peer.name}: ${(err as Error).message}` });
      return false;
    }
  }

  /** A failed announcement is not fatal: the restore announces the address as it always did. */
  private async announce(
    peer: DestinationPeer,
    id: string,
    emit: (e: MigrationEvent) => void,
  ): Promise<void> {
    try {
      await peer.announce?.(id);
    } catch (err) {
      emit({
        type: 'info',
        message: `the held address was not announced on ${peer.name}: ${(err as Error).message}`,
      });
    }
  }

  /**
   * Repeats the abort of a destination that could not be reached during the rollback, until it answers (its link is
   * back, or its restarted agent, which drops what it had not committed, answers that it knows nothing).
   */
  private async abortLater(peer: DestinationPeer, id: string): Promise<void> {
    const until = Date.now() + ABORT_LATER_MS;
    while (Date.now() < until) {
      await new Promise((r) => setTimeout(r, this.statusRetryMs).unref());
      try {
        await peer.abort(id);
        this.log.info({ migration: id, peer: peer.name }, 'destination aborted after its link came back');
        return;
      } catch {
        // not yet
      }
    }
    this.log.warn({ migration: id, peer: peer.name }, 'destination never answered the abort');
  }

  /** This migration's journal entry, written step by step; a no-op without a journal or a known endpoint. */
  private journalFor(id: string, container: string, peer: DestinationPeer): StepJournal {
    const journal = this.journal;
    const endpoint = peer.endpoint;
    if (!journal || !endpoint) return { step: async () => {}, done: async () => {}, unsettled: () => {} };
    let entry: SourceJournalEntry | undefined;
    return {
      step: async (step, extra = {}) => {
        const traced = performance.now();
        entry = entry
          ? await journal.step(entry, step, extra)
          : await journal.write({ id, role: 'source', container, peer: endpoint, step, ...extra });
        traceStep(`source: journal ${step}`, traced, { migration: id });
      },
      done: async () => {
        if (entry) await journal.remove(id);
        entry = undefined;
      },
      unsettled: () => {
        if (entry) this.onUnsettled?.(entry);
      },
    };
  }

  /**
   * Sends the commit. When its answer is lost the destination is asked where it stands: committed is a success,
   * uncommitted or unknown a failure to roll back; no answer leaves the outcome in doubt (the source copy must
   * then stay frozen: resuming it could run the container twice).
   */
  private async commit(peer: DestinationPeer, id: string, progress: { inDoubt: boolean }): Promise<void> {
    try {
      await peer.commit(id);
      return;
    } catch (err) {
      for (let attempt = 0; attempt < COMMIT_STATUS_ATTEMPTS; attempt++) {
        const state = await peer.status(id).catch(() => undefined);
        if (state === 'committed') return;
        if (state !== undefined) throw err;
        await new Promise((r) => setTimeout(r, this.statusRetryMs));
      }
      progress.inDoubt = true;
      throw err;
    }
  }
}

/** What a run leaves for the rest of its migration whatever its end: see `migrate`. */
interface RunLeaves {
  strategy?: Strategy;
  /** The report's `sourceHeldBytes`, read after the dump beside the freeze (a cgroup read is not free). */
  heldReading?: Promise<void>;
}

/** One migration's journal entry as the loop writes it. */
interface StepJournal {
  /** Written (fsync'd) before the step's side effects start. */
  step(step: SourceStep, extra?: Partial<SourceJournalEntry>): Promise<void>;
  /** Settled: nothing left for a restart to do. */
  done(): Promise<void>;
  /** Left for the background settling (the commit is in doubt). */
  unsettled(): void;
}

const COMMIT_STATUS_ATTEMPTS = 5;
/** How long a rollback keeps asking an unreachable destination to abort, in the background. */
const ABORT_LATER_MS = 30 * 60_000;
const COMMIT_STATUS_RETRY_MS = 1000;
