// Cold: one dump, one restore. The page images stream to the destination while CRIU writes them (the transfer
// overlaps the dump), except when the link wants zstd (the ranges go uncompressed).
import { GrowingFiles } from '../../transport/tail.ts';
import { finalCheckpoint, type MigrationContext, type Strategy, type TransferShare } from './strategy.ts';

export class ColdStrategy implements Strategy {
  readonly name = 'cold' as const;
  readonly plainFinalDump = true;
  private tail: GrowingFiles | undefined;
  private tailStart: number | undefined;
  private early = 0;

  async prepare(): Promise<Record<string, never>> {
    return {};
  }

  async dump(ctx: MigrationContext): Promise<{ seized: boolean }> {
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
    // the page images went out while CRIU wrote them; the common streams send the rest
    const streamed = new Set(this.tail ? await this.tail.finish() : []);
    if (streamed.size > 0) ctx.report.streamedDuringDump = this.early;
    return {
      streamed,
      replaced: new Set(),
      bytes: 0,
      ...(this.tailStart !== undefined ? { since: this.tailStart } : {}),
    };
  }

  restoreOptions(): Record<string, never> {
    return {};
  }

  async stopSending(): Promise<void> {
    await this.tail?.stop();
  }
}
