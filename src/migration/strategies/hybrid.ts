// Hybrid (soft-dirty kernels): pre-dump rounds move most of the memory while the container runs, then post-copy's
// lazy dump, chained to the last round, leaves the rest to fault in at the destination.

import { PostcopyStrategy } from './postcopy.ts';
import { isRoundDir, preDumpRounds } from './precopy-softdirty.ts';
import type { MigrationContext, TransferShare } from './strategy.ts';

export class HybridStrategy extends PostcopyStrategy {
  override readonly name = 'hybrid' as const;

  async rounds(ctx: MigrationContext): Promise<void> {
    this.parent = await preDumpRounds(ctx);
  }

  override async transfer(ctx: MigrationContext): Promise<TransferShare> {
    return { ...(await super.transfer(ctx)), exclude: isRoundDir };
  }
}
