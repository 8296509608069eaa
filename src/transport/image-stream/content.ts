// A large file's content as the decoder receives it: pieces (data, or zero runs left as holes) written in
// batches, one batch in flight, checksummed as they arrive.
import type { FileHandle } from 'node:fs/promises';
import { PIECE_DATA, PIECE_ZERO } from '../pieces.ts';
import type { ByteReader } from './byte-reader.ts';
import { contentHash, corrupt, DIGEST_BYTES, noop, show } from './format.ts';

/** The decoder writes file data in batches of this many bytes (one writev), one batch in flight. */
const WRITE_BATCH = 1024 * 1024;
const WRITE_BATCH_PIECES = 1024;

async function writeAllAt(fh: FileHandle, bufs: Buffer[], pos: number): Promise<void> {
  let total = 0;
  for (const b of bufs) total += b.length;
  let { bytesWritten } = await fh.writev(bufs, pos);
  while (bytesWritten < total) {
    // short write: continue with what is left
    let skip = bytesWritten;
    const rest: Buffer[] = [];
    for (const b of bufs) {
      if (skip >= b.length) skip -= b.length;
      else {
        rest.push(skip > 0 ? b.subarray(skip) : b);
        skip = 0;
      }
    }
    const r = await fh.writev(rest, pos + bytesWritten);
    if (r.bytesWritten === 0) throw new Error('write made no progress');
    bytesWritten += r.bytesWritten;
  }
}

/** Receives `size` bytes of pieces and their digest into `fh`; returns the bytes of zeroes left as holes. */
export async function receiveFile(
  reader: ByteReader,
  fh: FileHandle,
  path: string,
  size: number,
  onBytes: ((n: number) => void) | undefined,
): Promise<number> {
  const hash = contentHash();
  let pos = 0; // logical position in the file: data written or batched, zeroes skipped
  let writeAt = 0; // where the current batch starts
  let batch: Buffer[] = [];
  let batchLen = 0;
  let inflight: Promise<void> | undefined;
  let zeroes = 0;
  const flush = async () => {
    if (batchLen === 0) return;
    if (inflight) await inflight;
    inflight = writeAllAt(fh, batch, writeAt);
    inflight.catch(noop); // awaited below; this only keeps it from counting as unhandled meanwhile
    batch = [];
    batchLen = 0;
  };
  try {
    while (pos < size) {
      const head = await reader.readExact(
        5,
        `a piece header in file ${show(path)} (at byte ${pos} of ${size})`,
      );
      hash.update(head);
      const kind = head[0];
      const len = head.readUInt32BE(1);
      if (len === 0 || len > size - pos || (kind !== PIECE_DATA && kind !== PIECE_ZERO)) {
        throw corrupt(`file ${show(path)}: bad piece (kind ${kind}, ${len} bytes at byte ${pos} of ${size})`);
      }
      if (kind === PIECE_ZERO) {
        // a hole: the file is new, so skipped bytes read as zeroes (and take no space on tmpfs)
        await flush();
        pos += len;
        writeAt = pos;
        zeroes += len;
        onBytes?.(len);
        continue;
      }
      let remaining = len;
      while (remaining > 0) {
        const piece = await reader.take(remaining);
        if (piece === null) {
          throw corrupt(`stream truncated inside file ${show(path)} (${pos} of ${size} bytes received)`);
        }
        hash.update(piece);
        batch.push(piece);
        batchLen += piece.length;
        remaining -= piece.length;
        pos += piece.length;
        onBytes?.(piece.length);
        if (batchLen >= WRITE_BATCH || batch.length >= WRITE_BATCH_PIECES) {
          await flush();
          writeAt = pos;
        }
      }
    }
    await flush();
    if (inflight) await inflight;
    await fh.truncate(size); // a trailing run of zeroes
  } finally {
    if (inflight) await inflight.catch(noop);
  }
  const digest = await reader.readExact(DIGEST_BYTES, `the checksum of ${show(path)}`);
  if (!digest.equals(hash.digest())) throw corrupt(`checksum mismatch for file ${show(path)}`);
  return zeroes;
}
