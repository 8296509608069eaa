// Cold: one dump, one restore. Between two agents the dump sends its pages straight to a CRIU page server on the
// destination (decision 0017): C to C over TLS, into the destination's image directory while CRIU dumps, and the
// transfer phase carries only the rest. Without the page server (an agentless destination behind ssh, a link that
// wants zstd) the page images stream to the destination while CRIU writes them (the transfer overlaps the dump),
// except with zstd (the ranges go uncompressed).
import { randomInt } from 'node:crypto';
import { FerryError } from '../../core/errors.ts';
import { PAGE_BYTES } from '../../images/pagemap.ts';
import type { CriuTls } from '../../runtime/criu.ts';
import { GrowingFiles } from '../../transport/tail.ts';
import { PAGE_SERVER_PORT_BASE, PAGE_SERVER_PORT_SPAN } from '../defaults.ts';
import type { IncomingRequest } from '../types.ts';
import { finalCheckpoint, type MigrationContext, type Strategy, type TransferShare } from './strategy.ts';

/** What the page server path needs on the source: the agent's TLS material for CRIU, and a stall watch. */
export interface ColdDeps {
  tls: CriuTls;
  /**
   * The link's stall timeout (`deadlines.stallMs`) for the dump's connection to the page server: CRIU's socket
   * has none of its own, so a cut link would hold the freeze until its ceiling.
   */
  stallMs: number;
  /** Calls `onStall` once the connection to `address:port` makes no progress for `stallMs` (network/tcp-stall.ts). */
  watch(o: { address: string; port: number; stallMs: number }, onStall: () => void): { stop(): void };
  /**
   * Ends the dump's connection to the page server at `address:port` from outside (network/tcp-stall.ts). Never a
   * kill: CRIU seizes the tasks after it connects, then puts their TCP sockets in repair mode and sends pages with
   * its parasite inside them, and a CRIU killed there leaves them running with their clients' connections dead.
   * Its write fails instead, and it undoes all that itself before it exits; runc's checkpoint then fails and
   * rollback thaws the container. (Only the freeze's ceiling kills a dump: runc.ts.)
   */
  cutDump(o: { address: string; port: number }): Promise<void>;
}

export class ColdStrategy implements Strategy {
  readonly name = 'cold' as const;
  readonly plainFinalDump = true;
  private readonly deps: ColdDeps | undefined;
  private tail: GrowingFiles | undefined;
  private tailStart: number | undefined;
  private early = 0;
  /** The destination's page server, when the pages go there. */
  private pages: { address: string; port: number } | undefined;
  private dumpStart: number | undefined;

  constructor(deps?: ColdDeps) {
    this.deps = deps;
  }

  /**
   * With the page server: picks its port; the destination's prepare starts it, fenced to this host, or refuses a
   * port something there already listens on (FERRY_E_PORT_TAKEN, before any freeze).
   */
  async prepare(ctx: MigrationContext): Promise<Pick<IncomingRequest, 'pages'>> {
    if (!this.deps || ctx.options.compress || !ctx.req.toAddress) return {};
    const port = PAGE_SERVER_PORT_BASE + randomInt(PAGE_SERVER_PORT_SPAN);
    this.pages = { address: ctx.req.toAddress, port };
    // the final dump's options (staged before the freeze or not) send the pages there, over TLS
    ctx.finalDumpPages = { pageServer: `${ctx.req.toAddress}:${port}`, pageServerTls: this.deps.tls };
    return { pages: { port } };
  }

  async dump(ctx: MigrationContext): Promise<{ seized: boolean }> {
    const deps = this.deps;
    const pages = this.pages;
    if (pages && deps) {
      // a page server that fails, or a link that stalls, fails the dump: rollback thaws the container
      this.dumpStart = ctx.now();
      let stalled: Promise<void> | undefined;
      const watch = deps.watch({ ...pages, stallMs: deps.stallMs }, () => {
        // (if the cut itself fails, the dump runs on until the freeze's ceiling kills it)
        stalled = deps.cutDump(pages);
      });
      try {
        await finalCheckpoint(ctx);
      } catch (err) {
        if (!stalled) throw err;
        await stalled.catch(() => {});
        const message = `host ${ctx.peer.name} (${pages.address}:${pages.port}) stopped answering: the dump's pages made no progress for ${deps.stallMs} ms`;
        throw new FerryError('FERRY_E_PEER_TIMEOUT', message, { phase: 'checkpoint', cause: err });
      } finally {
        watch.stop();
      }
      return { seized: false };
    }
    if (!ctx.options.compress) {
      this.tail = new GrowingFiles(ctx.images, (r) => ctx.sender.send(r), { parallel: ctx.options.streams });
      this.tailStart = ctx.now();
      this.tail.start();
    }
    try {
      await finalCheckpoint(ctx);
    } catch (err) {
      await this.tail?.stop();
      throw err;
    }
    this.early = this.tail?.bytes ?? 0;
    return { seized: false };
  }

  async transfer(ctx: MigrationContext): Promise<TransferShare> {
    // the pages are at the destination already (its page server) or went out while CRIU wrote them; the common
    // streams send the rest
    const streamed = new Set(this.tail ? await this.tail.finish() : []);
    if (streamed.size > 0) ctx.report.streamedDuringDump = this.early;
    const since = this.tailStart ?? this.dumpStart;
    // what the page server took counts as sent (CRIU's own count): the report's bytes and the link rate include it
    const pageBytes =
      this.dumpStart !== undefined ? (ctx.report.criu.dump?.pagesWritten ?? 0) * PAGE_BYTES : 0;
    return { streamed, replaced: new Set(), bytes: pageBytes, ...(since !== undefined ? { since } : {}) };
  }

  restoreOptions(): Record<string, never> {
    return {};
  }

  async stopSending(): Promise<void> {
    await this.tail?.stop();
  }
}
