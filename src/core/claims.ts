// Claims on container names and addresses while a container is being created somewhere in the cluster: a table
// that refuses a second claim of a name or an address under another token, with an expiry so that a creator that
// died does not block the name for ever. Agents and the controller keep one each (agent/reservations.ts and
// cluster/controller.ts say when a claim is made and dropped).
import { FerryError } from './errors.ts';

export interface Claim {
  /** Chosen by the creator; the same token may claim again (a retry) and releases everywhere. */
  token: string;
  name: string;
  ip?: string;
  /** The host the container is being created on. */
  host: string;
}

export const CLAIM_TTL_MS = 60_000;

export class ClaimTable {
  private readonly claims = new Map<string, Claim & { expires: number }>();
  private readonly now: () => number;
  private readonly ttlMs: number;

  constructor(opts: { now?: () => number; ttlMs?: number } = {}) {
    this.now = opts.now ?? Date.now;
    this.ttlMs = opts.ttlMs ?? CLAIM_TTL_MS;
  }

  /** The error for a name or address held by another claim, or undefined when `c` may go ahead. */
  conflict(c: Claim, where: string): FerryError | undefined {
    this.expire();
    for (const other of this.claims.values()) {
      if (other.token === c.token) continue;
      if (other.name === c.name)
        return new FerryError(
          'FERRY_E_CONTAINER_EXISTS',
          `a container named ${c.name} is being created on host ${other.host} (claimed at ${where})`,
          { phase: 'input', hint: 'pick another name, or wait and look with ferry ps' },
        );
      if (c.ip !== undefined && other.ip === c.ip)
        return new FerryError(
          'FERRY_E_ADDRESS_TAKEN',
          `address ${c.ip} is claimed by ${other.name}, being created on host ${other.host} (claimed at ${where})`,
          { phase: 'input', hint: 'pick another --ip, or leave it out for the first free one' },
        );
    }
    return undefined;
  }

  /** Records the claim, or throws the conflict. Synchronous: a check and its insert cannot interleave. */
  add(c: Claim, where: string): void {
    const err = this.conflict(c, where);
    if (err) throw err;
    this.claims.set(c.token, { ...c, expires: this.now() + this.ttlMs });
  }

  release(token: string): boolean {
    return this.claims.delete(token);
  }

  /** Drops the claims of containers that are now known to exist on their host (the controller's heartbeats). */
  settle(host: string, names: Iterable<string>): void {
    const present = new Set(names);
    for (const [t, c] of this.claims) if (c.host === host && present.has(c.name)) this.claims.delete(t);
  }

  list(): Claim[] {
    this.expire();
    return [...this.claims.values()].map(({ expires: _e, ...c }) => c);
  }

  private expire(): void {
    const now = this.now();
    for (const [t, c] of this.claims) if (c.expires <= now) this.claims.delete(t);
  }
}
