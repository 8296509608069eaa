// The transfer phase's common part: the bundle (what changed since prepare) and the image directory, large files in
// ranges over parallel connections, the rest in the framed stream; a strategy's share is sent before or beside it.
import { readdir, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { traceStep } from '../core/trace.ts';
import { encodeTree } from '../transport/image-stream/index.ts';
import { planRanges } from '../transport/ranges.ts';
import { snapshotTree, type TreeSnapshot, treeChanges } from '../transport/tree-diff.ts';
import { PROGRESS_EVERY_MS, RATE_SAMPLE_MIN_BYTES } from './defaults.ts';
import { ProgressMeter } from './progress.ts';
import type { MigrationContext, TransferShare } from './strategies/strategy.ts';

/** The bytes of the files under `dir` that are not skipped (paths relative to `dir`). */
async function treeSize(dir: string, skip: (rel: string) => boolean): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const path = join(e.parentPath, e.name);
    if (e.isFile() && !skip(relative(dir, path))) total += (await stat(path)).size;
  }
  return total;
}

/**
 * Sends the bundle's changes and the images the strategy's share leaves; fills the report's byte counts. Returns
 * the link rate this transfer measured (bytes/s) when it was large enough to tell.
 */
export async function transferImages(
  ctx: MigrationContext,
  share: TransferShare,
  bundle: { dir: string; before: TreeSnapshot },
  t0: number,
): Promise<number | undefined> {
  const { peer, id, images, report, sender } = ctx;
  const { streams, compress } = ctx.options;
  const isLog = (rel: string) => rel.endsWith('.log');
  let traced = performance.now();
  // what this phase sends: the images that do not travel another way (pre-copy's recipes replace its page images)
  // and the strategy's own share
  const total =
    share.bytes +
    (await treeSize(images, (rel) => isLog(rel) || share.replaced.has(rel) || share.exclude?.(rel) === true));
  let sent = sender.bytes + share.bytes;
  const meter = new ProgressMeter(ctx.emit, ctx.now, 'transfer', PROGRESS_EVERY_MS.transfer);
  meter.update(sent, { total });
  const onBytes = (n: number) => {
    sent += n;
    meter.update(sent, { total });
  };
  const ranges =
    streams > 1
      ? await planRanges(
          images,
          (await readdir(images)).filter(
            (f) => !isLog(f) && !share.replaced.has(f) && !share.streamed.has(f),
          ),
          streams,
        )
      : [];
  const inRanges = new Set([...ranges.map((r) => r.file), ...share.streamed]);
  report.streams = (share.streamed.size > 0 ? streams : Math.max(1, ranges.length)) + 1;
  let zeroBytes = 0;
  const onZeroes = (n: number) => {
    zeroBytes += n;
  };
  traceStep('source: transfer: sizes and ranges', traced, { migration: id });
  traced = performance.now();
  // the bundle: what changed since it was sent at prepare (a writable rootfs the container wrote to)
  const { removals, unchanged } = treeChanges(bundle.before, await snapshotTree(bundle.dir));
  traceStep('source: transfer: bundle changes', traced, { migration: id });
  traced = performance.now();
  const [b, i] = await Promise.all([
    peer.send(
      id,
      'bundle',
      encodeTree([{ root: bundle.dir, prefix: '' }], {
        onBytes,
        onZeroes,
        removals,
        exclude: (rel) => unchanged.has(rel),
      }),
      { compress, update: true },
    ),
    peer.send(
      id,
      'images',
      encodeTree([{ root: images, prefix: '' }], {
        onBytes,
        onZeroes,
        exclude: (rel) =>
          isLog(rel) || inRanges.has(rel) || share.replaced.has(rel) || share.exclude?.(rel) === true,
      }),
      { compress },
    ),
    ...ranges.map((r) => sender.send(r, onBytes)),
  ]);
  traceStep('source: transfer: streams', traced, { migration: id });
  meter.finish(sent, { total });
  // zero pages count as skipped, not sent
  const streamed = b.bytes + i.bytes - zeroBytes;
  const rest = sender.bytes + share.bytes - sender.zeroBytes;
  zeroBytes += sender.zeroBytes;
  if (zeroBytes > 0) report.zeroBytesSkipped = zeroBytes;
  // compressed, the two streams count as what crossed the link; the ranges and a strategy's share go uncompressed
  const wire =
    compress && b.wireBytes !== undefined && i.wireBytes !== undefined
      ? b.wireBytes + i.wireBytes
      : undefined;
  report.bytesSent = (wire ?? streamed) + rest;
  if (wire !== undefined) report.bytesUncompressed = streamed + rest;
  const ms = Math.round(ctx.now() - t0);
  report.rounds.push({ bytes: report.bytesSent, ms });
  // a large transfer measures the link (and both agents) well enough for the next plan; what went during the dump
  // counts with the dump's time (when CRIU was slower than the link, this underestimates it)
  // (the plan predicts from the container's bytes: with zstd the sample is of those, as it was before zstd was counted)
  const rateMs = share.since !== undefined ? Math.round(ctx.now() - share.since) : ms;
  const bytes = streamed + rest;
  if (bytes >= RATE_SAMPLE_MIN_BYTES && rateMs > 0) return (bytes / rateMs) * 1000;
  return undefined;
}
