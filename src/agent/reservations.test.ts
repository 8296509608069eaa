// Cluster-wide claims without a controller: two creates of one name (or one address) at once on different hosts,
// each claiming on every agent in host-name order: exactly one goes ahead.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { ClaimRequest } from '../api/types.ts';
import { FerryError } from '../core/errors.ts';
import { silentLogger } from '../core/log.ts';
import { ContainerHost } from '../host/containers.ts';
import { hostPaths } from '../host/paths.ts';
import type { NetworkLike } from '../network/identity.ts';
import type { RuncLike } from '../runtime/runc.ts';
import { type Claimer, Reservations } from './reservations.ts';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const runc = { root: '/f', state: async () => undefined } as unknown as RuncLike;
const network = {} as NetworkLike;

/** Three agents a, b, c whose peers reach each other in process, each call after a random delay. */
async function cluster(opts: { down?: string } = {}) {
  const names = ['a', 'b', 'c'];
  const agents = new Map<string, Reservations>();
  const delay = () => new Promise((r) => setTimeout(r, Math.random() * 5));
  const client = (n: string): Claimer => ({
    async claim(c: ClaimRequest) {
      await delay();
      if (n === opts.down) throw new FerryError('FERRY_E_HOST_UNREACHABLE', `host ${n} unreachable`);
      await agents.get(n)!.claim(c);
    },
    async releaseClaim(token: string) {
      await delay();
      agents.get(n)!.release(token);
    },
  });
  for (const n of names) {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-claims-'));
    dirs.push(dir);
    const host = new ContainerHost({
      hostName: n,
      paths: hostPaths(dir),
      runc,
      cgroupParent: '/t',
      network,
      log: silentLogger(),
    });
    await host.init();
    agents.set(
      n,
      new Reservations({
        host,
        arriving: () => false,
        reservedAddresses: [`10.0.0.${names.indexOf(n) + 2}`],
        peers: names
          .filter((p) => p !== n)
          .map((p) => ({ endpoint: { name: p, address: '10.0.0.9', port: 1 }, client: client(p) })),
        log: silentLogger(),
      }),
    );
  }
  return agents;
}

test('two creates of one name at once on b and c: exactly one holds it, the other gets CONTAINER_EXISTS', async () => {
  for (let round = 0; round < 20; round++) {
    const agents = await cluster();
    const results = await Promise.allSettled([
      agents.get('b')!.acquire(`race${round}`, undefined),
      agents.get('c')!.acquire(`race${round}`, undefined),
    ]);
    const ok = results.filter((r) => r.status === 'fulfilled');
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(ok.length, 1, `round ${round}: ${JSON.stringify(results.map((r) => r.status))}`);
    assert.equal((refused[0]!.reason as FerryError).code, 'FERRY_E_CONTAINER_EXISTS');
    assert.match((refused[0]!.reason as FerryError).message, /being created on host [bc]/);
    // the loser holds nothing anywhere; the winner's release frees the name everywhere
    await (ok[0] as PromiseFulfilledResult<{ release(c: boolean): Promise<void> }>).value.release(false);
    for (const r of agents.values()) assert.deepEqual(r.table.list(), []);
  }
});

test('two creates with one address at once: one gets ADDRESS_TAKEN; a host address is refused by that host', async () => {
  const agents = await cluster();
  const results = await Promise.allSettled([
    agents.get('a')!.acquire('x1', '10.0.0.60'),
    agents.get('c')!.acquire('x2', '10.0.0.60'),
  ]);
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
  const refused = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')!;
  assert.equal((refused.reason as FerryError).code, 'FERRY_E_ADDRESS_TAKEN');
  await assert.rejects(agents.get('a')!.acquire('x3', '10.0.0.3'), (e: FerryError) => {
    assert.equal(e.code, 'FERRY_E_ADDRESS_TAKEN');
    assert.match(e.message, /host b/);
    return true;
  });
});

test('an unreachable peer does not block creates elsewhere', async () => {
  const agents = await cluster({ down: 'b' });
  const held = await agents.get('a')!.acquire('solo', undefined);
  await held.release(true);
});
