// Rollback for a failure in any phase before confirm: the destination is aborted first (two copies must never run
// at once), then the container runs again on the source: resumed where the dump left it, or restored from its local
// checkpoint. The strategy undoes what only it knows (a tail still sending, a page server holding the tasks).
import { rm } from 'node:fs/promises';
import type { Logger } from '../core/log.ts';
import { type ContainerHost, identity } from '../host/containers.ts';
import { bundleDir, imageDir } from '../host/paths.ts';
import type { Progress } from './phases.ts';
import type { Strategy } from './strategies/strategy.ts';
import type { DestinationPeer, MigrationReport } from './types.ts';

export type RollbackResult = NonNullable<MigrationReport['rollback']>;

const ABORT_ATTEMPTS = 3;
const ABORT_RETRY_MS = 200;

export async function rollback(
  deps: { host: ContainerHost; log: Logger },
  m: { name: string; id: string; peer: DestinationPeer; progress: Progress; strategy: Strategy | undefined },
): Promise<RollbackResult> {
  const { host } = deps;
  const { name, id, peer, progress, strategy } = m;
  const notes: string[] = [];
  await strategy?.stopSending?.();
  let destinationCleaned = !progress.prepared;
  if (progress.prepared) {
    for (let attempt = 0; attempt < ABORT_ATTEMPTS && !destinationCleaned; attempt++) {
      try {
        await peer.abort(id);
        destinationCleaned = true;
      } catch (err) {
        if (attempt === ABORT_ATTEMPTS - 1)
          notes.push(`destination ${peer.name} not cleaned: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, ABORT_RETRY_MS));
      }
    }
    if (!destinationCleaned && progress.restoreRequested) {
      notes.push(`${peer.name} drops its uncommitted copy when its agent restarts`);
    }
  }
  const images = imageDir(host.paths, id);
  const rec = await host.readRecord(name);
  const net = rec ? identity(rec) : { mode: 'none' as const };
  if (progress.detached) {
    await host.network
      .attach(name, net)
      .catch((err: Error) => notes.push(`re-attaching the network failed: ${err.message}`));
  }
  await strategy?.releaseSource?.(notes);
  let sourceRunning = false;
  const st = await host.runc.state(name);
  if (st?.status === 'running') {
    sourceRunning = true;
    if (progress.quiesced) await host.network.unlock(name, net).catch(() => {});
  } else if (st?.status === 'paused') {
    await host.runc.resume(name).catch(() => {});
    sourceRunning = (await host.runc.state(name))?.status === 'running';
    if (progress.quiesced) await host.network.unlock(name, net).catch(() => {});
    if (progress.detached) host.network.reannounce(name, net);
  } else if (progress.sourceStopped) {
    try {
      await host.runc.delete(name);
      await host.runc.restore(name, {
        bundle: bundleDir(host.paths, name),
        imagePath: images,
        workPath: images,
        tcpEstablished: net.mode !== 'none',
      });
      sourceRunning = (await host.runc.state(name))?.status === 'running';
      // the dump's lock held the client's packets; the restored sockets take over now
      await host.network.clearCriuLocks(name, net);
      if (progress.quiesced) await host.network.unlock(name, net);
      host.network.reannounce(name, net);
    } catch (err) {
      notes.push(`local restore failed: ${(err as Error).message}; images kept in ${images}`);
    }
  }
  await strategy?.closeStaged?.();
  if (sourceRunning) await rm(images, { recursive: true, force: true });
  deps.log.warn(
    { container: name, migration: id, sourceRunning, destinationCleaned, notes },
    'migration rolled back',
  );
  const out: RollbackResult = { sourceRunning, destinationCleaned };
  if (notes.length) out.note = notes.join('; ');
  return out;
}
