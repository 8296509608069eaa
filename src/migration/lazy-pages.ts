// Post-copy on the destination: CRIU's lazy-pages daemon serves the restored container's page faults from the
// source's page server and pulls the rest of its memory in the background. One per incoming post-copy migration.
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { ExecResult, StartedProcess } from '../runtime/exec.ts';

/** Starts CRIU's lazy-pages daemon against the source's page server (the real one: Criu.lazyPages). */
export type LazyPagesStarter = (o: { address: string; port: number; imagesDir: string }) => StartedProcess;

/** Did every page arrive? */
export interface PagesOutcome {
  ok: boolean;
  message: string;
}

export interface LazyPagesDeps {
  /** Undefined on a host that cannot run post-copy restores. */
  start: LazyPagesStarter | undefined;
  hostName: string;
  log: Logger;
  migration: string;
  container: string;
  /** The daemon died before every page arrived (and was not stopped): the container must not run on. */
  onLost: () => Promise<void>;
}

/** How long the daemon may take to open its socket. */
const START_TIMEOUT_MS = 5000;
const POLL_MS = 5;

export class LazyPages {
  /** Resolves once the daemon listens on its socket in the images directory, where runc restore finds it. */
  readonly ready: Promise<void>;
  /** Whether every page arrived; undefined when no daemon could be started at all. */
  readonly outcome: Promise<PagesOutcome> | undefined;
  /** Resolves when the daemon has exited (at once when there is none): it reads the images until then. */
  readonly done: Promise<unknown>;
  private readonly daemon: StartedProcess | undefined;
  private exit: ExecResult | undefined;
  private stopped = false;

  /** Starts the daemon at once; failures to start show in `ready`. */
  constructor(deps: LazyPagesDeps, source: { address: string; port: number }, imagesDir: string) {
    let daemon: StartedProcess | undefined;
    let failed: unknown;
    try {
      if (!deps.start)
        throw new FerryError('FERRY_E_CAPABILITY', 'this host cannot run post-copy restores', {
          phase: 'restore',
        });
      daemon = deps.start({ ...source, imagesDir });
    } catch (err) {
      failed = err;
    }
    this.daemon = daemon;
    if (!daemon) {
      this.ready = Promise.reject(failed);
      this.ready.catch(() => {}); // read by restore; an abort only waits for it to settle
      this.done = Promise.resolve();
      return;
    }
    this.done = daemon.done;
    void daemon.done.then((r) => {
      this.exit = r;
    });
    this.outcome = daemon.done.then((r) =>
      r.code === 0
        ? { ok: true, message: `all pages arrived in ${r.ms} ms` }
        : {
            ok: false,
            message: `criu lazy-pages on ${deps.hostName} ended with ${r.signal ?? `exit ${r.code}`}`,
          },
    );
    void daemon.done.then((r) => this.settle(deps, r));
    this.ready = waitForSocket(daemon, join(imagesDir, 'lazy-pages.socket'));
    this.ready.catch(() => {});
  }

  /** How the daemon ended, if it has. */
  get exited(): ExecResult | undefined {
    return this.exit;
  }

  /** Kills the daemon (an abort): its death then means nothing for a container that is being removed anyway. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.ready.catch(() => {}); // a daemon being started is killed too
    this.daemon?.kill('SIGKILL');
  }

  private async settle(deps: LazyPagesDeps, r: ExecResult): Promise<void> {
    if (r.code === 0) {
      deps.log.info({ migration: deps.migration, ms: r.ms }, 'post-copy: all pages arrived');
      return;
    }
    if (this.stopped) return;
    // pages that never arrive would read as zeroes once the fault handler is gone: stop the container rather
    // than let it run on corrupted memory
    deps.log.error(
      { migration: deps.migration, code: r.code, signal: r.signal, container: deps.container },
      'post-copy failed: stopping the container',
    );
    await deps.onLost().catch((err: unknown) => {
      deps.log.error(
        { err, container: deps.container },
        'post-copy failed: the container could not be stopped',
      );
    });
  }
}

async function waitForSocket(daemon: StartedProcess, socket: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    try {
      await access(socket);
      return;
    } catch {
      const exited = await Promise.race([daemon.done, sleep(POLL_MS, undefined)]);
      if (exited)
        throw new FerryError(
          'FERRY_E_RESTORE_FAILED',
          `criu lazy-pages exited: ${exited.stderr.trim() || exited.code}`,
          { phase: 'restore' },
        );
      if (Date.now() > deadline)
        throw new FerryError('FERRY_E_RESTORE_FAILED', 'criu lazy-pages did not start', { phase: 'restore' });
    }
  }
}
