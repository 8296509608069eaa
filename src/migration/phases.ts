// The phase runner: runs named phases in order, times them into the report, emits their start and end, and keeps
// the progress rollback reads to know what to undo.
import { type ErrorCode, FerryError } from '../core/errors.ts';
import { traceStep } from '../core/trace.ts';
import type { MigrationEvent, MigrationPhase, MigrationReport, MigrationRequest } from './types.ts';

/** The error code a failure in each phase gets when its cause carries none. */
export const PHASE_ERROR: Record<MigrationPhase, ErrorCode> = {
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

/** What has happened so far (strategy-independent); rollback reads it to know what to undo. */
export interface Progress {
  phase: MigrationPhase;
  /** The destination reserved the name (it must be aborted). */
  prepared: boolean;
  /** The container is no longer there to thaw: CRIU holds its tasks (post-copy), or they died. */
  sourceStopped: boolean;
  /** The source's identity was cut off the LAN after the dump. */
  detached: boolean;
  /** Traffic to the container is held (the network lock around the dump). */
  quiesced: boolean;
  restoreRequested: boolean;
  /** When the restore was asked (Date.now): the destination's commit deadline counts from then. */
  restoreRequestedAt?: number;
  /** The commit was sent: the destination may have committed even if its answer never came. */
  commitSent: boolean;
  /** The commit's outcome is unknown (the destination could not be asked): the source copy must stay frozen. */
  inDoubt: boolean;
  freezeStart?: number;
  /** Links in the source's rootfs for the restore after the dump (host/link-remaps.ts): a rollback removes them. */
  relinked?: string[];
}

export function newProgress(): Progress {
  return {
    phase: 'plan',
    prepared: false,
    sourceStopped: false,
    detached: false,
    quiesced: false,
    restoreRequested: false,
    commitSent: false,
    inDoubt: false,
  };
}

/** The report before the first phase: nothing done, nothing sent (`auto` reads as cold until planned). */
export function newReport(req: MigrationRequest, id: string, from: string): MigrationReport {
  return {
    ok: false,
    id,
    container: req.name,
    from,
    to: req.to,
    strategy: req.strategy === 'auto' ? 'cold' : req.strategy,
    phases: [],
    freezeMs: 0,
    rounds: [],
    bytesSent: 0,
    totalMs: 0,
    criu: {},
  };
}

/** `work`, or a FerryError of the phase's code once `ms` have passed. */
export async function withDeadline<T>(phase: MigrationPhase, work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new FerryError(PHASE_ERROR[phase], `phase ${phase} passed its deadline (${Math.round(ms)} ms)`, {
            phase,
            hint: 'the deadlines are in the agent config (deadlines)',
          }),
        ),
      Math.max(0, ms),
    );
  });
  work.catch(() => {});
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

export class PhaseRunner {
  readonly progress = newProgress();
  private readonly report: MigrationReport;
  private readonly emit: (e: MigrationEvent) => void;
  private readonly now: () => number;

  constructor(report: MigrationReport, emit: (e: MigrationEvent) => void, now: () => number) {
    this.report = report;
    this.emit = emit;
    this.now = now;
  }

  /**
   * Runs one phase. `deadline` (in this runner's clock): past it the phase fails with its code and the migration
   * rolls back; the work it abandons is undone by the rollback (the destination's abort ends its side).
   */
  async run<T>(name: MigrationPhase, fn: () => Promise<T>, deadline?: number): Promise<T> {
    this.progress.phase = name;
    const t0 = this.now();
    // (FERRY_TRACE: the phase beside the child processes it ran, in the real clock whatever `now` is)
    const traced = performance.now();
    this.emit({ type: 'phase', phase: name, state: 'start' });
    try {
      const out = deadline === undefined ? await fn() : await withDeadline(name, fn(), deadline - t0);
      const ms = Math.round(this.now() - t0);
      this.report.phases.push({ name, ms });
      this.emit({ type: 'phase', phase: name, state: 'end', ms });
      traceStep(`phase ${name}`, traced, { migration: this.report.id });
      return out;
    } catch (err) {
      const ms = Math.round(this.now() - t0);
      this.report.phases.push({ name, ms });
      this.emit({ type: 'phase', phase: name, state: 'fail', ms });
      traceStep(`phase ${name} failed`, traced, { migration: this.report.id });
      throw err;
    }
  }
}
