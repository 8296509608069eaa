// Soft-dirty pre-copy (kernels that track dirty memory): `runc checkpoint --pre-dump` rounds, each chained to the
// previous with --parent-path and streamed into round-N at the destination; the final dump then holds only what
// changed since the last round.
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pageImages } from '../../transport/block-store.ts';
import { encodeTree } from '../../transport/image-stream/index.ts';
import { stopRule } from './stop-rule.ts';
import {
  finalCheckpoint,
  type MigrationContext,
  noShare,
  type Strategy,
  type TransferShare,
} from './strategy.ts';

/** The round directories: already at the destination when the final images go. */
export const isRoundDir = (rel: string): boolean => /^round-\d+$/.test(rel);

/**
 * Pre-dump rounds until the stop rule says switch over. Returns the last round's directory, relative to the image
 * directory (the final dump's parent), or undefined when there was none.
 */
export async function preDumpRounds(ctx: MigrationContext): Promise<string | undefined> {
  const { host, peer, id, images, report, options } = ctx;
  const roundBytes: number[] = [];
  let stop = `--max-rounds ${options.maxRounds} reached`;
  let last: string | undefined;
  for (let r = 1; r <= options.maxRounds; r++) {
    const name = `round-${r}`;
    const dir = join(images, name);
    await mkdir(dir, { recursive: true });
    const t0 = ctx.now();
    await host.runc.checkpoint(ctx.name, {
      imagePath: dir,
      workPath: dir,
      preDump: true,
      ...(last ? { parentPath: `../${last}` } : {}),
    });
    let bytes = 0;
    for (const f of await pageImages(dir)) bytes += (await stat(join(dir, f))).size;
    const t1 = ctx.now();
    await peer.send(
      id,
      'images',
      encodeTree([{ root: dir, prefix: name }], { exclude: (rel) => rel.endsWith('.log') }),
    );
    const sendMs = Math.max(1, ctx.now() - t1);
    last = name;
    roundBytes.push(bytes);
    report.rounds.push({ bytes, ms: Math.round(ctx.now() - t0) });
    ctx.emit({ type: 'info', message: `pre-dump round ${r}: ${bytes} bytes` });
    ctx.emit({
      type: 'progress',
      phase: 'rounds',
      round: r,
      bytes,
      rate: Math.round((bytes * 1000) / sendMs),
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
  report.precopy = { stop, roundBytes, switchoverBytes: 0, distinctPages: 0 };
  return last;
}

export class PrecopySoftDirtyStrategy implements Strategy {
  readonly name = 'precopy' as const;
  private parent: string | undefined;

  async prepare(): Promise<Record<string, never>> {
    return {};
  }

  async rounds(ctx: MigrationContext): Promise<void> {
    this.parent = await preDumpRounds(ctx);
  }

  async dump(ctx: MigrationContext): Promise<{ seized: boolean }> {
    await finalCheckpoint(ctx, this.parent);
    return { seized: false };
  }

  async transfer(): Promise<TransferShare> {
    return { ...noShare(), exclude: isRoundDir };
  }

  restoreOptions(): Record<string, never> {
    return {};
  }
}
