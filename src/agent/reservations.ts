// Names and addresses unique cluster-wide. A create on this host first claims its name (and address) through the
// controller when there is one, else on every agent of the cluster, this one included. The agents are claimed in
// one order (by host name), so of two creates of one name at once the one that first claims the lowest host wins
// and the other is refused there: exactly one goes ahead, neither waits. An agent answers a claim from what it
// holds: its containers (records, runc state, migrations arriving), their addresses, its own address, and the
// claims of creates in flight elsewhere.
import { randomBytes } from 'node:crypto';
import type { ClaimRequest, Endpoint } from '../api/types.ts';
import { type Claim, ClaimTable } from '../core/claims.ts';
import { FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { ContainerHost } from '../host/containers.ts';

/** Where claims are made: a peer agent's API or the controller's (the typed clients, faked in unit tests). */
export interface Claimer {
  claim(c: ClaimRequest, opts?: { timeoutMs?: number }): Promise<void>;
  releaseClaim(token: string, opts?: { timeoutMs?: number }): Promise<void>;
}

export interface ReservationDeps {
  host: ContainerHost;
  /** Whether a migration arriving here holds the name. */
  arriving: (name: string) => boolean;
  /** This host's own addresses and others no container may take (the LAN's gateway, the testbed's client). */
  reservedAddresses: string[];
  peers: { endpoint: Endpoint; client: Claimer }[];
  controller?: Claimer;
  log: Logger;
  table?: ClaimTable;
}

const CLAIM_TIMEOUT_MS = 5000;

/** What a create holds until the container exists: `release(false)` after a failed create drops the claims. */
export interface Held {
  release(created: boolean): Promise<void>;
}

export class Reservations {
  private readonly deps: ReservationDeps;
  readonly table: ClaimTable;

  constructor(deps: ReservationDeps) {
    this.deps = deps;
    this.table = deps.table ?? new ClaimTable();
  }

  /** A claim asked of this agent (by a peer, or by this host's own create). */
  async claim(c: Claim): Promise<void> {
    const { host } = this.deps;
    const here = host.hostName;
    if (this.deps.arriving(c.name) || host.isBusy(c.name) || (await host.exists(c.name)))
      throw new FerryError(
        'FERRY_E_CONTAINER_EXISTS',
        `a container named ${c.name} already exists on host ${here}`,
        {
          phase: 'input',
        },
      );
    if (c.ip !== undefined) {
      if (this.deps.reservedAddresses.includes(c.ip))
        throw new FerryError('FERRY_E_ADDRESS_TAKEN', `address ${c.ip} belongs to host ${here} or its LAN`, {
          phase: 'input',
          hint: 'a container address must not be a host’s, the gateway’s or the client’s',
        });
      for (const n of await host.names()) {
        const rec = await host.readRecord(n);
        if (rec?.ip === c.ip && rec.name !== c.name)
          throw new FerryError(
            'FERRY_E_ADDRESS_TAKEN',
            `address ${c.ip} is taken by ${rec.name} on host ${here}`,
            {
              phase: 'input',
              hint: 'pick another --ip, or leave it out for the first free one',
            },
          );
      }
    }
    // (after the awaits: the check of the table and the insert are one synchronous step)
    this.table.add(c, here);
  }

  release(token: string): void {
    this.table.release(token);
  }

  /** Claims a name (and address) cluster-wide for a create on this host. */
  async acquire(name: string, ip: string | undefined): Promise<Held> {
    const token = `r${randomBytes(8).toString('hex')}`;
    const c: Claim = { token, name, host: this.deps.host.hostName, ...(ip ? { ip } : {}) };
    const { controller, log } = this.deps;
    if (controller) {
      try {
        await controller.claim(c, { timeoutMs: CLAIM_TIMEOUT_MS });
        // this host's own view too: a migration arriving here is not yet in the controller's picture
        await this.claim(c).catch(async (err) => {
          await controller.releaseClaim(token).catch(() => {});
          throw err;
        });
        return {
          release: async (created) => {
            this.release(token);
            // once created, the controller holds the claim until a heartbeat shows the container
            if (!created)
              await controller.releaseClaim(token, { timeoutMs: CLAIM_TIMEOUT_MS }).catch(() => {});
          },
        };
      } catch (err) {
        if (!(err instanceof FerryError) || err.code !== 'FERRY_E_HOST_UNREACHABLE') throw err;
        log.warn({ err: err.message }, 'controller unreachable: claiming the name on the peer agents');
      }
    }
    const order = [
      { name: this.deps.host.hostName, client: undefined as Claimer | undefined },
      ...this.deps.peers.map((p) => ({ name: p.endpoint.name, client: p.client as Claimer | undefined })),
    ].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const taken: (Claimer | undefined)[] = [];
    const releaseAll = async () => {
      await Promise.all(
        taken.map((cl) =>
          cl ? cl.releaseClaim(token, { timeoutMs: CLAIM_TIMEOUT_MS }).catch(() => {}) : this.release(token),
        ),
      );
    };
    for (const h of order) {
      try {
        if (h.client) await h.client.claim(c, { timeoutMs: CLAIM_TIMEOUT_MS });
        else await this.claim(c);
        taken.push(h.client);
      } catch (err) {
        if (h.client && err instanceof FerryError && err.code === 'FERRY_E_HOST_UNREACHABLE') {
          // a host that is down cannot create either; its own containers' names are checked when it is back
          // (a migration there is refused for a name taken here)
          log.warn({ peer: h.name, err: err.message }, 'peer unreachable: name claimed without it');
          continue;
        }
        await releaseAll();
        throw err;
      }
    }
    return { release: releaseAll };
  }
}
