// Reader for CRIU's stats-dump and stats-restore images (field numbers from CRIU's images/stats.proto).
import { readFile } from 'node:fs/promises';
import { decodeNumbers, readFields } from './protobuf.ts';

const IMG_SERVICE_MAGIC = 0x55105940;
const STATS_MAGIC = 0x57093306;

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

const DUMP_FIELDS: Record<number, keyof DumpStats> = {
  1: 'freezingTimeUs',
  2: 'frozenTimeUs',
  3: 'memdumpTimeUs',
  4: 'memwriteTimeUs',
  5: 'pagesScanned',
  6: 'pagesSkippedParent',
  7: 'pagesWritten',
  8: 'irmapResolveUs',
  9: 'pagesLazy',
  10: 'pagePipes',
  11: 'pagePipeBufs',
};

const RESTORE_FIELDS: Record<number, keyof RestoreStats> = {
  1: 'pagesCompared',
  2: 'pagesSkippedCow',
  3: 'forkingTimeUs',
  4: 'restoreTimeUs',
  5: 'pagesRestored',
};

export function parseStats(buf: Buffer): { dump?: DumpStats; restore?: RestoreStats } {
  if (buf.length < 12) throw new Error('stats image too short');
  let pos = 0;
  if (buf.readUInt32LE(0) === IMG_SERVICE_MAGIC) pos = 4;
  if (buf.readUInt32LE(pos) !== STATS_MAGIC) throw new Error('not a CRIU stats image (bad magic)');
  pos += 4;
  const size = buf.readUInt32LE(pos);
  pos += 4;
  if (pos + size > buf.length) throw new Error('stats image truncated');
  const out: { dump?: DumpStats; restore?: RestoreStats } = {};
  for (const f of readFields(buf.subarray(pos, pos + size))) {
    if (f.value instanceof Uint8Array) {
      if (f.no === 1) out.dump = decodeNumbers(f.value, DUMP_FIELDS);
      if (f.no === 2) out.restore = decodeNumbers(f.value, RESTORE_FIELDS);
    }
  }
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
