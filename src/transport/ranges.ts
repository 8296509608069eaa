// Parallel streams for large image files: a file is cut into ranges, each sent on its own connection and
// written in place on the destination; both sides compute a CRC-32 of every range and compare.
import { constants } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type Readable, Transform } from 'node:stream';
import { crc32 } from 'node:zlib';
import { FerryError } from '../core/errors.ts';

/** Files this large are cut into ranges; smaller ones travel in the framed image stream. */
export const RANGE_MIN_FILE = 32 << 20;
const ALIGN = 1 << 20;

export interface FileRange {
  file: string;
  offset: number;
  length: number;
  total: number;
}

/** Cuts each large file of `dir` into `streams` ranges, 1 MiB-aligned; returns them and the files they cover. */
export async function planRanges(dir: string, files: string[], streams: number): Promise<FileRange[]> {
  const out: FileRange[] = [];
  for (const file of files) {
    const total = (await stat(join(dir, file))).size;
    if (total < RANGE_MIN_FILE) continue;
    const per = Math.ceil(total / streams / ALIGN) * ALIGN;
    for (let offset = 0; offset < total; offset += per)
      out.push({ file, offset, length: Math.min(per, total - offset), total });
  }
  return out;
}

/** A pass-through that computes the CRC-32 of what flows and counts it. */
export class CrcMeter extends Transform {
  crc = 0;
  bytes = 0;
  override _transform(
    chunk: Buffer,
    _enc: BufferEncoding,
    cb: (err: Error | null, data?: Buffer) => void,
  ): void {
    this.crc = crc32(chunk, this.crc);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

/** Destination: writes one range of `file` (created at its full size if needed) and returns what it got. */
export async function writeRange(
  dir: string,
  r: FileRange,
  body: Readable,
): Promise<{ crc: number; bytes: number }> {
  if (!/^[A-Za-z0-9._-]+$/.test(r.file) || r.file.startsWith('.')) {
    throw new FerryError('FERRY_E_INPUT_REQUEST', `bad file name in a range: ${JSON.stringify(r.file)}`, {
      phase: 'transfer',
    });
  }
  if (r.offset < 0 || r.length < 0 || r.offset + r.length > r.total) {
    throw new FerryError('FERRY_E_INPUT_REQUEST', `range ${r.offset}+${r.length} outside ${r.total} bytes`, {
      phase: 'transfer',
    });
  }
  // O_RDWR|O_CREAT, never O_APPEND: with O_APPEND, positioned writes would land at the end
  const fh = await open(
    join(dir, r.file),
    constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW,
    0o600,
  );
  let crc = 0;
  let bytes = 0;
  try {
    const size = (await fh.stat()).size;
    if (size < r.total) await fh.truncate(r.total);
    for await (const c of body) {
      const chunk = c as Buffer;
      if (bytes + chunk.length > r.length) {
        throw new FerryError('FERRY_E_TRANSFER_CORRUPT', `range of ${r.file} longer than announced`, {
          phase: 'transfer',
        });
      }
      await fh.write(chunk, 0, chunk.length, r.offset + bytes);
      crc = crc32(chunk, crc);
      bytes += chunk.length;
    }
  } finally {
    await fh.close();
  }
  if (bytes !== r.length) {
    throw new FerryError(
      'FERRY_E_TRANSFER_CORRUPT',
      `range of ${r.file} at ${r.offset}: ${bytes} of ${r.length} bytes arrived`,
      {
        phase: 'transfer',
      },
    );
  }
  return { crc: crc >>> 0, bytes };
}
