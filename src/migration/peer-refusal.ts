// A destination whose host refuses every connection to its agent has no agent: it died, and its dead-man switch
// killed any uncommitted copy the moment it did (runtime/dead-man.ts), or it restarted and aborts what was not
// committed before it listens again. A refusal is the host's kernel answering, so the link carries it: unlike a
// destination that cannot be heard at all (a cut link, its agent perhaps alive with its copy), it need not be
// waited out until its commit deadline once the refusals have lasted a little while (decision 0009). Used by the
// rollback (rollback.ts) and by a restarted source settling its journal (source-recovery.ts, journal.ts).

/**
 * How long the refusals must last: the dead-man switch's shell reads its end-of-file and kills the copy well
 * within it. A firewall rejecting the agent's port with a reset while the agent lives would pass for a dead agent;
 * the copy that agent keeps stays locked off the network until its commit deadline, as every uncommitted copy is.
 */
export const REFUSED_GRACE_MS = 3000;

/** The peer's host answered the connection with a reset: nothing listens on the agent's port. */
export function refusedConnection(err: unknown): boolean {
  const cause = (err as { cause?: { code?: string } } | undefined)?.cause;
  return (
    (err as { code?: string } | undefined)?.code === 'FERRY_E_HOST_UNREACHABLE' &&
    cause?.code === 'ECONNREFUSED'
  );
}

/**
 * How long every ask has found the destination's agent port closed: each ask's failure (or success) is noted in
 * turn; one that was not a refusal starts the count again.
 */
export class RefusalClock {
  private since: number | undefined;
  private readonly now: () => number;

  constructor(now: () => number) {
    this.now = now;
  }

  /** An ask failed with `err` (undefined: it was answered). */
  note(err: unknown): void {
    this.since = err !== undefined && refusedConnection(err) ? (this.since ?? this.now()) : undefined;
  }

  /** Milliseconds of refusals so far; undefined when the last ask was not refused. */
  forMs(): number | undefined {
    return this.since === undefined ? undefined : this.now() - this.since;
  }

  /** The refusals have lasted REFUSED_GRACE_MS: the agent is gone. */
  gone(): boolean {
    return (this.forMs() ?? -1) >= REFUSED_GRACE_MS;
  }
}
