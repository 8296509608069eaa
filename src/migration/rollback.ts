// Both ends of the source's copy after a final dump (decision 9). The dump left the tasks alive and frozen, so:
// - rollback (any failure before the destination commits): the destination is aborted first (two copies must never
//   run at once), then the source is thawed: network re-attached, cgroup resumed, lock lifted, address announced.
//   It never asks CRIU to restore the images just written, so a restore CRIU cannot do (on either host) loses
//   nothing. The strategy undoes what only it knows (a tail still sending, a page server holding the tasks).
// - finish (after the commit): the frozen copy is killed while its network is still cut off, then forgotten.
import { rm } from 'node:fs/promises';
import type { Logger } from '../core/log.ts';
import { type ContainerHost, identity } from '../host/containers.ts';
import { removeRelinked } from '../host/link-remaps.ts';
import { imageDir } from '../host/paths.ts';
import { REFUSED_GRACE_MS, RefusalClock } from './peer-refusal.ts';
import type { Progress } from './phases.ts';
import type { Strategy } from './strategies/strategy.ts';
import type { DestinationPeer, MigrationReport } from './types.ts';

export type RollbackResult = NonNullable<MigrationReport['rollback']>;

const ABORT_ATTEMPTS = 3;
const ABORT_RETRY_MS = 200;

export interface RollbackDeps {
  host: ContainerHost;
  log: Logger;
  /** How long a destination keeps an uncommitted copy without a commit before it kills it on its own. */
  commitDeadlineMs: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

export async function rollback(
  deps: RollbackDeps,
  m: {
    name: string;
    id: string;
    peer: DestinationPeer;
    progress: Progress;
    strategy: Strategy | undefined;
    /** The migration failed because the peer stopped answering (FERRY_E_PEER_TIMEOUT): it is silent already. */
    peerSilent?: boolean;
  },
): Promise<RollbackResult> {
  const { host } = deps;
  const now = deps.now ?? Date.now;
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const { name, id, peer, progress, strategy } = m;
  const notes: string[] = [];
  await strategy?.stopSending?.();
  if (progress.inDoubt) {
    // the commit may have landed: only the destination's answer tells, and resuming here could run it twice
    notes.push(
      `${peer.name} may have committed ${name}; the source copy stays frozen until ${peer.name} answers`,
    );
    return { sourceRunning: false, destinationCleaned: false, action: 'in-doubt', note: notes.join('; ') };
  }
  let destinationCleaned = !progress.prepared;
  let committed = false;
  // a peer that does not answer at all (its link cut, its agent gone) is not asked again here: before a restore it
  // runs no copy, so the thaw need not wait; the abort is repeated in the background (source.ts). Before a restore, a
  // peer the migration has just found silent is not asked first at all: the try would wait out another stall with
  // the container frozen. (After a restore was asked it is asked as before: it may run a copy.)
  const knownSilent = m.peerSilent === true && !progress.restoreRequested;
  let silent = knownSilent;
  const refusals = new RefusalClock(now);
  const tryAbort = async (last: boolean): Promise<void> => {
    try {
      await peer.abort(id);
      destinationCleaned = true;
    } catch (err) {
      refusals.note(err);
      const code = (err as { code?: string }).code;
      if (code === 'FERRY_E_PEER_TIMEOUT' || code === 'FERRY_E_HOST_UNREACHABLE') silent = true;
      // a commit still in flight may have landed meanwhile: the destination refuses the abort then, and says so
      if (progress.commitSent && (await peer.status(id).catch(() => undefined)) === 'committed')
        committed = true;
      else if (last) notes.push(`destination ${peer.name} not cleaned: ${(err as Error).message}`);
    }
  };
  if (progress.prepared) {
    if (knownSilent) notes.push(`destination ${peer.name} not cleaned: it stopped answering`);
    for (
      let attempt = 0;
      attempt < ABORT_ATTEMPTS && !knownSilent && !destinationCleaned && !committed;
      attempt++
    ) {
      await tryAbort(attempt === ABORT_ATTEMPTS - 1 || (silent && !progress.restoreRequested));
      if (silent && !progress.restoreRequested) break;
      if (!destinationCleaned && !committed) await sleep(ABORT_RETRY_MS);
    }
    if (!destinationCleaned && !committed && progress.restoreRequested) {
      // it may run an uncommitted copy: it kills that itself once its commit deadline passes (at once if its agent
      // died); thawing before then could run the container twice
      // (not once the commit was sent: a committed copy has no switch left and outlives its agent)
      const until = (progress.restoreRequestedAt ?? now()) + deps.commitDeadlineMs;
      const agentGone = () => !progress.commitSent && refusals.gone();
      while (!destinationCleaned && !committed && now() < until && !agentGone()) {
        await sleep(Math.min(1000, Math.max(0, until - now())));
        await tryAbort(false);
      }
      if (!destinationCleaned && !committed)
        notes.push(
          agentGone()
            ? `${peer.name} refused connections for ${REFUSED_GRACE_MS / 1000} s: its agent is gone, and the uncommitted copy with it`
            : `waited for ${peer.name}'s commit deadline before thawing`,
        );
    }
  }
  if (committed) {
    // the migration went through after all: the source copy must go, not thaw
    notes.push(`${peer.name} committed ${name} after all`);
    return { sourceRunning: false, destinationCleaned: false, action: 'committed', note: notes.join('; ') };
  }
  // the links for the restore go before the container runs again (it finds its rootfs as it left it)
  if (progress.relinked?.length)
    await removeRelinked(progress.relinked).catch((err: Error) =>
      notes.push(`removing the links made for the restore failed: ${err.message}`),
    );
  const sourceRunning = await thaw(host, name, progress, strategy, notes);
  await strategy?.closeStaged?.();
  const images = imageDir(host.paths, id);
  // (not running: the images stay for a manual restore, the only copy of the state left)
  if (sourceRunning) await rm(images, { recursive: true, force: true });
  else notes.push(`images kept in ${images}`);
  deps.log.warn(
    { container: name, migration: id, sourceRunning, destinationCleaned, notes },
    'migration rolled back',
  );
  const out: RollbackResult = {
    sourceRunning,
    destinationCleaned,
    action: sourceRunning ? 'thawed' : 'lost',
  };
  if (notes.length) out.note = notes.join('; ');
  return out;
}

/**
 * Makes the source's copy run again where the migration left it: re-attached, resumed, unlocked, announced. Every
 * step is safe to repeat (a restarted agent thaws a container whose state it only knows from its journal).
 * Returns whether the container runs.
 */
export async function thaw(
  host: ContainerHost,
  name: string,
  progress: Pick<Progress, 'detached' | 'quiesced'>,
  strategy: Strategy | undefined,
  notes: string[],
): Promise<boolean> {
  const rec = await host.readRecord(name);
  const net = rec ? identity(rec) : { mode: 'none' as const };
  if (progress.detached) {
    await host.network
      .attach(name, net)
      .catch((err: Error) => notes.push(`re-attaching the network failed: ${err.message}`));
  }
  await strategy?.releaseSource?.(notes);
  let st = (await host.runc.state(name))?.status;
  if (st === 'paused') {
    await host.runc.resume(name).catch((err: Error) => notes.push(`runc resume failed: ${err.message}`));
    st = (await host.runc.state(name))?.status;
  }
  if (st !== 'running') {
    notes.push(`nothing to thaw: ${name} is ${st ?? 'gone'} on ${host.hostName}`);
    return false;
  }
  if (progress.quiesced) {
    await host.network
      .unlock(name, net)
      .catch((err: Error) => notes.push(`unlocking the network failed: ${err.message}`));
  }
  // (also when it was never detached: a held switchover announced the address on the destination at the lock)
  if (progress.detached || progress.quiesced) host.network.reannounce(name, net);
  return true;
}

/**
 * After the destination committed: the source's frozen copy is killed while its network is still cut off (a
 * closing socket would otherwise send a FIN or a reset to the client from the old host), then its record,
 * namespace and images go.
 */
export async function finishSource(host: ContainerHost, name: string, id: string): Promise<void> {
  const rec = await host.readRecord(name);
  const net = rec ? identity(rec) : undefined;
  if (net) await host.network.silence?.(name, net);
  try {
    await host.forget(name);
  } finally {
    if (net) await host.network.unsilence?.(name, net);
  }
  await rm(imageDir(host.paths, id), { recursive: true, force: true });
}
