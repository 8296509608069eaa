// Content-delta pre-copy (kernels without soft-dirty tracking): rounds dump while the container keeps running (each
// still freezes it for as long as CRIU reads its memory) and send only pages the destination lacks; the final dump
// then sends its new pages as blocks and its page images as recipes.
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PageDelta, pageImages, writeFiles, writeRecipes } from '../../transport/block-store.ts';
import { encodeTree } from '../../transport/image-stream/index.ts';
import { stopRule } from './stop-rule.ts';
import { finalCheckpoint, type MigrationContext, type Strategy, type TransferShare } from './strategy.ts';

export class PrecopyDeltaStrategy implements Strategy {
  readonly name = 'precopy' as const;
  readonly plainFinalDump = true;
  private readonly delta = new PageDelta();

  async prepare(): Promise<Record<string, never>> {
    return {};
  }

  async rounds(ctx: MigrationContext): Promise<void> {
    const { host, peer, id, images, report, options } = ctx;
    const roundBytes: number[] = [];
    let stop = `--max-rounds ${options.maxRounds} reached`;
    for (let r = 1; r <= options.maxRounds; r++) {
      const dir = join(images, `round-${r}`);
      await mkdir(dir, { recursive: true });
      const t0 = ctx.now();
      try {
        await host.runc.pause(ctx.name);
        await host.runc.checkpoint(ctx.name, {
          imagePath: dir,
          workPath: dir,
          leaveRunning: true,
          tcpEstablished: ctx.tcpEstablished,
          ...(ctx.req.skipInFlight ? { skipInFlight: true } : {}),
        });
      } finally {
        await host.runc.resume(ctx.name).catch(() => {});
      }
      const dumpMs = ctx.now() - t0;
      const d = this.delta.delta(dir, await pageImages(dir));
      const t1 = ctx.now();
      await peer.sendBlocks(id, d.blocks);
      const sendMs = Math.max(1, ctx.now() - t1);
      const bytes = d.newBytes();
      await rm(dir, { recursive: true, force: true });
      // the round's recipes go too (while the container runs): the final dump's recipes are then sent as diffs
      const recipes = await d.recipes;
      const recipeDir = join(images, `recipes-${r}`);
      await mkdir(recipeDir, { recursive: true });
      await writeRecipes(recipeDir, recipes);
      await peer.send(id, 'images', encodeTree([{ root: recipeDir, prefix: `recipes-${r}` }]));
      await rm(recipeDir, { recursive: true, force: true });
      this.delta.remember(r, recipes);
      roundBytes.push(bytes);
      report.rounds.push({ bytes, ms: Math.round(ctx.now() - t0) });
      ctx.emit({
        type: 'progress',
        phase: 'rounds',
        round: r,
        bytes,
        rate: Math.round((bytes * 1000) / sendMs),
      });
      ctx.emit({
        type: 'info',
        message: `round ${r}: ${bytes} new bytes (dump ${Math.round(dumpMs)} ms, send ${Math.round(sendMs)} ms)`,
      });
      const decision = stopRule({
        round: r,
        roundBytes,
        rateBytesPerMs: bytes / sendMs,
        budgetMs: options.maxDowntimeMs,
        thresholdBytes: options.thresholdBytes,
        maxRounds: options.maxRounds,
      });
      if (decision.stop) {
        stop = decision.reason;
        break;
      }
    }
    report.precopy = { stop, roundBytes, switchoverBytes: 0, distinctPages: this.delta.distinctPages };
  }

  async dump(ctx: MigrationContext): Promise<{ seized: boolean }> {
    await finalCheckpoint(ctx);
    return { seized: false };
  }

  async transfer(ctx: MigrationContext): Promise<TransferShare> {
    // only pages the destination lacks; the page images travel as recipes (a rollback thaws the frozen source and
    // never needs them)
    const files = await pageImages(ctx.images);
    const d = this.delta.delta(ctx.images, files);
    await ctx.peer.sendBlocks(ctx.id, d.blocks);
    const recipeBytes = await writeFiles(ctx.images, this.delta.encodeRecipes(await d.recipes));
    // what the switchover carries: the pages the destination lacked and the recipes (diffs where smaller)
    if (ctx.report.precopy) {
      ctx.report.precopy.switchoverBytes = d.newBytes() + recipeBytes;
      ctx.report.precopy.changedPages = this.delta.changedPages;
    }
    return { streamed: new Set(), replaced: new Set(files), bytes: d.newBytes() };
  }

  restoreOptions(): Record<string, never> {
    return {};
  }
}
