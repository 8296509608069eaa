// The decoder's view of its input: exact reads across chunk boundaries, zero-copy takes, a byte limit.
import { Readable } from 'node:stream';
import { FerryError } from '../../core/errors.ts';
import { corrupt, errText, failed } from './format.ts';

export class ByteReader {
  private readonly it: AsyncIterator<unknown>;
  private cur: Buffer = Buffer.alloc(0);
  private ended = false;
  /** Bytes pulled from the input so far (including buffered ones not consumed yet). */
  private received = 0;
  /** Bytes consumed by the parser. */
  position = 0;

  private readonly maxBytes: number | undefined;

  constructor(input: Readable | AsyncIterable<Buffer>, maxBytes: number | undefined) {
    this.maxBytes = maxBytes;
    // A Readable is not destroyed when decoding stops early, so an HTTP handler can still answer.
    this.it =
      input instanceof Readable ? input.iterator({ destroyOnReturn: false }) : input[Symbol.asyncIterator]();
  }

  /** Makes `cur` non-empty; false at the end of input. */
  private async fill(): Promise<boolean> {
    while (this.cur.length === 0) {
      if (this.ended) return false;
      let r: IteratorResult<unknown>;
      try {
        r = await this.it.next();
      } catch (err) {
        this.ended = true;
        if (err instanceof FerryError) throw err;
        throw failed(`input failed after ${this.received} bytes: ${errText(err)}`, err);
      }
      if (r.done) {
        this.ended = true;
        return false;
      }
      const v = r.value;
      let b: Buffer;
      if (Buffer.isBuffer(v)) b = v;
      else if (v instanceof Uint8Array) b = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      else throw failed('input yielded a non-binary chunk (is an encoding set on the stream?)');
      this.received += b.length;
      if (this.maxBytes !== undefined && this.received > this.maxBytes) {
        throw corrupt(`stream exceeds the limit of ${this.maxBytes} bytes`);
      }
      this.cur = b;
    }
    return true;
  }

  /** Exactly n bytes (copied only when they span input chunks); a corrupt error naming `what` at the end of input. */
  async readExact(n: number, what: string): Promise<Buffer> {
    if (this.cur.length >= n) {
      const b = this.cur.subarray(0, n);
      this.cur = this.cur.subarray(n);
      this.position += n;
      return b;
    }
    const parts: Buffer[] = [];
    let got = 0;
    while (got < n) {
      if (!(await this.fill())) {
        throw corrupt(`stream truncated while reading ${what} (${got} of ${n} bytes received)`);
      }
      const k = Math.min(n - got, this.cur.length);
      parts.push(this.cur.subarray(0, k));
      this.cur = this.cur.subarray(k);
      got += k;
    }
    this.position += n;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }

  /** Up to max bytes as they arrive (no copy); null at the end of input. */
  async take(max: number): Promise<Buffer | null> {
    if (this.cur.length === 0 && !(await this.fill())) return null;
    const k = Math.min(max, this.cur.length);
    const b = this.cur.subarray(0, k);
    this.cur = this.cur.subarray(k);
    this.position += k;
    return b;
  }

  /** True when at least one more byte is available. */
  async hasMore(): Promise<boolean> {
    return this.fill();
  }

  /** Stops iterating without destroying a Readable input. */
  async release(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    try {
      await this.it.return?.();
    } catch {
      // the input's own error is not ours to report
    }
  }
}
