// One catalogue of stable error codes (documented in docs/errors.md). Codes and messages are user contract.

export type Phase =
  | 'input'
  | 'plan'
  | 'prepare'
  | 'checkpoint'
  | 'transfer'
  | 'restore'
  | 'confirm'
  | 'pages'
  | 'rounds'
  | 'cleanup'
  | 'rollback'
  | 'run'
  | 'testbed'
  | 'agent'
  | 'check';

export const ERRORS = {
  FERRY_E_INPUT_NAME: { status: 400, text: 'invalid name' },
  FERRY_E_INPUT_REQUEST: { status: 400, text: 'malformed request' },
  FERRY_E_INPUT_ARGS: { status: 400, text: 'invalid arguments' },
  FERRY_E_INPUT_TOO_LARGE: { status: 413, text: 'request or bundle too large' },
  FERRY_E_CONTAINER_UNKNOWN: { status: 404, text: 'unknown container' },
  FERRY_E_CONTAINER_EXISTS: { status: 409, text: 'container already exists' },
  FERRY_E_ADDRESS_TAKEN: { status: 409, text: 'address already in use' },
  FERRY_E_PORT_TAKEN: { status: 409, text: 'port already in use' },
  FERRY_E_CONTAINER_NOT_RUNNING: { status: 409, text: 'container is not running' },
  FERRY_E_CONTAINER_BUSY: { status: 409, text: 'container is being migrated' },
  FERRY_E_CONTAINER_UNMOVABLE: { status: 409, text: 'a process of the container cannot be migrated' },
  FERRY_E_HOST_UNKNOWN: { status: 404, text: 'unknown host' },
  FERRY_E_HOST_UNREACHABLE: { status: 502, text: 'host unreachable' },
  FERRY_E_PEER_TIMEOUT: { status: 504, text: 'peer stopped answering' },
  FERRY_E_HOST_SAME: { status: 400, text: 'source and destination are the same host' },
  FERRY_E_HOST_DUPLICATE: { status: 409, text: 'another agent already reports under this host name' },
  FERRY_E_AUTH: { status: 401, text: 'not authenticated' },
  FERRY_E_AUTH_ROLE: { status: 403, text: 'certificate role not allowed here' },
  FERRY_E_AUTH_PEER: { status: 403, text: 'not a known peer' },
  FERRY_E_AUTH_CSRF: { status: 403, text: "state-changing request without the session's CSRF token" },
  FERRY_E_SSH_UNREACHABLE: { status: 502, text: 'SSH host unreachable' },
  FERRY_E_SSH_AUTH: { status: 401, text: 'SSH authentication refused' },
  FERRY_E_SSH_HOST_KEY: { status: 409, text: 'SSH host key unknown or changed' },
  FERRY_E_CAPABILITY: { status: 409, text: 'host lacks a required capability' },
  FERRY_E_CRIU_TOO_OLD: { status: 409, text: 'CRIU is too old' },
  FERRY_E_PLAN_STRATEGY: { status: 409, text: 'strategy not possible' },
  FERRY_E_RUN_FAILED: { status: 500, text: 'container failed to start' },
  FERRY_E_BUNDLE_INVALID: { status: 400, text: 'invalid bundle' },
  FERRY_E_BUNDLE_POLICY: { status: 400, text: 'bundle refused by the host policy' },
  FERRY_E_CHECKPOINT_FAILED: { status: 500, text: 'checkpoint failed' },
  FERRY_E_TRANSFER_FAILED: { status: 502, text: 'image transfer failed' },
  FERRY_E_TRANSFER_CORRUPT: { status: 400, text: 'image stream corrupted or truncated' },
  FERRY_E_RESTORE_FAILED: { status: 500, text: 'restore failed' },
  FERRY_E_CONFIRM_FAILED: { status: 500, text: 'destination did not confirm the container running' },
  FERRY_E_ROLLBACK_FAILED: { status: 500, text: 'rollback failed' },
  FERRY_E_POSTCOPY_FAILED: { status: 500, text: 'post-copy page transfer failed' },
  FERRY_E_MIGRATION_UNKNOWN: { status: 404, text: 'unknown migration' },
  FERRY_E_ARCHIVE_INVALID: { status: 400, text: 'not a usable checkpoint archive' },
  FERRY_E_ARCHIVE_VERSION: { status: 409, text: 'checkpoint archive from a newer format version' },
  FERRY_E_ARCHIVE_ROOTFS: { status: 409, text: 'the rootfs holds what an archive cannot carry' },
  FERRY_E_ARCHIVE_WRITE: { status: 500, text: 'checkpoint archive could not be written' },
  FERRY_E_CHECKPOINT_UNKNOWN: { status: 404, text: 'unknown checkpoint' },
  FERRY_E_TESTBED: { status: 500, text: 'testbed operation failed' },
  FERRY_E_TESTBED_NONE: { status: 404, text: 'no testbed or cluster configured' },
  FERRY_E_EXEC: { status: 500, text: 'command failed' },
  FERRY_E_NO_SPACE: { status: 507, text: 'no space left on the device' },
  FERRY_E_INTERNAL: { status: 500, text: 'internal error' },
} as const;

export type ErrorCode = keyof typeof ERRORS;

export interface FerryErrorJSON {
  code: ErrorCode;
  message: string;
  phase?: Phase;
  hint?: string;
  details?: Record<string, unknown>;
}

export class FerryError extends Error {
  readonly code: ErrorCode;
  readonly phase: Phase | undefined;
  readonly hint: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { phase?: Phase; hint?: string; cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'FerryError';
    this.code = code;
    this.phase = opts.phase;
    this.hint = opts.hint;
    this.details = opts.details;
  }

  get status(): number {
    return ERRORS[this.code].status;
  }

  toJSON(): FerryErrorJSON {
    const out: FerryErrorJSON = { code: this.code, message: this.message };
    if (this.phase) out.phase = this.phase;
    if (this.hint) out.hint = this.hint;
    if (this.details) out.details = this.details;
    return out;
  }

  static fromJSON(j: FerryErrorJSON): FerryError {
    const code = j.code in ERRORS ? j.code : 'FERRY_E_INTERNAL';
    const opts: { phase?: Phase; hint?: string; details?: Record<string, unknown> } = {};
    if (j.phase) opts.phase = j.phase;
    if (j.hint) opts.hint = j.hint;
    if (j.details) opts.details = j.details;
    return new FerryError(code, j.message, opts);
  }
}

/** Environment errors that have their own code whatever operation met them (a full disk is never INTERNAL). */
const ERRNO_CODES: Record<string, ErrorCode> = { ENOSPC: 'FERRY_E_NO_SPACE', EDQUOT: 'FERRY_E_NO_SPACE' };

/** The code an errno (of the error or of any error in its cause chain) maps to, if any. */
export function errnoErrorCode(err: unknown): ErrorCode | undefined {
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 8; depth++) {
    const errno = (e as { code?: unknown }).code;
    if (typeof errno === 'string' && errno in ERRNO_CODES) return ERRNO_CODES[errno];
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Wraps anything thrown into a FerryError, keeping a FerryError as it is, except that a generic one
 * (INTERNAL, EXEC, TRANSFER_FAILED) caused by a full disk becomes FERRY_E_NO_SPACE.
 */
export function asFerryError(err: unknown, code: ErrorCode = 'FERRY_E_INTERNAL', phase?: Phase): FerryError {
  const env = errnoErrorCode(err);
  if (err instanceof FerryError) {
    if (!env || !GENERIC.has(err.code)) return err;
    const opts: { phase?: Phase; hint?: string; cause: unknown } = { cause: err };
    if (err.phase ?? phase) opts.phase = (err.phase ?? phase)!;
    opts.hint = 'free space on the host (a full images tmpfs or state directory)';
    return new FerryError(env, err.message, opts);
  }
  const msg = err instanceof Error ? err.message : String(err);
  const opts: { phase?: Phase; hint?: string; cause: unknown } = { cause: err };
  if (phase) opts.phase = phase;
  if (env) opts.hint = 'free space on the host (a full images tmpfs or state directory)';
  return new FerryError(env ?? code, msg, opts);
}

const GENERIC: ReadonlySet<ErrorCode> = new Set([
  'FERRY_E_INTERNAL',
  'FERRY_E_EXEC',
  'FERRY_E_TRANSFER_FAILED',
]);
