// The phase runner: runs named phases in order, times them into the report, emits their start and end, and keeps
// the progress rollback reads to know what to undo.
import type { ErrorCode } from '../core/errors.ts';
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
  /** The container is no longer there to resume: the dump stopped it, or CRIU holds its tasks. */
  sourceStopped: boolean;
  /** The source's identity was cut off the LAN after the dump. */
  detached: boolean;
  /** Traffic to the container is held (the network lock around the dump). */
  quiesced: boolean;
  restoreRequested: boolean;
  freezeStart?: number;
}

export function newProgress(): Progress {
  return {
    phase: 'plan',
    prepared: false,
    sourceStopped: false,
    detached: false,
    quiesced: false,
    restoreRequested: false,
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

  async run<T>(name: MigrationPhase, fn: () => Promise<T>): Promise<T> {
    this.progress.phase = name;
    const t0 = this.now();
    this.emit({ type: 'phase', phase: name, state: 'start' });
    try {
      const out = await fn();
      const ms = Math.round(this.now() - t0);
      this.report.phases.push({ name, ms });
      this.emit({ type: 'phase', phase: name, state: 'end', ms });
      return out;
    } catch (err) {
      const ms = Math.round(this.now() - t0);
      this.report.phases.push({ name, ms });
      this.emit({ type: 'phase', phase: name, state: 'fail', ms });
      throw err;
    }
  }
}
