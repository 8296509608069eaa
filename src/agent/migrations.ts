// The migrations this agent runs as their source, as their callers see them (GET /v1/migrations/:id): the phase
// each one is in, then its report. A caller whose link to this agent dropped asks here for the outcome, so its
// own disconnect never decides (nor hides) what happened to the container.
import type { MigrationEvent, MigrationPhase, MigrationReport, MigrationTracking } from '../api/types.ts';
import { FerryError } from '../core/errors.ts';

/** Finished migrations kept for callers that come back for them (the oldest go first). */
const KEEP_FINISHED = 200;

export class MigrationStatuses {
  private readonly byId = new Map<string, MigrationTracking>();

  /** Wraps a migration's event sink: the id, each phase and the report are recorded as they pass. */
  track(name: string, to: string, emit: (e: MigrationEvent) => void): (e: MigrationEvent) => void {
    let id: string | undefined;
    return (e) => {
      if (e.type === 'started') {
        id = e.id;
        this.byId.set(id, { id, name, to, state: 'running', phase: 'plan' });
      } else if (id !== undefined) {
        const s = this.byId.get(id);
        if (s && e.type === 'phase' && e.state === 'start') s.phase = e.phase as MigrationPhase;
        if (s && e.type === 'result') this.finish(s, e.report);
      }
      emit(e);
    };
  }

  private finish(s: MigrationTracking, report: MigrationReport): void {
    s.state = 'done';
    s.report = report;
    const done = [...this.byId.values()].filter((x) => x.state === 'done');
    for (const old of done.slice(0, Math.max(0, done.length - KEEP_FINISHED))) this.byId.delete(old.id);
  }

  get(id: string): MigrationTracking {
    const s = this.byId.get(id);
    if (!s)
      throw new FerryError('FERRY_E_MIGRATION_UNKNOWN', `this agent runs no migration ${id}`, {
        hint: 'an agent restarted since settles the migrations it had on its own: see ferry ps',
      });
    return s;
  }
}
