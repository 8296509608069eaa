// A small write-ahead journal per migration on each agent: what a restart must finish or undo is written (and
// fsync'd) before it is done, so an agent killed at any point settles every migration it was part of.
import { open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { checkName } from '../core/names.ts';
import { REFUSED_GRACE_MS } from './peer-refusal.ts';

/**
 * The source's steps, in order. Each is journaled before its side effect starts:
 * - `planned`: nothing touched yet;
 * - `prepared`: the destination may hold a reservation and a staged namespace;
 * - `frozen`: the container may be paused and its network locked (a dump may be running);
 * - `restore-requested`: the destination may be running an uncommitted copy;
 * - `commit-sent`: the destination may have committed (only its answer tells);
 * - `committed`: the destination runs the container; the source copy must go.
 */
export type SourceStep =
  | 'planned'
  | 'prepared'
  | 'frozen'
  | 'restore-requested'
  | 'commit-sent'
  | 'committed';
export const SOURCE_STEPS: readonly SourceStep[] = [
  'planned',
  'prepared',
  'frozen',
  'restore-requested',
  'commit-sent',
  'committed',
];

export interface JournalPeer {
  name: string;
  address: string;
  port: number;
}

export interface SourceJournalEntry {
  id: string;
  role: 'source';
  container: string;
  peer: JournalPeer;
  step: SourceStep;
  /** Post-copy after the restore: the memory is split between hosts; the source cannot take the container back. */
  pointOfNoReturn?: boolean;
  /**
   * Post-copy: the port of the page server the lazy dump listens on. Its CRIU outlives a dead agent and keeps the
   * tasks: a rollback makes it fail (it then lets them go, paused); a finish waits until it has served every page.
   */
  pageServerPort?: number;
  /** ms since the epoch of the last write (for the destination's commit deadline). */
  updatedAt: number;
}

/** Where the destination stands on one migration, as it answers the source. */
export type PeerState = 'committed' | 'uncommitted' | 'unknown';

/** Files of one journal directory; atomic writes (temp file, fsync, rename, fsync of the directory). */
export class MigrationJournal {
  private readonly dir: string;
  private readonly now: () => number;
  private writes = 0;

  constructor(dir: string, now: () => number = Date.now) {
    this.dir = dir;
    this.now = now;
  }

  private path(id: string): string {
    return join(this.dir, `${checkName(id, 'migration')}.json`);
  }

  async write(entry: Omit<SourceJournalEntry, 'updatedAt'>): Promise<SourceJournalEntry> {
    const full: SourceJournalEntry = { ...entry, updatedAt: this.now() };
    const path = this.path(entry.id);
    const tmp = `${path}.${process.pid}.${++this.writes}.tmp`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(full));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    await this.syncDir();
    return full;
  }

  async step(entry: SourceJournalEntry, step: SourceStep, extra: Partial<SourceJournalEntry> = {}) {
    return this.write({ ...entry, ...extra, step });
  }

  async remove(id: string): Promise<void> {
    await rm(this.path(id), { force: true });
    await this.syncDir();
  }

  /** Every entry left by a previous run; unreadable or half-written files are removed (they never took effect). */
  async list(): Promise<SourceJournalEntry[]> {
    let files: string[];
    try {
      files = await readdir(this.dir);
    } catch {
      return [];
    }
    const out: SourceJournalEntry[] = [];
    for (const f of files) {
      const p = join(this.dir, f);
      if (!f.endsWith('.json')) {
        await rm(p, { force: true });
        continue;
      }
      try {
        const e = JSON.parse(await readFile(p, 'utf8')) as SourceJournalEntry;
        if (e.role === 'source' && SOURCE_STEPS.includes(e.step)) out.push(e);
        else await rm(p, { force: true });
      } catch {
        await rm(p, { force: true });
      }
    }
    return out;
  }

  private async syncDir(): Promise<void> {
    const fh = await open(this.dir, 'r').catch(() => undefined);
    if (!fh) return;
    try {
      await fh.sync();
    } catch {
      // some filesystems refuse fsync on a directory; the rename is still atomic
    } finally {
      await fh.close();
    }
  }
}

export type RecoveryAction =
  /** The destination runs it: remove the source's copy (kill if paused, forget the record, drop images). */
  | { kind: 'finish'; why: string }
  /** Abort the destination first, then thaw the source's copy (resume, unlock, re-attach). */
  | { kind: 'rollback'; why: string }
  /** The destination cannot be asked and may still hold an uncommitted copy: wait until it drops it itself. */
  | { kind: 'wait'; untilMs: number; why: string }
  /**
   * The commit was sent and the destination cannot be asked: it may run the container now. The source copy stays
   * frozen and the destination is asked again (two-phase commit's in-doubt state; resuming could run it twice).
   */
  | { kind: 'in-doubt'; why: string }
  /** Post-copy past the point of no return with the destination gone: nothing can be recovered here. */
  | { kind: 'lost'; why: string };

/**
 * What a restarted source agent does with one journaled migration (pure). `peer` is the destination's answer, or
 * undefined when it cannot be reached. `commitDeadlineMs` is how long a destination keeps an uncommitted copy
 * without hearing a commit before it kills it on its own: past that, resuming the source cannot run it twice.
 * `refusedForMs`: how long the destination's host has refused every connection to its agent (peer-refusal.ts).
 */
export function sourceRecovery(
  e: SourceJournalEntry,
  peer: PeerState | undefined,
  now: number,
  commitDeadlineMs: number,
  refusedForMs?: number,
): RecoveryAction {
  if (e.step === 'committed' || peer === 'committed') {
    return { kind: 'finish', why: `${e.peer.name} confirmed ${e.container} running` };
  }
  if (e.pointOfNoReturn) {
    return peer === undefined
      ? { kind: 'lost', why: `post-copy: ${e.peer.name} cannot be reached and held part of the memory` }
      : {
          kind: 'finish',
          why: `post-copy past the point of no return: ${e.container} stays on ${e.peer.name}`,
        };
  }
  if (peer !== undefined) {
    return { kind: 'rollback', why: `${e.peer.name} never confirmed (${peer})` };
  }
  if (e.step === 'commit-sent') {
    return { kind: 'in-doubt', why: `${e.peer.name} unreachable after the commit was sent; asking again` };
  }
  const mayHoldCopy = SOURCE_STEPS.indexOf(e.step) >= SOURCE_STEPS.indexOf('restore-requested');
  if (!mayHoldCopy) {
    return { kind: 'rollback', why: `${e.peer.name} unreachable, but no restore was asked of it` };
  }
  if (refusedForMs !== undefined && refusedForMs >= REFUSED_GRACE_MS) {
    return {
      kind: 'rollback',
      why: `${e.peer.name} refuses connections: its agent is gone, and an uncommitted copy with it`,
    };
  }
  const untilMs = e.updatedAt + commitDeadlineMs;
  if (now < untilMs) {
    return {
      kind: 'wait',
      untilMs,
      why: `${e.peer.name} unreachable and may hold an uncommitted copy until its commit deadline`,
    };
  }
  return { kind: 'rollback', why: `${e.peer.name} unreachable past its commit deadline` };
}
