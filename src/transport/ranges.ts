// Parallel streams for large image files: a file is cut into ranges, each sent on its own connection and
// written in place on the destination; both sides compute a CRC-32 of every range and compare.
import { constants } from 'node:fs';
import { type FileHandle, open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline, Readable, Transform } from 'node:stream';
import { crc32 } from 'node:zlib';
import { FerryError } from '../core/errors.ts';
import { PieceError, PieceParser, PieceWriter } from './pieces.ts';

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

/**
 * Source: one range of a file as a stream, read in 1 MiB chunks; `sparse` sends it as pieces (zero pages
 * skipped). `meter` has the CRC-32 and byte count of what went on the wire once the stream has ended.
 */
export function readRange(
  path: string,
  r: FileRange,
  opts: { sparse?: boolean; onBytes?: (n: number) => void } = {},
): { body: Readable; meter: CrcMeter; zeroBytes: () => number } {
  const meter = new CrcMeter();
  const pieces = new PieceWriter({ update: () => {} }, (b) => [b], !opts.sparse);
  async function* chunks(): AsyncGenerator<Buffer> {
    let fh: FileHandle | undefined;
    try {
      fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
      for (let pos = 0; pos < r.length; ) {
        const want = Math.min(1 << 20, r.length - pos);
        const buf = Buffer.allocUnsafe(want);
        let got = 0;
        while (got < want) {
          const { bytesRead } = await fh.read(buf, got, want - got, r.offset + pos + got);
          if (bytesRead === 0)
            throw new Error(`${r.file} ended at ${r.offset + pos + got}, inside its range`);
          got += bytesRead;
        }
        pos += want;
        opts.onBytes?.(want);
        yield* pieces.add(buf);
      }
      yield* pieces.end();
    } finally {
      await fh?.close();
    }
  }
  // pipeline: destroying the body (a failed request) also ends the reading and closes the file
  pipeline(Readable.from(chunks(), { objectMode: false }), meter, () => {});
  return { body: meter, meter, zeroBytes: () => pieces.zeroBytes };
}

/** Extensions of a file being written by several ranges at once, one at a time per file (see growTo). */
const growing = new Map<string, Promise<void>>();

/**
 * Makes the file at least `total` bytes long, never shorter. Ranges of one file arrive in parallel with different
 * totals (ranges sent while CRIU writes end where the file ended then): a check-then-truncate racing another
 * would cut off what that one already wrote. Serialised per file within this process.
 */
async function growTo(fh: FileHandle, path: string, total: number): Promise<void> {
  const prev = growing.get(path) ?? Promise.resolve();
  const mine = prev.then(async () => {
    if ((await fh.stat()).size < total) await fh.truncate(total);
  });
  const tracked = mine.catch(() => {});
  growing.set(path, tracked);
  try {
    await mine;
  } finally {
    if (growing.get(path) === tracked) growing.delete(path);
  }
}

/**
 * Destination: writes one range of `file` (created at its full size if needed) and returns what it got: the
 * CRC-32 and byte count of the body as it came (pieces included when `sparse`).
 */
export async function writeRange(
  dir: string,
  r: FileRange,
  body: Readable,
  opts: { sparse?: boolean } = {},
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
    await growTo(fh, join(dir, r.file), r.total);
    if (opts.sparse) {
      // zero runs are left as they are: the file is new, or these bytes were never written
      const parser = new PieceParser(r.length, `range of ${r.file} at ${r.offset}`);
      try {
        for await (const c of body) {
          const chunk = c as Buffer;
          crc = crc32(chunk, crc);
          bytes += chunk.length;
          const writes: Promise<unknown>[] = [];
          parser.push(
            chunk,
            (b, off) => writes.push(fh.write(b, 0, b.length, r.offset + off)),
            () => {},
          );
          await Promise.all(writes);
        }
        parser.end();
      } catch (err) {
        if (err instanceof PieceError)
          throw new FerryError('FERRY_E_TRANSFER_CORRUPT', err.message, { phase: 'transfer' });
        throw err; // a local write error (ENOSPC) or the connection going away: not corruption
      }
      return { crc: crc >>> 0, bytes };
    }
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
