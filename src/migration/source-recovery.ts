// The source's half of crash safety: the journal entries a previous run of the agent left (or a migration whose
// commit is in doubt) are settled by asking the destination where the container is (sourceRecovery() decides,
// journal.ts), then finishing (the destination runs it: the frozen copy here is killed) or rolling back (the
// destination is aborted, the copy here thawed). A container being settled is refused to new migrations.
import { rm } from 'node:fs/promises';
import { FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { ContainerHost } from '../host/containers.ts';
import { imageDir } from '../host/paths.ts';
import {
  type JournalPeer,
  type MigrationJournal,
  SOURCE_STEPS,
  type SourceJournalEntry,
  sourceRecovery,
} from './journal.ts';
import { RefusalClock } from './peer-refusal.ts';
import { finishSource, thaw } from './rollback.ts';
import type { DestinationPeer } from './types.ts';

/** Processes a crashed agent left behind (its runc checkpoint, its CRIU), found by what their command line names. */
export interface Leftovers {
  /** Waits until no process names `text` any more; kills what still does once `deadline` (Date.now) passed. */
  settle(text: string, deadline: number): Promise<{ killed: number }>;
}

export interface RecoveryDeps {
  host: ContainerHost;
  log: Logger;
  journal: MigrationJournal;
  peerFor: (ep: JournalPeer) => DestinationPeer;
  commitDeadlineMs: number;
  /** The freeze's ceiling: a dump a dead agent left running is killed this long after the freeze began. */
  freezeCeilingMs: number;
  leftovers?: Leftovers;
  /** Post-copy: makes this host's page server on `port` fail, so CRIU lets the tasks go alive. */
  failPageServer?: (port: number) => Promise<void>;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** How long to wait before asking an unreachable or in-doubt destination again. */
  retryMs?: number;
}

export type Outcome = 'finished' | 'thawed' | 'lost';

/** How long CRIU gets to let go of the tasks after its page server failed (as in a live rollback, decision 4). */
const PAGE_SERVER_RELEASE_MS = 10_000;
/** How long a finished post-copy's page server gets to serve its last pages before it is killed. */
const PAGES_WAIT_MS = 3_600_000;

export class SourceRecovery {
  /** Containers being settled: a migration of one of them is refused until it is. */
  readonly settling = new Set<string>();
  private readonly deps: RecoveryDeps;
  private readonly now: () => number;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(deps: RecoveryDeps) {
    this.deps = deps;
    this.now = deps.now ?? Date.now;
    // (unref'd: a settling that waits for a destination never keeps a stopping agent alive)
    this.sleep = deps.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms).unref()));
  }

  /**
   * At agent start: every entry a previous run left, settled. Their containers are marked at once (before the
   * agent listens); the returned promise ends when all are settled (waits for a commit deadline included).
   */
  async recoverAll(): Promise<{ done: Promise<{ id: string; outcome: Outcome }[]> }> {
    const entries = await this.deps.journal.list();
    for (const e of entries) this.settling.add(e.container);
    return { done: Promise.all(entries.map(async (e) => ({ id: e.id, outcome: await this.settle(e) }))) };
  }

  /** Throws BUSY when `name` is being settled. */
  check(name: string): void {
    if (this.settling.has(name)) {
      throw new FerryError(
        'FERRY_E_CONTAINER_BUSY',
        `container ${name} is being settled after an interrupted migration (its destination is being asked where it runs)`,
        { phase: 'input' },
      );
    }
  }

  /** Settles one entry: asks, decides, acts, and asks again while the answer cannot be had. */
  async settle(e: SourceJournalEntry): Promise<Outcome> {
    const { host, log } = this.deps;
    this.settling.add(e.container);
    try {
      // (post-copy's page server is not waited for: it serves pages until told otherwise)
      if (e.pageServerPort === undefined) await this.endLeftovers(e, e.updatedAt + this.deps.freezeCeilingMs);
      const refusals = new RefusalClock(() => this.now());
      for (;;) {
        const peer = this.deps.peerFor(e.peer);
        let failure: unknown;
        const state = await peer.status(e.id).catch((err: unknown) => {
          failure = err;
          return undefined;
        });
        refusals.note(failure);
        const action = sourceRecovery(e, state, this.now(), this.deps.commitDeadlineMs, refusals.forMs());
        log.warn(
          { migration: e.id, container: e.container, step: e.step, peer: state ?? 'unreachable', action },
          'settling an interrupted migration',
        );
        if (action.kind === 'finish') {
          // post-copy: the destination still faults pages in from the page server a dead agent left running; CRIU
          // ends it (and the tasks here) once every page has gone
          if (e.pageServerPort !== undefined) await this.endLeftovers(e, this.now() + PAGES_WAIT_MS);
          await finishSource(host, e.container, e.id);
          await this.deps.journal.remove(e.id);
          return 'finished';
        }
        if (action.kind === 'lost') {
          log.error({ migration: e.id, container: e.container, why: action.why }, 'migration lost');
          await this.deps.journal.remove(e.id);
          return 'lost';
        }
        if (action.kind === 'wait' || action.kind === 'in-doubt') {
          const retry = this.deps.retryMs ?? 2000;
          await this.sleep(action.kind === 'wait' ? Math.min(retry, action.untilMs - this.now()) : retry);
          continue;
        }
        // rollback: the destination first (two copies must never run), then the thaw
        if (state !== undefined && e.step !== 'planned') {
          const aborted = await peer.abort(e.id).then(
            () => true,
            () => false,
          );
          // it answered but would not abort: ask again rather than risk two copies
          if (!aborted) {
            await this.sleep(this.deps.retryMs ?? 2000);
            continue;
          }
        }
        if (e.pageServerPort !== undefined) {
          // post-copy before the commit: CRIU holds the tasks; failing its page server hands them back alive
          await this.deps.failPageServer?.(e.pageServerPort).catch(() => {});
          await this.endLeftovers(e, this.now() + PAGE_SERVER_RELEASE_MS);
        }
        const frozen = SOURCE_STEPS.indexOf(e.step) >= SOURCE_STEPS.indexOf('frozen');
        const notes: string[] = [];
        const running = await thaw(
          host,
          e.container,
          { detached: frozen, quiesced: frozen },
          undefined,
          notes,
        );
        await rm(imageDir(host.paths, e.id), { recursive: true, force: true });
        await this.deps.journal.remove(e.id);
        log.warn(
          { migration: e.id, container: e.container, running, notes },
          'interrupted migration rolled back',
        );
        return running ? 'thawed' : 'lost';
      }
    } finally {
      this.settling.delete(e.container);
    }
  }

  /** A dump the dead agent started may still run (its runc outlived it): waited for up to the freeze ceiling. */
  private async endLeftovers(e: SourceJournalEntry, deadline: number): Promise<void> {
    const { leftovers } = this.deps;
    if (!leftovers) return;
    const images = imageDir(this.deps.host.paths, e.id);
    const { killed } = await leftovers.settle(images, deadline);
    if (killed)
      this.deps.log.warn({ migration: e.id, killed }, 'killed what the interrupted migration left running');
  }
}
