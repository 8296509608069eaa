// Pieces: how a large file's content travels when whole zero pages are skipped. A piece is a kind byte and a
// uint32 big-endian length: 'D' is followed by that many bytes of data, 'Z' stands for that many bytes of zeroes
// (always whole 4 KiB pages, aligned to the file offset) and carries nothing. Used by the image stream
// (image-stream/) and by ranges sent while CRIU is still writing (ranges.ts, tail.ts).

/** A malformed piece stream (the sender's bytes, not a local failure). */
export class PieceError extends Error {}

/** What a piece writer feeds the bytes it emits to (a CRC-32). */
export interface Checksum {
  update(b: Buffer): unknown;
}

/** Zero pages are found at this granularity, aligned to the file offset (CRIU's page images are page-aligned). */
export const PAGE = 4096;
const ZERO_PAGE = Buffer.alloc(PAGE);
export const PIECE_DATA = 0x44; // 'D'
export const PIECE_ZERO = 0x5a; // 'Z'
export const PIECE_HEADER = 5;
/** A zero run longer than this is split (the length field is 32 bits). */
const MAX_ZERO_PIECE = 2 ** 31;

function pieceHeader(kind: number, len: number): Buffer {
  const b = Buffer.allocUnsafe(5);
  b[0] = kind;
  b.writeUInt32BE(len, 1);
  return b;
}

/**
 * Encodes a large file's content as pieces: data as it is, whole zero pages as a length only. Chunks go in as
 * read; what comes out goes through `emit` (which may coalesce); the checksum covers the bytes as sent.
 */
export class PieceWriter {
  zeroBytes = 0;
  private pendingZero = 0;
  private readonly hash: Checksum;
  private readonly emit: (b: Buffer) => Buffer[];

  private readonly raw: boolean;

  /** `raw`: no pieces, the bytes as they are (a file that shrank to a small file's size after the walk). */
  constructor(hash: Checksum, emit: (b: Buffer) => Buffer[], raw = false) {
    this.hash = hash;
    this.emit = emit;
    this.raw = raw;
  }

  private send(out: Buffer[], b: Buffer): void {
    this.hash.update(b);
    out.push(...this.emit(b));
  }

  private flushZero(out: Buffer[]): void {
    while (this.pendingZero > 0) {
      const n = Math.min(this.pendingZero, MAX_ZERO_PIECE);
      this.send(out, pieceHeader(PIECE_ZERO, n));
      this.zeroBytes += n;
      this.pendingZero -= n;
    }
  }

  /** One chunk of the file, in order; every chunk but the last is a whole number of pages. */
  add(buf: Buffer): Buffer[] {
    const out: Buffer[] = [];
    if (this.raw) {
      this.send(out, buf);
      return out;
    }
    let dataStart = -1;
    const flushData = (end: number) => {
      if (dataStart < 0) return;
      this.flushZero(out);
      this.send(out, pieceHeader(PIECE_DATA, end - dataStart));
      this.send(out, buf.subarray(dataStart, end));
      dataStart = -1;
    };
    for (let off = 0; off < buf.length; off += PAGE) {
      const end = Math.min(off + PAGE, buf.length);
      const zero = end - off === PAGE && ZERO_PAGE.equals(buf.subarray(off, end));
      if (zero) {
        flushData(off);
        this.pendingZero += PAGE;
      } else if (dataStart < 0) {
        dataStart = off;
      }
    }
    flushData(buf.length);
    return out;
  }

  end(): Buffer[] {
    const out: Buffer[] = [];
    this.flushZero(out);
    return out;
  }
}

/**
 * Parses pieces from chunks as they arrive (a header may be split across chunks) and hands out where each data
 * byte goes: `onData(buf, offset)` for data, `onZero(offset, len)` for skipped runs. Offsets are relative to the
 * start; `end()` checks that exactly `length` bytes were described.
 */
export class PieceParser {
  private pos = 0;
  private head = Buffer.alloc(PIECE_HEADER);
  private headFill = 0;
  private dataLeft = 0;
  zeroBytes = 0;
  private readonly length: number;
  private readonly what: string;

  constructor(length: number, what: string) {
    this.length = length;
    this.what = what;
  }

  /** Splits a chunk into data slices (with their offsets) and zero runs; throws on a malformed piece. */
  push(
    chunk: Buffer,
    onData: (b: Buffer, offset: number) => void,
    onZero: (offset: number, len: number) => void,
  ): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.dataLeft > 0) {
        const n = Math.min(this.dataLeft, chunk.length - i);
        onData(chunk.subarray(i, i + n), this.pos);
        this.pos += n;
        this.dataLeft -= n;
        i += n;
        continue;
      }
      const n = Math.min(PIECE_HEADER - this.headFill, chunk.length - i);
      chunk.copy(this.head, this.headFill, i, i + n);
      this.headFill += n;
      i += n;
      if (this.headFill < PIECE_HEADER) break;
      this.headFill = 0;
      const kind = this.head[0];
      const len = this.head.readUInt32BE(1);
      if (len === 0 || len > this.length - this.pos || (kind !== PIECE_DATA && kind !== PIECE_ZERO)) {
        throw new PieceError(
          `${this.what}: bad piece (kind ${kind}, ${len} bytes at byte ${this.pos} of ${this.length})`,
        );
      }
      if (kind === PIECE_ZERO) {
        onZero(this.pos, len);
        this.zeroBytes += len;
        this.pos += len;
      } else {
        this.dataLeft = len;
      }
    }
  }

  end(): void {
    if (this.pos !== this.length || this.dataLeft !== 0 || this.headFill !== 0) {
      throw new PieceError(`${this.what}: ${this.pos} of ${this.length} bytes arrived`);
    }
  }
}
