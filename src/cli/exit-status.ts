// The exit statuses scripts rely on (docs/errors.md, "Exit status", and `ferry --help`). A script that migrates
// needs to tell "it failed, the container runs on the source as before" (retry later) from "the container is lost
// or in doubt" (page someone): the two get different statuses.
import { LOST_CODES, migrationOutcome } from '../api/outcome.ts';
import type { MigrationReport } from '../api/types.ts';
import { asFerryError, type ErrorCode, FerryError } from '../core/errors.ts';

export const EXIT = {
  /** Done as asked (a migration: the container runs on the destination). */
  ok: 0,
  /** Failed; nothing was lost (a migration rolled back: the container runs on the source). */
  failed: 1,
  /** The command line was refused (unknown option, bad value, bad name); nothing was changed. */
  usage: 2,
  /** The container is lost or in doubt: post-copy failed after the commit, or the rollback could not resume it. */
  lost: 3,
} as const;

export type ExitStatus = (typeof EXIT)[keyof typeof EXIT];

/** Codes that say the command line itself is wrong (refused before anything is changed). */
const USAGE: ReadonlySet<ErrorCode> = new Set(['FERRY_E_INPUT_ARGS', 'FERRY_E_INPUT_NAME']);

export function exitStatusOfError(
  e: Pick<FerryError, 'code'> & { details?: Record<string, unknown> },
): ExitStatus {
  if (LOST_CODES.has(e.code) || e.details?.['inDoubt'] === true) return EXIT.lost;
  if (USAGE.has(e.code)) return EXIT.usage;
  return EXIT.failed;
}

/**
 * An error that leaves a migration's outcome unknown to this command (its link to the source agent broke after
 * the migration started and it could not ask again): the same error, marked in doubt (exit status 3).
 */
export function inDoubt(err: unknown): FerryError {
  const fe = asFerryError(err);
  return new FerryError(
    fe.code,
    `${fe.message}; where the container runs is IN DOUBT until the source settles it`,
    {
      ...(fe.phase ? { phase: fe.phase } : {}),
      hint: fe.hint ?? 'ferry ps shows where the container runs',
      details: { ...fe.details, inDoubt: true },
      cause: err,
    },
  );
}

/** A migration's report: 0 only when the container runs on the destination; 3 when it may run nowhere. */
export function exitStatusOfReport(r: Pick<MigrationReport, 'ok' | 'error' | 'rollback'>): ExitStatus {
  const outcome = migrationOutcome(r);
  return outcome === 'succeeded' ? EXIT.ok : outcome === 'lost' ? EXIT.lost : EXIT.failed;
}

/** What `ferry --help` says about the statuses (after the command list). */
export const EXIT_STATUS_HELP = [
  'Exit status:',
  '  0  done (migrate: the container runs on the destination)',
  '  1  failed, nothing lost (migrate: rolled back, the container runs on the source)',
  '  2  usage error: the command line was refused; nothing was changed',
  '  3  the container is lost or in doubt (post-copy failed after the commit, or the rollback could not resume it)',
  'Errors print one line on stderr, `ferry: CODE: message`; with --json, {"ok": false, "error": {...}} on stdout.',
].join('\n');

/** What `ferry migrate --help` says about the statuses. */
export const MIGRATE_EXIT_STATUS_HELP = [
  'Exit status:',
  '  0  the container runs on the destination',
  '  1  failed and rolled back: the container runs on the source (or nothing was touched)',
  '  2  usage error; nothing was touched',
  '  3  the container is lost or in doubt: post-copy failed after the commit, or the rollback could not resume it',
  '     (the error says which; FERRY_E_POSTCOPY_FAILED or FERRY_E_ROLLBACK_FAILED)',
].join('\n');
