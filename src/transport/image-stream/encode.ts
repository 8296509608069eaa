// The encoder: the entries of the source trees (walk.ts) as one framed stream (format.ts), read lazily with
// backpressure.
//
// Over HTTP: the sender pipes encodeTree(...) into the request body (stream.pipeline into http.request, or fetch
// with body Readable.toWeb(...) and duplex 'half'); the receiver hands the raw request to decodeTree (decode.ts).
import { createHash } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import { closeSync, constants as fsc, fstatSync, openSync, readlinkSync, readSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { FerryError } from '../../core/errors.ts';
import { PieceWriter } from '../pieces.ts';
import {
  contentHash,
  errCode,
  errText,
  failed,
  MAGIC_BUF,
  MAX_HEADER_BYTES,
  metaFields,
  SMALL_FILE,
  show,
  unsafePathReason,
} from './format.ts';
import { type ExcludeFn, LinkTracker, metaOf, type StreamEntrySource, walkSources } from './walk.ts';

export interface EncodeOptions {
  /** Called for each entry below a source root; relPath is relative to the root ('rootfs/proc'). True skips it (and its subtree). */
  exclude?: ExcludeFn;
  /** Progress: called with the number of file content bytes just read (increments, not totals). */
  onBytes?: (n: number) => void;
  /** Called at the end with how many bytes of zero pages were skipped rather than sent. */
  onZeroes?: (n: number) => void;
  /** Paths to remove on the receiving side, sent before any entry (an update: see DecodeOptions.allowRemove). */
  removals?: string[];
}

/** Read size for large files in the encoder; each chunk is its own Buffer handed downstream. */
const READ_CHUNK = 1024 * 1024;
/** Small pieces (headers, digests, small files) are coalesced up to this size before being emitted. */
const COALESCE_BYTES = 256 * 1024;
/** Pieces at least this big are emitted as they are rather than copied into a coalesced buffer. */
const DIRECT_PIECE = 64 * 1024;
/** How much the encoder's Readable reads ahead of its consumer. */
const ENCODER_HWM = 4 * 1024 * 1024;

// As root, reading leaves the source's access times as they were (O_NOATIME needs the owner or CAP_FOWNER).
const O_READ = fsc.O_RDONLY | fsc.O_NOFOLLOW | (process.getuid?.() === 0 ? fsc.O_NOATIME : 0);

class Coalescer {
  private parts: Buffer[] = [];
  private len = 0;

  push(b: Buffer): void {
    this.parts.push(b);
    this.len += b.length;
  }

  /** The pending bytes as one Buffer once there are enough of them (or any at all when forced). */
  take(force: boolean): Buffer | null {
    if (this.len === 0 || (!force && this.len < COALESCE_BYTES)) return null;
    const out = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.len);
    this.parts = [];
    this.len = 0;
    return out;
  }
}

/** A small regular file read whole with synchronous calls; null if it vanished, undefined if it is not small any more. */
function readSmallFile(abs: string): { st: BigIntStats; data: Buffer } | null | undefined {
  let fd: number;
  try {
    fd = openSync(abs, O_READ);
  } catch (err) {
    if (errCode(err) === 'ENOENT') return null;
    throw failed(`cannot open ${show(abs)}: ${errText(err)}`, err);
  }
  try {
    const st = fstatSync(fd, { bigint: true });
    if (!st.isFile()) throw failed(`${show(abs)} changed type while being sent`);
    const size = Number(st.size);
    if (size > SMALL_FILE) return undefined;
    const data = Buffer.allocUnsafe(size);
    let got = 0;
    while (got < size) {
      const n = readSync(fd, data, got, size - got, got);
      if (n === 0)
        throw failed(`${show(abs)} shrank while being sent (${size} bytes announced, ${got} read)`);
      got += n;
    }
    return { st, data };
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw failed(`cannot read ${show(abs)}: ${errText(err)}`, err);
  } finally {
    closeSync(fd);
  }
}

/**
 * The framed stream for `sources`, as a byte-mode Readable. It reads lazily and respects backpressure (it
 * reads ahead at most a few MiB); destroying it stops the walk and closes any open file. Errors (unreadable
 * source, file shrinking while sent, an xattr or a file type that cannot travel) destroy it with a FerryError
 * FERRY_E_TRANSFER_FAILED naming the path, before anything of that entry is sent.
 */
export function encodeTree(sources: StreamEntrySource[], opts: EncodeOptions = {}): Readable {
  return Readable.from(generateStream(sources, opts), { objectMode: false, highWaterMark: ENCODER_HWM });
}

async function* generateStream(sources: StreamEntrySource[], opts: EncodeOptions): AsyncGenerator<Buffer> {
  const headerHash = createHash('sha256');
  const out = new Coalescer();
  let records = 0;
  let total = 0;
  let zeroes = 0;
  const links = new LinkTracker();

  const frame = (h: Record<string, unknown>, path: string, hashed = true): Buffer => {
    const json = JSON.stringify(h);
    const n = Buffer.byteLength(json);
    if (n > MAX_HEADER_BYTES) throw failed(`header for ${show(path)} is too large (${n} bytes)`);
    const b = Buffer.allocUnsafe(4 + n);
    b.writeUInt32BE(n, 0);
    b.write(json, 4, 'utf8');
    if (hashed) headerHash.update(b.subarray(4));
    return b;
  };

  out.push(Buffer.from(MAGIC_BUF));
  for (const p of opts.removals ?? []) {
    const reason = unsafePathReason(p);
    if (reason !== null) throw failed(`cannot remove ${show(p)}: ${reason}`);
    out.push(frame({ t: 'r', p }, p));
    records++;
  }
  for await (const e of walkSources(sources, opts.exclude)) {
    if (e.kind === 'd') {
      out.push(frame({ t: 'd', p: e.path, ...metaFields(e.meta) }, e.path));
      records++;
    } else if (e.kind !== 'f' && links.sentAs(e.inode) !== undefined) {
      // another name of an inode sent already (a file's is checked once it is open: see below)
      out.push(frame({ t: 'h', p: e.path, l: links.sentAs(e.inode) }, e.path));
      records++;
    } else if (e.kind === 'l') {
      let target: string;
      try {
        target = readlinkSync(e.abs);
      } catch (err) {
        if (errCode(err) === 'ENOENT') continue;
        throw failed(`cannot read symlink ${show(e.abs)}: ${errText(err)}`, err);
      }
      out.push(frame({ t: 'l', p: e.path, l: target, ...metaFields(e.meta) }, e.path));
      links.sent(e.inode, e.path);
      records++;
    } else if (e.kind !== 'f') {
      const rdev = e.rdev ? { r: [e.rdev.major, e.rdev.minor] } : {};
      out.push(frame({ t: e.kind, p: e.path, ...rdev, ...metaFields(e.meta) }, e.path));
      links.sent(e.inode, e.path);
      records++;
    } else if (links.sentAs(e.inode) !== undefined) {
      out.push(frame({ t: 'h', p: e.path, l: links.sentAs(e.inode) }, e.path));
      records++;
    } else if (e.meta) {
      // empty when walked: sent from its lstat, never opened (a write lease on it would break: walk.ts)
      out.push(frame({ t: 'f', p: e.path, s: 0, ...metaFields(e.meta) }, e.path));
      links.sent(e.inode, e.path);
      records++;
      out.push(contentHash().digest());
    } else {
      const small = e.size <= SMALL_FILE ? readSmallFile(e.abs) : undefined;
      if (small === null) continue; // vanished
      if (small !== undefined) {
        const { st, data } = small;
        out.push(frame({ t: 'f', p: e.path, s: data.length, ...metaFields(metaOf(st, e.x)) }, e.path));
        links.sent(e.inode, e.path);
        records++;
        out.push(data);
        out.push(contentHash().update(data).digest());
        total += data.length;
        if (data.length > 0) opts.onBytes?.(data.length);
        const chunk = out.take(false);
        if (chunk) yield chunk;
        continue;
      }
      let fh: FileHandle;
      try {
        fh = await open(e.abs, O_READ);
      } catch (err) {
        if (errCode(err) === 'ENOENT') continue;
        throw failed(`cannot open ${show(e.abs)}: ${errText(err)}`, err);
      }
      try {
        const st = await fh.stat({ bigint: true });
        if (!st.isFile()) throw failed(`${show(e.abs)} changed type while being sent`);
        const size = Number(st.size);
        out.push(frame({ t: 'f', p: e.path, s: size, ...metaFields(metaOf(st, e.x)) }, e.path));
        links.sent(e.inode, e.path);
        records++;
        const hash = contentHash();
        const pieces = new PieceWriter(
          hash,
          (b) => {
            if (b.length >= DIRECT_PIECE) {
              const pending = out.take(true);
              return pending ? [pending, b] : [b];
            }
            out.push(b);
            return [];
          },
          size <= SMALL_FILE,
        );
        let pos = 0;
        while (pos < size) {
          const want = Math.min(size - pos, READ_CHUNK);
          const buf = Buffer.allocUnsafe(want);
          let got = 0;
          while (got < want) {
            const { bytesRead } = await fh.read(buf, got, want - got, pos + got);
            if (bytesRead === 0) {
              throw failed(
                `${show(e.abs)} shrank while being sent (${size} bytes announced, ${pos + got} read)`,
              );
            }
            got += bytesRead;
          }
          pos += want;
          total += want;
          opts.onBytes?.(want);
          for (const b of pieces.add(buf)) yield b;
        }
        for (const b of pieces.end()) yield b;
        zeroes += pieces.zeroBytes;
        out.push(hash.digest());
      } catch (err) {
        if (err instanceof FerryError) throw err;
        throw failed(`cannot read ${show(e.abs)}: ${errText(err)}`, err);
      } finally {
        await fh.close();
      }
    }
    const chunk = out.take(false);
    if (chunk) yield chunk;
  }
  opts.onZeroes?.(zeroes);
  const end = { t: 'e', n: records, s: total, h: headerHash.digest('hex') };
  out.push(frame(end, '(end)', false));
  const last = out.take(true);
  if (last) yield last;
}
