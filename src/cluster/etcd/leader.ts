// Leader election on etcd, under the same prefix as the store (etcd/store.ts): one key, `<prefix>leader`,
// attached to the leader's lease.
import { FerryError } from '../../core/errors.ts';
import type { LeaderElection } from '../store.ts';
import { createdNot, deleteOp, EtcdClient, type EtcdClientOptions, leaseIs, putOp } from './client.ts';

export interface EtcdLeaderElectionOptions extends EtcdClientOptions {
  /** The same prefix as the store's; the leader key is `<prefix>leader`. */
  prefix: string;
  /** Lease TTL: how long a crashed leader blocks the others at most; default 10 s. */
  ttlSeconds?: number;
  /** How long a follower waits before it tries again after an error (etcd unreachable); default 500 ms. */
  retryMs?: number;
}

/**
 * Leader election on `<prefix>leader`: the candidate that creates the key (txn "create if absent", attached to
 * its lease) leads while it keeps the lease alive (every TTL/3). Followers watch the key (etcd's watch stream,
 * from the revision they saw) and try again the moment it is deleted (resign, lease revoked or expired); a
 * broken watch or an unreachable etcd falls back to trying every retryMs. `onLost` fires when the leader cannot keep its lease (or the key is no
 * longer its own); it then no longer leads and must call campaign() again to rejoin.
 */
export class EtcdLeaderElection implements LeaderElection {
  readonly key: string;
  readonly ttlSeconds: number;
  readonly retryMs: number;
  readonly client: EtcdClient;
  private id: string | undefined;
  private lease: string | undefined;
  private leading = false;
  /** performance.now() after which etcd may have expired our lease */
  private deadline = 0;
  private timer: NodeJS.Timeout | undefined;
  private gen = 0;
  private running: Promise<void> | undefined;
  private readonly lostCbs: (() => void)[] = [];
  /** Ends a follower's watch when it resigns. */
  private watching: AbortController | undefined;
  /** The last error met while campaigning or renewing (for diagnostics). */
  lastError: unknown;

  constructor(opts: EtcdLeaderElectionOptions) {
    if (typeof opts.prefix !== 'string' || opts.prefix === '')
      throw new FerryError(
        'FERRY_E_INPUT_ARGS',
        'leader election needs a key prefix, e.g. /ferry/<cluster>/',
      );
    this.key = `${opts.prefix.endsWith('/') ? opts.prefix : `${opts.prefix}/`}leader`;
    this.ttlSeconds = Math.max(2, Math.ceil(opts.ttlSeconds ?? 10));
    this.retryMs = opts.retryMs ?? 500;
    this.client = new EtcdClient(opts);
  }

  campaign(id: string): Promise<void> {
    if (typeof id !== 'string' || id === '')
      return Promise.reject(new FerryError('FERRY_E_INPUT_ARGS', 'a candidate needs a non-empty id'));
    if (this.id !== undefined && this.id !== id && (this.running || this.leading))
      return Promise.reject(new FerryError('FERRY_E_INPUT_ARGS', `already campaigning as ${this.id}`));
    if (this.isLeader()) return Promise.resolve();
    if (this.running) return this.running;
    this.id = id;
    const gen = ++this.gen;
    const run = this.loop(id, gen).finally(() => {
      if (this.running === run) this.running = undefined;
    });
    this.running = run;
    return run;
  }

  isLeader(): boolean {
    return this.leading && performance.now() < this.deadline;
  }

  onLost(cb: () => void): void {
    this.lostCbs.push(cb);
  }

  /**
   * Gives leadership up (deletes the key, revokes the lease) and stops campaigning: a pending campaign() then
   * never settles (no rejection to handle at shutdown). campaign() may be called again afterwards.
   */
  async resign(): Promise<void> {
    this.gen++;
    this.watching?.abort();
    this.running = undefined;
    this.stopTimer();
    const lease = this.lease;
    const wasLeading = this.leading;
    this.leading = false;
    this.lease = undefined;
    if (!lease) return;
    try {
      if (wasLeading) await this.client.txn([leaseIs(this.key, lease)], [deleteOp(this.key)]);
      await this.client.revoke(lease);
    } catch (err) {
      this.lastError = err; // etcd unreachable: the lease expires by itself within the TTL
    }
  }

  private cancelled(gen: number): boolean {
    return gen !== this.gen;
  }

  private async loop(id: string, gen: number): Promise<void> {
    for (;;) {
      let heldAt: bigint | undefined;
      try {
        const r = await this.attempt(id, gen);
        if (r === true) return;
        if (typeof r === 'bigint') heldAt = r;
      } catch (err) {
        this.lastError = err; // etcd unreachable or busy: keep trying
      }
      if (this.cancelled(gen)) return new Promise<void>(() => {}); // resigned: never settles
      let watched = false;
      if (heldAt !== undefined) {
        // another leads: wait on etcd's watch until its key goes (at most a few lease lifetimes, then ask again)
        this.watching = new AbortController();
        try {
          await this.client.waitDeleted(this.key, heldAt, this.ttlSeconds * 3000, this.watching.signal);
          watched = true;
        } catch (err) {
          this.lastError = err; // no watch: fall back to asking every retryMs
        }
      }
      if (!watched) await new Promise((r) => setTimeout(r, this.retryMs));
      if (this.cancelled(gen)) return new Promise<void>(() => {}); // resigned: never settles
    }
  }

  /** One try: true when this id now leads; the key's revision when another holds it; false otherwise. */
  private async attempt(id: string, gen: number): Promise<boolean | bigint> {
    const cur = await this.client.get(this.key);
    if (cur) {
      // our own key from before (a restart with the same id, whose lease still runs): adopt it
      if (cur.value.toString() !== id || cur.lease === '0') return cur.modRevision;
      const sent = performance.now();
      const ttl = await this.client.keepalive(cur.lease);
      if (ttl <= 0) return false;
      return this.won(cur.lease, ttl, sent, gen);
    }
    const sent = performance.now();
    const g = await this.client.grant(this.ttlSeconds);
    let ok = false;
    try {
      const t = await this.client.txn([createdNot(this.key)], [putOp(this.key, id, g.id)]);
      ok = t.succeeded === true;
    } finally {
      if (!ok) await this.client.revoke(g.id).catch(() => {});
    }
    return ok && this.won(g.id, g.ttl, sent, gen);
  }

  private async won(lease: string, ttl: number, sent: number, gen: number): Promise<boolean> {
    if (this.cancelled(gen)) {
      // resigned while the txn was in flight
      await this.client.txn([leaseIs(this.key, lease)], [deleteOp(this.key)]).catch(() => {});
      await this.client.revoke(lease).catch(() => {});
      return false;
    }
    this.lease = lease;
    this.leading = true;
    this.deadline = sent + ttl * 1000;
    this.schedule(gen);
    return true;
  }

  private get interval(): number {
    return Math.max(100, (this.ttlSeconds * 1000) / 3);
  }

  private schedule(gen: number): void {
    this.stopTimer();
    this.timer = setTimeout(() => void this.renew(gen), this.interval);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async renew(gen: number): Promise<void> {
    const lease = this.lease;
    if (this.cancelled(gen) || !this.leading || !lease) return;
    const sent = performance.now();
    let lost: string | undefined;
    try {
      const ttl = await this.client.keepalive(lease);
      if (this.cancelled(gen)) return;
      if (ttl <= 0) lost = 'leader lease expired or was revoked';
      else {
        const cur = await this.client.get(this.key);
        if (this.cancelled(gen)) return;
        if (!cur || cur.lease !== lease || cur.value.toString() !== this.id)
          lost = 'leader key deleted or taken over';
        else this.deadline = sent + ttl * 1000;
      }
    } catch (err) {
      if (this.cancelled(gen)) return;
      this.lastError = err;
      // give up before etcd could expire the lease while we still believe we lead
      if (performance.now() + this.interval >= this.deadline)
        lost = `leader lease could not be renewed: ${(err as Error).message}`;
    }
    if (lost) this.lose(lost, lease);
    else this.schedule(gen);
  }

  private lose(reason: string, lease: string): void {
    this.gen++;
    this.stopTimer();
    this.leading = false;
    this.lease = undefined;
    this.lastError = new FerryError('FERRY_E_INTERNAL', reason);
    void this.client.revoke(lease).catch(() => {});
    for (const cb of this.lostCbs) {
      try {
        cb();
      } catch {
        // a listener's failure is not ours
      }
    }
  }
}
