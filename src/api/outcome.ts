// What became of a container after a migration, read from its report: the one classification that the CLI's exit
// status and the agents' metrics share, so that a script and a dashboard never disagree about a migration.
import type { MigrationReport } from './types.ts';

/**
 * - `succeeded`: the container runs on the destination;
 * - `refused`: it failed before anything was touched (plan, or the request itself); the container runs on as before;
 * - `rolled_back`: it failed after the start and the container runs on the source again;
 * - `lost`: the container is lost or in doubt (post-copy failed after the commit, or the rollback could not
 *   resume the source: its tasks died, or the commit is in doubt and the source copy stays frozen).
 */
export type MigrationOutcome = 'succeeded' | 'refused' | 'rolled_back' | 'lost';

export const MIGRATION_OUTCOMES: readonly MigrationOutcome[] = [
  'succeeded',
  'refused',
  'rolled_back',
  'lost',
];

/** Codes that leave a container nowhere for sure (docs/errors.md says why for each). */
export const LOST_CODES: ReadonlySet<string> = new Set([
  'FERRY_E_POSTCOPY_FAILED',
  'FERRY_E_ROLLBACK_FAILED',
]);

export function migrationOutcome(r: Pick<MigrationReport, 'ok' | 'error' | 'rollback'>): MigrationOutcome {
  if (r.ok) return 'succeeded';
  if (r.error && LOST_CODES.has(r.error.code)) return 'lost';
  // a rollback that could not bring the source back leaves the container nowhere, whatever the cause's code
  if (r.rollback) return r.rollback.sourceRunning ? 'rolled_back' : 'lost';
  return 'refused';
}
