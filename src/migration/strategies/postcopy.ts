// Post-copy: the one place that knows its sequence. Before the freeze the page server's port is fenced to the
// destination and the destination starts its lazy-pages daemon; the dump writes everything but memory while CRIU
// keeps the tasks and serves their pages; the destination restores at once and faults pages in; after confirm the
// `pages` phase waits for the last of them. Rollback fails the page server (CRIU then lets the tasks go, paused,
// their sockets live: the lazy dump leaves them running, runtime/runc.ts) and closes the fence. The mechanisms (fence, reset) are network/'s; the agent wires them in as PostcopyDeps.
// The pages the dump cannot leave lazy (written private file mappings, the vDSO: the bulk of what crosses before the
// restore) stream to the destination while CRIU writes them, as cold's page images do.
import { randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { FerryError } from '../../core/errors.ts';
import { lazyPages, PAGE_BYTES } from '../../images/pagemap.ts';
import type { LazyCheckpointOptions, LazyDump } from '../../runtime/runc.ts';
import { GrowingFiles } from '../../transport/tail.ts';
import { PAGE_SERVER_PORT_BASE, PAGE_SERVER_PORT_SPAN, PROGRESS_EVERY_MS } from '../defaults.ts';
import { withDeadline } from '../phases.ts';
import { ProgressMeter, pagesLeft } from '../progress.ts';
import type { IncomingRequest, RestoreOptions } from '../types.ts';
import { type MigrationContext, noShare, type Strategy, type TransferShare } from './strategy.ts';

/** What post-copy needs on the source: where its page server listens, a fence around it, a way to fail it. */
export interface PostcopyDeps {
  pageServerAddress: string;
  fence: {
    open(port: number, allow: string): Promise<void>;
    close(port: number, allow: string): Promise<void>;
  };
  /** Makes this host's page server on `port` fail (a connection reset): CRIU then releases the tasks alive. */
  failPageServer(port: number): Promise<void>;
  /** Bytes the page server on `port` has delivered so far (its socket's acknowledged bytes); undefined: unknown. */
  pageServerDelivered?(port: number): Promise<number | undefined>;
  /**
   * The page server's port, when the caller must know it before the migration starts (an SSH tunnel to it is
   * opened first); a random one of the page-server range otherwise.
   */
  port?: () => number;
}

/** Smallest stretch of non-lazy pages sent while CRIU writes (a request's overhead against a millisecond's bytes). */
const TAIL_MIN_BYTES = 64 << 10;

/** How long rollback waits for CRIU to let go of the tasks after its page server failed. */
const RELEASE_WAIT_MS = 10_000;

export class PostcopyStrategy implements Strategy {
  readonly name: 'postcopy' | 'hybrid' = 'postcopy';
  private readonly deps: PostcopyDeps | undefined;
  private fence: { port: number; allow: string } | undefined;
  private lazy: LazyDump | undefined;
  private tail: GrowingFiles | undefined;
  private tailStart: number | undefined;
  /** Bytes of non-lazy pages already sent when the dump was ready. */
  private early = 0;
  /** Hybrid: the last pre-dump round, the lazy dump's parent. */
  protected parent: string | undefined;

  constructor(deps: PostcopyDeps | undefined) {
    this.deps = deps;
  }

  /** Picks the page server's port and lets only the destination reach it, before any freeze. */
  async prepare(ctx: MigrationContext): Promise<Pick<IncomingRequest, 'lazy'>> {
    const pc = this.deps;
    if (!pc || !ctx.req.toAddress) {
      throw new FerryError('FERRY_E_PLAN_STRATEGY', 'post-copy needs the page server address of both hosts', {
        phase: 'prepare',
      });
    }
    const port = pc.port?.() ?? PAGE_SERVER_PORT_BASE + randomInt(PAGE_SERVER_PORT_SPAN);
    await pc.fence.open(port, ctx.req.toAddress);
    this.fence = { port, allow: ctx.req.toAddress };
    return { lazy: { address: pc.pageServerAddress, port } };
  }

  /** The lazy dump's options, once prepare has fenced its page server's port. */
  lazyDumpOptions(ctx: MigrationContext): LazyCheckpointOptions | undefined {
    const pc = this.deps;
    if (!pc || !this.fence) return undefined;
    return {
      imagePath: ctx.images,
      workPath: ctx.images,
      pageServer: `${pc.pageServerAddress}:${this.fence.port}`,
      tcpEstablished: ctx.tcpEstablished,
      ...(this.parent ? { parentPath: this.parent } : {}),
      ...(ctx.req.skipInFlight ? { skipInFlight: true } : {}),
    };
  }

  /** Everything but memory is written; CRIU keeps serving pages from the fenced port. */
  async dump(ctx: MigrationContext): Promise<{ seized: boolean }> {
    const pc = this.deps;
    if (!pc || !this.fence) {
      throw new FerryError('FERRY_E_PLAN_STRATEGY', 'post-copy needs the page server address of both hosts', {
        phase: 'checkpoint',
      });
    }
    // the non-lazy pages are about a megabyte, not cold's hundreds: every new stretch goes at once
    if (!ctx.options.compress) {
      this.tail = new GrowingFiles(ctx.images, (r) => ctx.sender.send(r), {
        parallel: ctx.options.streams,
        minBytes: TAIL_MIN_BYTES,
      });
      this.tailStart = ctx.now();
      this.tail.start();
    }
    // (started before the freeze when it could be: source.ts; its CRIU starts now, with the tail above watching)
    const staged = ctx.stagedLazyDump;
    ctx.stagedLazyDump = undefined;
    const options = this.lazyDumpOptions(ctx)!;
    let lazy: LazyDump;
    try {
      lazy = staged ? await staged.go() : ctx.host.runc.checkpointLazy(ctx.name, options);
    } catch (err) {
      await this.tail?.stop();
      throw err;
    }
    try {
      // a lazy dump that never gets ready must not hold the container frozen past the ceiling
      await withDeadline('checkpoint', lazy.ready, ctx.dumpTimeoutMs);
    } catch (err) {
      lazy.kill();
      await this.tail?.stop();
      throw err;
    }
    this.early = this.tail?.bytes ?? 0;
    this.lazy = lazy;
    return { seized: true };
  }

  /** CRIU has written every image (it serves the lazy pages from memory): the rest of the page images goes now. */
  async transfer(ctx: MigrationContext): Promise<TransferShare> {
    if (!this.tail) return noShare();
    const streamed = new Set(await this.tail.finish());
    if (streamed.size > 0) ctx.report.streamedDuringDump = this.early;
    return { ...noShare(), streamed, ...(this.tailStart !== undefined ? { since: this.tailStart } : {}) };
  }

  async stopSending(): Promise<void> {
    await this.tail?.stop();
  }

  restoreOptions(): Omit<RestoreOptions, 'neighbours'> {
    return this.fence && this.deps
      ? { lazy: { address: this.deps.pageServerAddress, port: this.fence.port } }
      : {};
  }

  /** The `pages` phase: the container runs on the destination; its memory still streams from here. */
  async afterConfirm(ctx: MigrationContext, restoredAt: number): Promise<void> {
    const lazy = this.lazy;
    if (!lazy) return;
    const reporting = reportPages(
      ctx,
      lazy.done,
      (port) => this.deps?.pageServerDelivered?.(port),
      this.fence?.port,
    );
    const [r, first] = await Promise.all([lazy.done, pagesOutcome(ctx)]);
    const pages = await reporting;
    // an agent that could not answer (its link down for a while) is asked again once the page server has ended: the
    // destination keeps the outcome until its source has asked for it
    let dest = first;
    for (const until = Date.now() + PAGES_ASK_AGAIN_MS; 'unasked' in dest && Date.now() < until; ) {
      await new Promise((res) => setTimeout(res, 1000));
      dest = await pagesOutcome(ctx);
    }
    if (this.fence) await this.deps?.fence.close(this.fence.port, this.fence.allow);
    if (r.code !== 0 || !dest.ok) {
      lazy.kill();
      ctx.report.ok = false;
      ctx.report.error = new FerryError(
        'FERRY_E_POSTCOPY_FAILED',
        `post-copy of ${ctx.name} to ${ctx.req.to}: not every page arrived (${dest.ok ? `page server ended with ${r.signal ?? `exit ${r.code}`}` : dest.message}); ` +
          `the container was restored on ${ctx.req.to} with its memory split between hosts and must be considered lost`,
        { phase: 'pages' },
      ).toJSON();
      return;
    }
    pages?.last();
    // the window: from the end of the restore to the last page, the container's memory is on two hosts
    const lastPageMs = Math.round(ctx.now() - restoredAt);
    ctx.report.postcopy = {
      lastPageMs,
      pageServer: `${this.deps?.pageServerAddress}:${this.fence?.port}`,
      ...(pages
        ? { bytes: pages.total, rate: Math.round(pages.total / (Math.max(lastPageMs, 1) / 1000)) }
        : {}),
    };
  }

  /**
   * CRIU still holds the tasks, serving their pages. Failing its page server makes it let go of them as they were
   * (paused; their sockets were taken out of repair mode before the pages, as the dump leaves the tasks alive).
   * Killing CRIU instead would leave them seized mid-way.
   */
  async releaseSource(notes: string[]): Promise<void> {
    if (!this.lazy || !this.fence || !this.deps) return;
    await this.deps.failPageServer(this.fence.port).catch(() => {});
    const ended = await Promise.race([
      this.lazy.done,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), RELEASE_WAIT_MS)),
    ]);
    if (!ended) {
      this.lazy.kill();
      notes.push('the page server did not let go of the container within 10 s and was killed');
    }
  }

  journalExtra(): { pageServerPort?: number } {
    return this.fence ? { pageServerPort: this.fence.port } : {};
  }

  async closeStaged(): Promise<void> {
    if (this.fence) await this.deps?.fence.close(this.fence.port, this.fence.allow).catch(() => {});
  }
}

/**
 * Reports the `pages` phase while the page server runs: the lazy pages the dump left (its pagemaps) against what
 * the page server's socket has delivered. Returns how to report the last one (0 remaining), once every page is known
 * to have arrived, and the lazy bytes; undefined when the dump's pagemaps could not be read.
 */
async function reportPages(
  ctx: MigrationContext,
  done: Promise<unknown>,
  delivered: (port: number) => Promise<number | undefined> | undefined,
  port: number | undefined,
): Promise<{ last(): void; total: number } | undefined> {
  const pagesTotal = await lazyPages(ctx.images).catch(() => undefined);
  if (pagesTotal === undefined) return undefined;
  const total = pagesTotal * PAGE_BYTES;
  const meter = new ProgressMeter(ctx.emit, ctx.now, 'pages', PROGRESS_EVERY_MS.pages);
  let reported: number | undefined;
  const report = (acked: number, last: boolean) => {
    const pagesRemaining = pagesLeft(pagesTotal, acked, last);
    if (pagesRemaining === reported) return;
    reported = pagesRemaining;
    meter.update(total - pagesRemaining * PAGE_BYTES, { total, pagesTotal, pagesRemaining }, true);
  };
  let ended = false;
  void done.then(
    () => {
      ended = true;
    },
    () => {
      ended = true;
    },
  );
  report(0, false);
  while (!ended) {
    await Promise.race([done, sleep(PROGRESS_EVERY_MS.pages)]);
    if (ended) break;
    const acked = port === undefined ? undefined : await delivered(port)?.catch(() => undefined);
    if (acked !== undefined) report(acked, false);
  }
  return { last: () => report(total, true), total };
}

/** How long a destination that could not say how its pages ended is asked again. */
const PAGES_ASK_AGAIN_MS = 30_000;

type PagesOutcome = { ok: boolean; message: string } | { ok: false; unasked: true; message: string };

/** The destination's word on the last pages; `unasked` when it could not be reached. */
function pagesOutcome(ctx: MigrationContext): Promise<PagesOutcome> {
  return ctx.peer.pagesResult(ctx.id).catch((err: Error & { code?: string }): PagesOutcome => {
    const message = `destination unreachable: ${err.message}`;
    // (an agent that answers it does not know the migration, restarted since, never will)
    const unreachable = err.code === 'FERRY_E_HOST_UNREACHABLE' || err.code === 'FERRY_E_PEER_TIMEOUT';
    return unreachable ? { ok: false, unasked: true, message } : { ok: false, message };
  });
}
