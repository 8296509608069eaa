// The destination half: the migrations arriving at this host, by id, and the names they reserve. Each one's
// bundle, images, restore, commit and abort are its own (incoming.ts); this registry finds it, keeps two
// migrations from taking one name, and at start-up undoes what a previous run of the agent left uncommitted.
import { rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { FerryError } from '../core/errors.ts';
import { Faults } from '../core/faults.ts';
import type { Logger } from '../core/log.ts';
import { checkName } from '../core/names.ts';
import { type ContainerHost, identity } from '../host/containers.ts';
import { imageDir } from '../host/paths.ts';
import type { Neighbour } from '../network/ip.ts';
import type { FileRange } from '../transport/ranges.ts';
import { DEFAULT_COMMIT_DEADLINE_MS } from './defaults.ts';
import { committedError, type IncomingDeps, IncomingMigration } from './incoming.ts';
import { recordedIds, recordPath } from './incoming-record.ts';
import type { LazyPages, LazyPagesStarter, PagesOutcome } from './lazy-pages.ts';
import type { PageServerDeps } from './page-server.ts';
import type { IncomingRequest, IncomingState, RestoreResult } from './types.ts';

/** How long a post-copy's outcome stays known after the source was answered (an answer may be lost). */
const PAGES_OUTCOME_KEPT_MS = 120_000;

export interface DestinationOptions {
  /** Test-only fault injection (core/faults.ts): 'invalid-bundle' breaks the received bundle before restore. */
  faults?: Faults;
  /**
   * An uncommitted migration is aborted this long after its restore was asked (its source thaws once it has
   * passed): default DEFAULT_COMMIT_DEADLINE_MS.
   */
  commitDeadlineMs?: number;
  /**
   * Arms a dead-man switch for a migration once it is prepared here: if this agent dies before the commit, a copy
   * restored meanwhile is killed at once (runtime/dead-man.ts), so it never runs beside the source's thawed one.
   */
  deadMan?: (name: string, images: string, cutOff: string[][]) => { disarm(): void };
  /** Post-copy: starts CRIU's lazy-pages daemon against the source's page server. */
  lazyPages?: LazyPagesStarter;
  /** Cold: CRIU's page server for a source's dump, and the fence around its port. */
  pageServer?: PageServerDeps;
  /**
   * Cold with a page server: a migration whose restore has not been asked this long after its prepare is aborted,
   * its page server and fence with it (its source has given up by then: its prepare and freeze deadlines have
   * passed; the agent gives it its prepare, freeze and commit deadlines together). Default
   * DEFAULT_COMMIT_DEADLINE_MS.
   */
  pageServerLifetimeMs?: number;
  /** Keep CRIU's restore log of a copy that restored fine too (a failed restore's is always kept). */
  keepLogs?: boolean;
}

export class IncomingMigrations {
  private readonly host: ContainerHost;
  private readonly log: Logger;
  private readonly deps: IncomingDeps;
  private readonly migrations = new Map<string, IncomingMigration>();
  /** Names reserved by an incoming migration (name -> id), so nothing else takes them meanwhile. */
  private readonly reserved = new Map<string, string>();
  /** Post-copy migrations committed while their pages still stream in, until the source asks how it ended. */
  private readonly streaming = new Map<string, LazyPages>();
  /** The source hosts of those, for `sourceOf`. */
  private readonly streamingFrom = new Map<string, string>();
  /** Commit deadlines of migrations asked to restore, by id. */
  private readonly deadlines = new Map<string, NodeJS.Timeout>();
  /** Lifetimes of prepared migrations with a page server, until their restore is asked, by id. */
  private readonly lifetimes = new Map<string, NodeJS.Timeout>();
  private readonly commitDeadlineMs: number;
  private readonly pageServerLifetimeMs: number;
  private readonly deadMan: DestinationOptions['deadMan'];
  private readonly switches = new Map<string, { disarm(): void }>();

  constructor(host: ContainerHost, log: Logger, opts: DestinationOptions = {}) {
    this.host = host;
    this.log = log;
    this.commitDeadlineMs = opts.commitDeadlineMs ?? DEFAULT_COMMIT_DEADLINE_MS;
    this.pageServerLifetimeMs = opts.pageServerLifetimeMs ?? DEFAULT_COMMIT_DEADLINE_MS;
    this.deps = {
      host,
      log,
      faults: opts.faults ?? Faults.none(),
      lazyPages: opts.lazyPages,
      pageServer: opts.pageServer,
      keepLogs: opts.keepLogs === true,
      restoreTimeoutMs: this.commitDeadlineMs,
    };
    this.deadMan = opts.deadMan;
  }

  /** The source host of a migration arriving here, while this host knows it; undefined for an unknown id. */
  sourceOf(id: string): string | undefined {
    return this.migrations.get(id)?.from ?? this.streamingFrom.get(id);
  }

  isReserved(name: string): boolean {
    return this.reserved.has(name);
  }

  /** Reserves the name and stages what the restore will need; refuses a name that is taken or reserved. */
  async prepare(req: IncomingRequest): Promise<void> {
    checkName(req.id, 'migration');
    checkName(req.name);
    const message = `host ${this.host.hostName} already has a container named ${req.name}`;
    const taken = () => new FerryError('FERRY_E_CONTAINER_EXISTS', message, { phase: 'prepare' });
    if (this.reserved.has(req.name) || this.host.isBusy(req.name)) throw taken();
    const exists = await this.host.exists(req.name);
    // (checked again: another prepare of the name may have reserved it meanwhile)
    if (exists || this.reserved.has(req.name)) throw taken();
    if (this.migrations.has(req.id)) {
      throw new FerryError('FERRY_E_INPUT_REQUEST', `migration ${req.id} is already prepared`, {
        phase: 'prepare',
      });
    }
    const m = IncomingMigration.create(this.deps, req);
    this.migrations.set(m.id, m);
    this.reserved.set(m.name, m.id);
    try {
      await m.prepare();
    } catch (err) {
      await this.abort(m.id).catch(() => {});
      throw err;
    }
    // armed now, outside the freeze: its shell is a process start that at the restore request cost the freeze
    // 5-10 ms of this agent's attention; until a copy runs here it has nothing to kill (it ends when it finds none)
    this.armDeadMan(m);
    // a page server listens for a source that may never come (it died, or lost its link for good): not forever
    if (req.pages) {
      const timer = setTimeout(() => {
        this.lifetimes.delete(m.id);
        if (this.migrations.get(m.id) !== m || m.state !== 'prepared') return;
        this.log.warn({ migration: m.id, container: m.name }, 'no restore asked in time: aborting');
        void this.abort(m.id).catch(() => {});
      }, this.pageServerLifetimeMs);
      timer.unref();
      this.lifetimes.set(m.id, timer);
    }
  }

  /** The switch that kills this migration's copy if this agent dies before the commit (runtime/dead-man.ts). */
  private armDeadMan(m: IncomingMigration): void {
    if (this.switches.has(m.id)) return;
    const sw = this.deadMan?.(
      m.name,
      imageDir(this.host.paths, m.id),
      this.host.network.cutOffArgv?.(m.name, identity(m.record)) ?? [],
    );
    if (sw) this.switches.set(m.id, sw);
  }

  async receive(id: string, part: 'bundle' | 'images', body: Readable, opts: { update?: boolean } = {}) {
    return this.get(id).receive(part, body, opts);
  }

  /** One range of a large image file, on one of several parallel connections. */
  async receiveRange(id: string, r: FileRange, body: Readable, opts: { sparse?: boolean } = {}) {
    return this.get(id).receiveRange(r, body, opts);
  }

  /** Pre-copy round (or the final delta): pages the destination did not have yet. */
  async receiveBlocks(id: string, body: Readable): Promise<{ pages: number; added: number }> {
    return this.get(id).receiveBlocks(body);
  }

  /** Held switchover, right before the source freezes: the container's packets will wait here (incoming.ts). */
  async hold(id: string): Promise<void> {
    return this.get(id).hold();
  }

  /** Held switchover, once the source is locked: the address is announced here. */
  async announce(id: string): Promise<void> {
    return this.get(id).announce();
  }

  async restore(
    id: string,
    opts: { neighbours?: Neighbour[]; lazy?: { address: string; port: number } } = {},
  ): Promise<RestoreResult> {
    const m = this.get(id);
    clearTimeout(this.lifetimes.get(id));
    this.lifetimes.delete(id);
    // from now on an uncommitted copy may run here: it must not outlive the source's patience
    if (!this.deadlines.has(id)) {
      const timer = setTimeout(() => {
        this.deadlines.delete(id);
        if (this.migrations.get(id) !== m) return;
        this.log.warn({ migration: id, container: m.name }, 'no commit before the deadline: aborting');
        void this.abort(id).catch(() => {});
      }, this.commitDeadlineMs);
      timer.unref();
      this.deadlines.set(id, timer);
      this.armDeadMan(m);
    }
    return m.restore(opts);
  }

  /**
   * Where this host stands on a migration: uncommitted while it is in flight here, committed when a container
   * here came from it, unknown otherwise (never prepared, aborted, or dropped at its deadline or at a restart).
   */
  async status(id: string): Promise<IncomingState> {
    checkName(id, 'migration');
    const m = this.migrations.get(id);
    if (m) return m.state === 'committed' ? 'committed' : 'uncommitted';
    for (const name of await this.host.names()) {
      const rec = await this.host.readRecord(name).catch(() => undefined);
      if (rec?.origin?.kind === 'migration' && rec.origin.id === id) return 'committed';
    }
    return 'unknown';
  }

  /** Post-copy: resolves once the lazy-pages daemon of a migration is done, with whether every page arrived. */
  async pagesResult(id: string): Promise<PagesOutcome> {
    const streaming = this.streaming.get(id);
    const outcome = (streaming ?? this.migrations.get(id)?.pages)?.outcome;
    if (!outcome)
      throw new FerryError(
        'FERRY_E_MIGRATION_UNKNOWN',
        `no post-copy migration ${id} on host ${this.host.hostName}`,
      );
    const r = await outcome;
    if (streaming) {
      // kept a while after the answer: an answer lost on its way (the link down) is asked for again
      const forget = setTimeout(() => {
        if (this.streaming.get(id) !== streaming) return;
        this.streaming.delete(id);
        this.streamingFrom.delete(id);
      }, PAGES_OUTCOME_KEPT_MS);
      forget.unref();
    }
    return r;
  }

  async commit(id: string): Promise<void> {
    const m = this.get(id);
    try {
      await m.commit();
    } finally {
      // (committed even if a file could not be removed: the container is this host's now)
      if (m.state === 'committed') {
        if (m.pages) {
          this.streaming.set(id, m.pages);
          this.streamingFrom.set(id, m.from);
        }
        this.forget(m);
      }
    }
  }

  /**
   * Removes everything the migration created here, including a restored container. Unknown ids are fine; a
   * committed one is refused (the source must not thaw: the container runs here).
   */
  async abort(id: string): Promise<void> {
    const m = this.migrations.get(id);
    if (!m) {
      if ((await this.status(id)) === 'committed') throw committedError(id);
      return;
    }
    try {
      await m.abort();
    } finally {
      this.forget(m);
    }
  }

  /** At agent start: nothing uncommitted survives a restart (the source has rolled back or will). */
  async recover(): Promise<string[]> {
    const { incomingDir } = this.host.paths;
    const aborted: string[] = [];
    for (const id of await recordedIds(incomingDir)) {
      const m = await IncomingMigration.load(this.deps, id).catch(() => undefined);
      if (m) {
        await m.abort();
      } else {
        // unreadable: the container's name is unknown, but the images and the record can go
        this.log.warn({ migration: id }, 'unreadable incoming migration record removed');
        try {
          await rm(imageDir(this.host.paths, id), { recursive: true, force: true });
          await rm(recordPath(incomingDir, id), { force: true });
        } catch {
          // not a file ferry wrote (its name is no migration id): left alone
        }
      }
      aborted.push(id);
    }
    return aborted;
  }

  private get(id: string): IncomingMigration {
    const m = this.migrations.get(id);
    if (!m)
      throw new FerryError(
        'FERRY_E_MIGRATION_UNKNOWN',
        `no incoming migration ${id} on host ${this.host.hostName}`,
      );
    return m;
  }

  private forget(m: IncomingMigration): void {
    const timer = this.deadlines.get(m.id);
    if (timer) clearTimeout(timer);
    this.deadlines.delete(m.id);
    clearTimeout(this.lifetimes.get(m.id));
    this.lifetimes.delete(m.id);
    this.switches.get(m.id)?.disarm();
    this.switches.delete(m.id);
    if (this.migrations.get(m.id) === m) this.migrations.delete(m.id);
    if (this.reserved.get(m.name) === m.id) this.reserved.delete(m.name);
  }
}
