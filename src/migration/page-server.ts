// A cold migration's page server on the destination (decision 0017): CRIU's `page-server`, started at prepare on
// the port the source picked and fenced to the source host's address, takes the source's dump connection over
// TLS and writes the pagemap and page images into the migration's image directory; it exits when the dump ends.
// The restore waits for that exit (a page server that failed means pages are missing); an abort kills it.
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { FerryError } from '../core/errors.ts';
import type { ExecResult, StartedProcess } from '../runtime/exec.ts';
import { pidsNaming } from '../runtime/leftovers.ts';

/** What the agent provides: the page server itself (Criu.pageServer) and a fence around its port. */
export interface PageServerDeps {
  start(o: { port: number; imagesDir: string }): StartedProcess;
  /** Lets only the source host `from` (its address among the agent's peers) reach `port`. */
  fence: {
    open(port: number, from: string): Promise<void>;
    close(port: number, from: string): Promise<void>;
  };
}

/** How long the page server may take to listen. */
const LISTEN_TIMEOUT_MS = 5000;
/** How long a restore waits for the page server to exit once the source's dump has ended. */
const EXIT_TIMEOUT_MS = 10_000;
const POLL_MS = 10;

export class IncomingPageServer {
  private readonly deps: PageServerDeps;
  private readonly port: number;
  private readonly from: string;
  private readonly proc: StartedProcess;
  private exit: ExecResult | undefined;
  private unfenced: Promise<void> | undefined;
  private stopping = false;

  private constructor(deps: PageServerDeps, port: number, from: string, proc: StartedProcess) {
    this.deps = deps;
    this.port = port;
    this.from = from;
    this.proc = proc;
    // the port closes as soon as the page server is done with its one connection (outside the restore's time)
    void proc.done.then((r) => {
      this.exit = r;
      void this.closeFence();
    });
  }

  /** Fences the port, starts the page server and resolves once it listens; on failure nothing is left. */
  static async start(
    deps: PageServerDeps | undefined,
    o: { port: number; imagesDir: string; from: string },
  ): Promise<IncomingPageServer> {
    if (!deps) {
      throw new FerryError('FERRY_E_CAPABILITY', 'this host runs no page server for a cold migration', {
        phase: 'prepare',
      });
    }
    await deps.fence.open(o.port, o.from);
    let ps: IncomingPageServer | undefined;
    try {
      ps = new IncomingPageServer(deps, o.port, o.from, deps.start(o));
      await ps.listening();
      return ps;
    } catch (err) {
      if (ps) await ps.stop();
      else await deps.fence.close(o.port, o.from).catch(() => {});
      throw err;
    }
  }

  private async listening(): Promise<void> {
    const deadline = Date.now() + LISTEN_TIMEOUT_MS;
    while (!(await listensOn(this.port))) {
      if (this.exit) {
        const why = this.exit.stderr.trim().split('\n').pop() || `exit ${this.exit.code}`;
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
      const why = r.stderr.trim().split('\n').pop() || (r.signal ?? `exit ${r.code}`);
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
    return this.proc.done.then((r) =>
      r.code === 0 || this.stopping
        ? undefined
        : r.stderr.trim().split('\n').pop() || (r.signal ?? `exit ${r.code}`),
    );
  }

  /** An abort: the page server goes (a dump still sending then fails) and its port closes. Idempotent. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (!this.exit) this.proc.kill('SIGKILL');
    await this.proc.done;
    await this.closeFence();
  }

  private closeFence(): Promise<void> {
    this.unfenced ??= this.deps.fence.close(this.port, this.from).catch(() => {});
    return this.unfenced;
  }
}

/**
 * What a previous run of the agent left of a migration's page server (the agent died, its child lived on): killed,
 * found by the image directory its command line names, and its fence removed.
 */
export async function removeLeftPageServer(
  deps: PageServerDeps | undefined,
  o: { port: number; imagesDir: string; from: string },
): Promise<void> {
  for (const pid of await pidsNaming(`page-server --images-dir ${o.imagesDir} `)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited meanwhile
    }
  }
  await deps?.fence.close(o.port, o.from).catch(() => {});
}

/** Whether a socket of this network namespace listens on TCP `port` (IPv4 or IPv6). */
async function listensOn(port: number): Promise<boolean> {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')} `;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(table, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // local address, then remote, then the state: 0A is LISTEN
      if (f[1] && `${f[1]} `.endsWith(hex) && f[3] === '0A') return true;
    }
  }
  return false;
}
