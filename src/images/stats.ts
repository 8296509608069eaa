// CRIU's stats-dump and stats-restore images (images/stats.proto), decoded with the generated code.
import { readFile } from 'node:fs/promises';
import { type DescMessage, isFieldSet, type MessageShape } from '@bufbuild/protobuf';
import {
  type dump_stats_entry,
  dump_stats_entrySchema,
  type restore_stats_entry,
  restore_stats_entrySchema,
  stats_entrySchema,
} from './gen/stats_pb.js';
import { decodeImage, MAGIC } from './image-file.ts';

export interface DumpStats {
  freezingTimeUs?: number;
  frozenTimeUs?: number;
  memdumpTimeUs?: number;
  memwriteTimeUs?: number;
  pagesScanned?: number;
  pagesSkippedParent?: number;
  pagesWritten?: number;
  irmapResolveUs?: number;
  pagesLazy?: number;
  pagePipes?: number;
  pagePipeBufs?: number;
}

export interface RestoreStats {
  pagesCompared?: number;
  pagesSkippedCow?: number;
  forkingTimeUs?: number;
  restoreTimeUs?: number;
  pagesRestored?: number;
}

/** The camel-case names ferry's reports use; only fields CRIU wrote are set. */
function numbers<D extends DescMessage, K extends string>(
  schema: D,
  msg: MessageShape<D>,
  names: Record<K, keyof MessageShape<D>>,
): Partial<Record<K, number>> {
  const out: Partial<Record<K, number>> = {};
  for (const [k, name] of Object.entries(names) as [K, keyof MessageShape<D>][]) {
    const field = schema.fields.find((f) => f.localName === name);
    const v = msg[name];
    if (field && isFieldSet(msg, field) && (typeof v === 'number' || typeof v === 'bigint'))
      out[k] = Number(v);
  }
  return out;
}

const DUMP: Record<keyof DumpStats, keyof dump_stats_entry> = {
  freezingTimeUs: 'freezingTime',
  frozenTimeUs: 'frozenTime',
  memdumpTimeUs: 'memdumpTime',
  memwriteTimeUs: 'memwriteTime',
  pagesScanned: 'pagesScanned',
  pagesSkippedParent: 'pagesSkippedParent',
  pagesWritten: 'pagesWritten',
  irmapResolveUs: 'irmapResolve',
  pagesLazy: 'pagesLazy',
  pagePipes: 'pagePipes',
  pagePipeBufs: 'pagePipeBufs',
};

const RESTORE: Record<keyof RestoreStats, keyof restore_stats_entry> = {
  pagesCompared: 'pagesCompared',
  pagesSkippedCow: 'pagesSkippedCow',
  forkingTimeUs: 'forkingTime',
  restoreTimeUs: 'restoreTime',
  pagesRestored: 'pagesRestored',
};

export function parseStats(buf: Uint8Array): { dump?: DumpStats; restore?: RestoreStats } {
  const [entry] = decodeImage(buf, MAGIC.stats, stats_entrySchema);
  if (!entry) throw new Error('stats image has no entry');
  const out: { dump?: DumpStats; restore?: RestoreStats } = {};
  if (entry.dump) out.dump = numbers(dump_stats_entrySchema, entry.dump, DUMP);
  if (entry.restore) out.restore = numbers(restore_stats_entrySchema, entry.restore, RESTORE);
  return out;
}

/** Reads a stats image if it exists; undefined when CRIU did not write one. */
export async function readStats(
  path: string,
): Promise<{ dump?: DumpStats; restore?: RestoreStats } | undefined> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch {
    return undefined;
  }
  return parseStats(buf);
}
