// A cold migration's page server on the destination (decision 0017): CRIU's `page-server`, started at prepare on
// the port the source picked and fenced to the source host's address, takes the source's dump connection over
// TLS and writes the pagemap and page images into the migration's image directory; it exits when the dump ends.
// The restore waits for that exit (a page server that failed means pages are missing); an abort kills it.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FerryError } from '../core/errors.ts';
import { listeningInodes, listensItself } from '../network/listeners.ts';
import { firstCriuError } from '../runtime/criu-log.ts';
import type { ExecResult, StartedProcess } from '../runtime/exec.ts';
import { pidsNaming } from '../runtime/leftovers.ts';
import { PAGE_SERVER_PORT_BASE, PAGE_SERVER_PORT_SPAN } from './defaults.ts';

/** What the agent provides: the page server itself (Criu.pageServer) and a fence around its port. */
export interface PageServerDeps {
  start(o: { port: number; imagesDir: string }): StartedProcess;
  /**
   * Lets only the source host `from` (its address among the agent's peers) reach `port`; the rule names the
   * migration, so closing it never removes another migration's rule for the same port.
   */
  fence: {
    open(port: number, from: string, migration: string): Promise<void>;
    close(port: number, from: string, migration: string): Promise<void>;
  };
}

/** Where the page server is and whose it is: the port, its image directory, the source host, the migration. */
export interface PageServerPlace {
  port: number;
  imagesDir: string;
  from: string;
  migration: string;
}

/** CRIU's log of the page server (`-o page-server.log` in its work directory, the image directory). */
const LOG = 'page-server.log';

/** How long the page server may take to listen. */
const LISTEN_TIMEOUT_MS = 5000;
/** How long a restore waits for the page server to exit once the source's dump has ended. */
const EXIT_TIMEOUT_MS = 10_000;
const POLL_MS = 10;

export class IncomingPageServer {
  private readonly deps: PageServerDeps;
  private readonly at: PageServerPlace;
  private readonly proc: StartedProcess;
  private exit: ExecResult | undefined;
  private unfenced: Promise<void> | undefined;
  private stopping = false;

  private constructor(deps: PageServerDeps, at: PageServerPlace, proc: StartedProcess) {
    this.deps = deps;
    this.at = at;
    this.proc = proc;
    // the port closes as soon as the page server is done with its one connection (outside the restore's time)
    void proc.done.then((r) => {
      this.exit = r;
      void this.closeFence();
    });
  }

  /**
   * Fences the port, starts the page server and resolves once it listens; on failure nothing is left. A port out
   * of the page servers' range, or one something here already listens on, is refused before anything is done.
   */
  static async start(deps: PageServerDeps | undefined, o: PageServerPlace): Promise<IncomingPageServer> {
    if (!deps) {
      throw new FerryError('FERRY_E_CAPABILITY', 'this host runs no page server for a cold migration', {
        phase: 'prepare',
      });
    }
    const last = PAGE_SERVER_PORT_BASE + PAGE_SERVER_PORT_SPAN - 1;
    if (!Number.isInteger(o.port) || o.port < PAGE_SERVER_PORT_BASE || o.port > last) {
      const message = `page server port ${o.port} is outside the page servers' range ${PAGE_SERVER_PORT_BASE}-${last}`;
      throw new FerryError('FERRY_E_INPUT_REQUEST', message, { phase: 'prepare' });
    }
    // (a race with another program binding it meanwhile remains: CRIU then fails to bind and says so)
    if ((await listeningInodes(o.port)).length > 0) {
      const message = `port ${o.port} for the page server of migration ${o.migration} is already listened on here`;
      throw new FerryError('FERRY_E_PORT_TAKEN', message, {
        phase: 'prepare',
        hint: 'migrate again: the source picks another port',
      });
    }
    await deps.fence.open(o.port, o.from, o.migration);
    let ps: IncomingPageServer | undefined;
    try {
      ps = new IncomingPageServer(deps, o, deps.start({ port: o.port, imagesDir: o.imagesDir }));
      await ps.listening();
      return ps;
    } catch (err) {
      if (ps) await ps.stop();
      else await deps.fence.close(o.port, o.from, o.migration).catch(() => {});
      throw err;
    }
  }

  /** Until the page server itself listens: its own socket among its fds, not merely something on the port. */
  private async listening(): Promise<void> {
    const deadline = Date.now() + LISTEN_TIMEOUT_MS;
    const pid = this.proc.pid;
    while (pid === undefined || !(await listensItself(pid, this.at.port))) {
      if (this.exit) {
        const why = await this.why(this.exit);
        throw new FerryError('FERRY_E_TRANSFER_FAILED', `criu page-server did not start: ${why}`, {
          phase: 'prepare',
        });
      }
      if (Date.now() > deadline)
        throw new FerryError('FERRY_E_TRANSFER_FAILED', 'criu page-server did not listen in time', {
          phase: 'prepare',
        });
      await sleep(POLL_MS);
    }
  }

  /**
   * Before the restore: the source's dump has ended, so the page server must have ended too, cleanly (every page
   * written; TLS checked each record on the way). Otherwise pages are missing and the restore must not run.
   */
  async finished(): Promise<void> {
    const r = await Promise.race([this.proc.done, sleep(EXIT_TIMEOUT_MS, undefined)]);
    if (!r) {
      this.proc.kill('SIGKILL');
      throw new FerryError('FERRY_E_TRANSFER_FAILED', 'criu page-server still running after the dump ended', {
        phase: 'restore',
      });
    }
    if (r.code !== 0) {
      const why = await this.why(r);
      throw new FerryError('FERRY_E_TRANSFER_FAILED', `criu page-server failed: ${why}`, {
        phase: 'restore',
      });
    }
  }

  /**
   * Resolves with the page server's last words when it ends on its own with a failure (a full disk, a TLS error):
   * the source only sees its connection drop, so the destination's log is where the cause shows.
   */
  get failed(): Promise<string | undefined> {
    return this.proc.done.then((r) => (r.code === 0 || this.stopping ? undefined : this.why(r)));
  }

  /**
   * Why the page server ended: the first error of its CRIU log (its stderr is empty: CRIU logs to the file), else
   * its stderr's last line, else its exit status.
   */
  private async why(r: ExecResult): Promise<string> {
    const logged = firstCriuError(await readFile(join(this.at.imagesDir, LOG), 'utf8').catch(() => ''));
    return logged || r.stderr.trim().split('\n').pop() || (r.signal ?? `exit ${r.code}`);
  }

  /** An abort: the page server goes (a dump still sending then fails) and its port closes. Idempotent. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (!this.exit) this.proc.kill('SIGKILL');
    await this.proc.done;
    await this.closeFence();
  }

  private closeFence(): Promise<void> {
    const { port, from, migration } = this.at;
    this.unfenced ??= this.deps.fence.close(port, from, migration).catch(() => {});
    return this.unfenced;
  }
}

/**
 * What a previous run of the agent left of a migration's page server (the agent died, its child lived on): killed,
 * found by the image directory its command line names, and its fence removed.
 */
export async function removeLeftPageServer(
  deps: PageServerDeps | undefined,
  o: PageServerPlace,
): Promise<void> {
  for (const pid of await pidsNaming(`page-server --images-dir ${o.imagesDir} `)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited meanwhile
    }
  }
  await deps?.fence.close(o.port, o.from, o.migration).catch(() => {});
}
