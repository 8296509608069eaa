/*
 * Image stream: a framed byte stream carrying a directory tree (regular files, directories, symlinks) from
 * one host to another over an HTTP body, with integrity checks. Used to ship an OCI bundle (config.json +
 * rootfs) and CRIU checkpoint images from the source agent to the destination agent.
 *
 * Wire format (version 3):
 *
 *   stream  := magic record* end
 *   magic   := "FERRYIS3"                          8 bytes, ASCII (magic + format version)
 *   record  := hlen header [content digest]         content + digest only for t:'f'
 *   hlen    := uint32 big-endian                    byte length of header, 1 .. 65536
 *   header  := UTF-8 JSON object
 *              { t: 'd' | 'f' | 'l' | 'r', p: path, m: mode, s?: size, l?: target, u?: uid, g?: gid }
 *                t  'd' directory, 'f' regular file, 'l' symlink, 'r' remove what is at p (a file, a symlink or a
 *                   whole directory; no m): only in an update of a tree sent earlier (a bundle sent before the
 *                   freeze, then what changed), and only accepted by a decoder told to (allowRemove)
 *                p  relative path inside the stream: '/'-separated, no empty, '.' or '..' component,
 *                   no leading '/', no NUL (e.g. 'bundle/rootfs/etc/passwd')
 *                m  permission bits (mode & 0o7777, includes setuid/setgid/sticky)
 *                s  file size in bytes ('f' only)
 *                l  symlink target, sent verbatim and never followed ('l' only)
 *                u, g  owner uid/gid (optional; applied by the decoder only when it runs as root)
 *   content := a file of up to 64 KiB: exactly s bytes of file data
 *              a larger file: pieces that add up to s bytes, each kind (1 byte) + length (uint32 big-endian):
 *                'D' len  followed by len bytes of data
 *                'Z' len  len bytes of zeroes, not sent: whole 4 KiB pages of zeroes (memory a program touched
 *                         but never wrote, freed heap) are skipped; the decoder leaves them as holes
 *   digest  := 4 bytes, CRC-32 (big-endian) of content as sent: the transport (TLS) already authenticates every
 *              byte; the digest catches truncation, reordering and local read/write faults at 4+ GB/s,
 *              where SHA-256 cost a quarter of the transfer time (docs/decisions/0003)
 *   end     := hlen header with { t: 'e', n, s, h }
 *                n  number of records before the end record
 *                s  total file bytes (sum of all s, zeroes included)
 *                h  hex SHA-256 over all the JSON headers before it, concatenated (without hlen)
 *
 * Nothing may follow the end record. A directory is always sent before anything inside it (depth-first,
 * names sorted), so the decoder never has to create a parent on its own. Sockets, fifos and device nodes
 * are skipped; hard links are sent as independent files. A source root that is itself a symlink is followed
 * (the caller named it); nothing below it is.
 *
 * Over HTTP: the sender pipes encodeTree(...) into the request body (stream.pipeline into http.request, or
 * fetch with body Readable.toWeb(...) and duplex 'half'); the receiver hands the raw request to decodeTree
 * (in Fastify: a no-op content-type parser for application/octet-stream, then decodeTree(request.raw, dir)).
 */

import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import {
  chmodSync,
  closeSync,
  fchmodSync,
  fchownSync,
  constants as fsc,
  fstatSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  openSync,
  readlinkSync,
  readSync,
  rmSync,
  symlinkSync,
  writeSync,
} from 'node:fs';
import { type FileHandle, mkdir, open, readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { FerryError } from '../core/errors.ts';
import { PIECE_DATA, PIECE_ZERO, PieceWriter } from './pieces.ts';

export interface StreamEntrySource {
  root: string;
  prefix: string;
}

export interface StreamStats {
  files: number;
  dirs: number;
  symlinks: number;
  /** File bytes, zeroes included. */
  bytes: number;
  /** Bytes of zero pages that were not sent (the decoder left holes). */
  zeroBytes?: number;
  /** Removal records applied (an update). */
  removed?: number;
}

export interface EncodeOptions {
  /** Called for each entry below a source root; relPath is relative to the root ('rootfs/proc'). True skips it (and its subtree). */
  exclude?: (relPath: string, prefix: string) => boolean;
  /** Progress: called with the number of file content bytes just read (increments, not totals). */
  onBytes?: (n: number) => void;
  /** Called at the end with how many bytes of zero pages were skipped rather than sent. */
  onZeroes?: (n: number) => void;
  /** Paths to remove on the receiving side, sent before any entry (an update: see DecodeOptions.allowRemove). */
  removals?: string[];
}

export interface DecodeOptions {
  /** Progress: called with the number of file content bytes just received (increments, not totals). */
  onBytes?: (n: number) => void;
  /** Upper bound on the whole stream size in bytes (content + framing); checked early from declared sizes. */
  maxBytes?: number;
  /** Accept removal records: the stream updates a tree that is already there (existing files stay otherwise). */
  allowRemove?: boolean;
}

export const STREAM_MAGIC = 'FERRYIS3';
export const MAX_HEADER_BYTES = 64 * 1024;
const MAGIC_BUF = Buffer.from(STREAM_MAGIC, 'latin1');
const DIGEST_BYTES = 4;

/** The per-file content digest (CRC-32, incremental). */
export class ContentDigest {
  private value = 0;
  update(data: Uint8Array): this {
    this.value = crc32(data, this.value);
    return this;
  }
  digest(): Buffer {
    const out = Buffer.alloc(DIGEST_BYTES);
    out.writeUInt32BE(this.value >>> 0);
    return out;
  }
}

export function contentHash(): ContentDigest {
  return new ContentDigest();
}

const MAX_PATH_BYTES = 4096;
/** Read size for large files in the encoder; each chunk is its own Buffer handed downstream. */
const READ_CHUNK = 1024 * 1024;
/** Small pieces (headers, digests, small files) are coalesced up to this size before being emitted. */
const COALESCE_BYTES = 256 * 1024;
/** Pieces at least this big are emitted as they are rather than copied into a coalesced buffer. */
const DIRECT_PIECE = 64 * 1024;
/** How much the encoder's Readable reads ahead of its consumer. */
const ENCODER_HWM = 4 * 1024 * 1024;
/** The decoder writes file data in batches of this many bytes (one writev), one batch in flight. */
const WRITE_BATCH = 1024 * 1024;
const WRITE_BATCH_PIECES = 1024;
/**
 * Files up to this size are read, written and checksummed whole with synchronous calls: each call blocks
 * the event loop only for microseconds, while four thread-pool round trips per file dominate the cost of a
 * rootfs with thousands of small files.
 */
const SMALL_FILE = 64 * 1024;
/** The walker lets the event loop run after this many synchronous lstat calls. */
const YIELD_EVERY = 512;

const O_READ = fsc.O_RDONLY | fsc.O_NOFOLLOW;
const O_CREATE = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW;

function corrupt(message: string, cause?: unknown): FerryError {
  return new FerryError('FERRY_E_TRANSFER_CORRUPT', `image stream: ${message}`, {
    phase: 'transfer',
    ...(cause === undefined ? {} : { cause }),
  });
}

function failed(message: string, cause?: unknown): FerryError {
  return new FerryError('FERRY_E_TRANSFER_FAILED', `image stream: ${message}`, {
    phase: 'transfer',
    ...(cause === undefined ? {} : { cause }),
  });
}

function errCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const c = (err as { code: unknown }).code;
    return typeof c === 'string' ? c : undefined;
  }
  return undefined;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function show(p: string): string {
  return JSON.stringify(p);
}

const noop = (): void => {};

/** Null when `p` is a safe stream path, else why it is not. */
export function unsafePathReason(p: unknown): string | null {
  if (typeof p !== 'string') return 'path is not a string';
  if (p.length === 0) return 'path is empty';
  if (Buffer.byteLength(p) > MAX_PATH_BYTES) return 'path is too long';
  if (p.includes('\0')) return 'path contains NUL';
  if (p.startsWith('/')) return 'path is absolute';
  for (const c of p.split('/')) {
    if (c === '..') return "path has a '..' component";
    if (c === '' || c === '.') return 'path is not normalised';
  }
  return null;
}

function normalisePrefix(prefix: string): string {
  if (prefix === '') return '';
  const reason = unsafePathReason(prefix);
  if (reason !== null) throw failed(`invalid prefix ${show(prefix)}: ${reason}`);
  return prefix;
}

// ---------------------------------------------------------------------------------------------------------
// Walking the source trees

type WalkEntry =
  | { kind: 'd'; path: string; mode: number; uid?: number; gid?: number; abs?: string }
  | { kind: 'f'; path: string; abs: string; size: number }
  | { kind: 'l'; path: string; abs: string; mode: number; uid: number; gid: number };

function joinStream(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

async function* walkSources(
  sources: StreamEntrySource[],
  exclude: EncodeOptions['exclude'],
): AsyncGenerator<WalkEntry> {
  const declaredDirs = new Set<string>();
  for (const src of sources) {
    const prefix = normalisePrefix(src.prefix);
    let st: Stats;
    try {
      st = await stat(src.root);
    } catch (err) {
      throw failed(`cannot read source ${show(src.root)}: ${errText(err)}`, err);
    }
    // Ancestors of a multi-component prefix ('a/b' needs 'a' first).
    const parts = prefix === '' ? [] : prefix.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (declaredDirs.has(d)) continue;
      declaredDirs.add(d);
      yield { kind: 'd', path: d, mode: 0o755 };
    }
    if (st.isDirectory()) {
      if (prefix !== '') {
        declaredDirs.add(prefix);
        yield { kind: 'd', path: prefix, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
      }
      yield* walkDir(src.root, '', prefix, prefix, exclude, { n: 0 });
    } else if (prefix === '') {
      throw failed(`source ${show(src.root)} is not a directory, so it needs a non-empty prefix`);
    } else if (st.isFile()) {
      yield { kind: 'f', path: prefix, abs: src.root, size: st.size };
    } else {
      throw failed(`source ${show(src.root)} is neither a directory nor a regular file`);
    }
  }
}

async function* walkDir(
  absDir: string,
  rel: string,
  streamDir: string,
  prefix: string,
  exclude: EncodeOptions['exclude'],
  pace: { n: number },
): AsyncGenerator<WalkEntry> {
  let names: string[];
  try {
    names = await readdir(absDir);
  } catch (err) {
    throw failed(`cannot list ${show(absDir)}: ${errText(err)}`, err);
  }
  names.sort();
  if (exclude) names = names.filter((n) => !exclude(joinStream(rel, n), prefix));
  for (const name of names) {
    const abs = join(absDir, name);
    // lstat synchronously: a thread-pool round trip per entry costs far more than the call itself.
    let st: Stats;
    try {
      st = lstatSync(abs);
    } catch (err) {
      if (errCode(err) === 'ENOENT') continue; // vanished since readdir
      throw failed(`cannot stat ${show(abs)}: ${errText(err)}`, err);
    }
    if (++pace.n >= YIELD_EVERY) {
      pace.n = 0;
      await new Promise<void>((r) => setImmediate(r));
    }
    const path = joinStream(streamDir, name);
    if (st.isDirectory()) {
      yield { kind: 'd', path, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, abs };
      yield* walkDir(abs, joinStream(rel, name), path, prefix, exclude, pace);
    } else if (st.isFile()) {
      yield { kind: 'f', path, abs, size: st.size };
    } else if (st.isSymbolicLink()) {
      yield { kind: 'l', path, abs, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
    }
    // sockets, fifos, devices: not part of a bundle or an image directory
  }
}

// ---------------------------------------------------------------------------------------------------------
// Encoder

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
function readSmallFile(abs: string): { st: Stats; data: Buffer } | null | undefined {
  let fd: number;
  try {
    fd = openSync(abs, O_READ);
  } catch (err) {
    if (errCode(err) === 'ENOENT') return null;
    throw failed(`cannot open ${show(abs)}: ${errText(err)}`, err);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw failed(`${show(abs)} changed type while being sent`);
    if (st.size > SMALL_FILE) return undefined;
    const data = Buffer.allocUnsafe(st.size);
    let got = 0;
    while (got < st.size) {
      const n = readSync(fd, data, got, st.size - got, got);
      if (n === 0)
        throw failed(`${show(abs)} shrank while being sent (${st.size} bytes announced, ${got} read)`);
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
 * source, file shrinking while sent) destroy it with a FerryError FERRY_E_TRANSFER_FAILED.
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
      const h: Record<string, unknown> = { t: 'd', p: e.path, m: e.mode };
      if (e.uid !== undefined) h['u'] = e.uid;
      if (e.gid !== undefined) h['g'] = e.gid;
      out.push(frame(h, e.path));
      records++;
    } else if (e.kind === 'l') {
      let target: string;
      try {
        target = readlinkSync(e.abs);
      } catch (err) {
        if (errCode(err) === 'ENOENT') continue;
        throw failed(`cannot read symlink ${show(e.abs)}: ${errText(err)}`, err);
      }
      out.push(frame({ t: 'l', p: e.path, m: e.mode, l: target, u: e.uid, g: e.gid }, e.path));
      records++;
    } else {
      const small = e.size <= SMALL_FILE ? readSmallFile(e.abs) : undefined;
      if (small === null) continue; // vanished
      if (small !== undefined) {
        const { st, data } = small;
        out.push(
          frame({ t: 'f', p: e.path, m: st.mode & 0o7777, s: data.length, u: st.uid, g: st.gid }, e.path),
        );
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
        const st = await fh.stat();
        if (!st.isFile()) throw failed(`${show(e.abs)} changed type while being sent`);
        const size = st.size;
        out.push(frame({ t: 'f', p: e.path, m: st.mode & 0o7777, s: size, u: st.uid, g: st.gid }, e.path));
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

// ---------------------------------------------------------------------------------------------------------
// Decoder

class ByteReader {
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

interface Header {
  t: 'd' | 'f' | 'l' | 'r';
  p: string;
  m: number;
  s: number;
  l: string;
  u: number | undefined;
  g: number | undefined;
}

interface EndHeader {
  n: number;
  s: number;
  h: string;
}

function isId(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < 0xffffffff;
}

function parseHeader(raw: Buffer, index: number): Header | EndHeader {
  let h: unknown;
  try {
    h = JSON.parse(raw.toString('utf8'));
  } catch {
    throw corrupt(`record ${index}: header is not valid JSON`);
  }
  if (typeof h !== 'object' || h === null || Array.isArray(h)) {
    throw corrupt(`record ${index}: header is not a JSON object`);
  }
  const o = h as Record<string, unknown>;
  const t = o['t'];
  if (t === 'e') {
    const { n, s, h: hh } = o;
    if (!Number.isSafeInteger(n) || !Number.isSafeInteger(s) || typeof hh !== 'string') {
      throw corrupt(`end record is malformed`);
    }
    return { n: n as number, s: s as number, h: hh };
  }
  if (t !== 'd' && t !== 'f' && t !== 'l' && t !== 'r')
    throw corrupt(`record ${index}: unknown entry type ${JSON.stringify(t)}`);
  const p = o['p'];
  const reason = unsafePathReason(p);
  if (reason !== null) {
    throw corrupt(`record ${index}: unsafe path ${typeof p === 'string' ? show(p) : String(p)}: ${reason}`);
  }
  const path = p as string;
  if (t === 'r') return { t, p: path, m: 0, s: 0, l: '', u: undefined, g: undefined };
  const m = o['m'];
  if (typeof m !== 'number' || !Number.isInteger(m) || m < 0 || m > 0o7777) {
    throw corrupt(`${show(path)}: invalid mode ${JSON.stringify(m)}`);
  }
  const u = o['u'];
  const g = o['g'];
  if ((u !== undefined && !isId(u)) || (g !== undefined && !isId(g))) {
    throw corrupt(`${show(path)}: invalid owner`);
  }
  let s = 0;
  let l = '';
  if (t === 'f') {
    const size = o['s'];
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      throw corrupt(`${show(path)}: invalid file size ${JSON.stringify(size)}`);
    }
    s = size;
  } else if (t === 'l') {
    const target = o['l'];
    if (typeof target !== 'string' || target.length === 0 || target.includes('\0')) {
      throw corrupt(`${show(path)}: invalid symlink target`);
    }
    if (Buffer.byteLength(target) > MAX_PATH_BYTES) throw corrupt(`${show(path)}: symlink target too long`);
    l = target;
  }
  return { t, p: path, m, s, l, u: u as number | undefined, g: g as number | undefined };
}

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

/**
 * Reads a framed stream from `input` and recreates the tree under `destRoot` (created if missing; existing
 * directories are merged, existing files and symlinks are never overwritten). Returns what was written.
 *
 * Anything wrong with the stream (bad magic, unsafe path, write through a symlink, bad checksum, truncation,
 * trailing bytes, count/size/header-hash mismatch, over maxBytes) throws FerryError FERRY_E_TRANSFER_CORRUPT;
 * local I/O errors and input stream errors throw FERRY_E_TRANSFER_FAILED. After a failure destRoot holds a
 * partial tree the caller should remove. A Readable input is not destroyed on failure.
 */
export async function decodeTree(
  input: Readable | AsyncIterable<Buffer>,
  destRoot: string,
  opts: DecodeOptions = {},
): Promise<StreamStats> {
  const reader = new ByteReader(input, opts.maxBytes);
  try {
    const root = resolve(destRoot);
    try {
      await mkdir(root, { recursive: true });
    } catch (err) {
      throw failed(`cannot create destination ${show(root)}: ${errText(err)}`, err);
    }
    return await decodeInto(reader, root, opts);
  } catch (err) {
    await reader.release();
    if (err instanceof FerryError) throw err;
    throw failed(errText(err), err);
  }
}

async function decodeInto(reader: ByteReader, root: string, opts: DecodeOptions): Promise<StreamStats> {
  const stats: StreamStats = { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
  const asRoot = process.getuid?.() === 0;
  /** Relative paths known to be real directories (created or checked by us); '' is root. */
  const knownDirs = new Set<string>(['']);
  /** Non-directory entries created by this stream (to tell duplicates from pre-existing files). */
  const created = new Set<string>();
  /** Directory modes, applied at the end (deepest first) so read-only dirs can still be filled. */
  const dirModes = new Map<string, number>();
  const headerHash = createHash('sha256');

  const magic = await reader.readExact(MAGIC_BUF.length, 'the stream header');
  if (!magic.equals(MAGIC_BUF)) {
    throw corrupt(`bad magic ${show(magic.toString('latin1'))}, expected ${show(STREAM_MAGIC)}`);
  }

  // Metadata operations below are synchronous on purpose: they take microseconds, and a thread-pool
  // round trip per call would dominate the time to unpack a rootfs of thousands of small files.

  /** Absolute path for entry `p` after checking every parent component is a real directory. */
  const prepare = (p: string): string => {
    const cut = p.lastIndexOf('/');
    const parent = cut < 0 ? '' : p.slice(0, cut);
    if (!knownDirs.has(parent)) {
      let rel = '';
      for (const part of parent.split('/')) {
        rel = joinStream(rel, part);
        if (knownDirs.has(rel)) continue;
        let st: Stats;
        try {
          st = lstatSync(join(root, rel));
        } catch (err) {
          if (errCode(err) === 'ENOENT') {
            throw corrupt(`${show(p)} arrived before its parent directory ${show(rel)}`);
          }
          throw failed(`cannot check ${show(rel)}: ${errText(err)}`, err);
        }
        if (st.isSymbolicLink()) throw corrupt(`refusing to write ${show(p)}: ${show(rel)} is a symlink`);
        if (!st.isDirectory()) throw corrupt(`refusing to write ${show(p)}: ${show(rel)} is not a directory`);
        knownDirs.add(rel);
      }
    }
    return join(root, p);
  };

  const existsError = (p: string, what: string): FerryError =>
    created.has(p) || knownDirs.has(p)
      ? corrupt(`duplicate entry ${show(p)} (${what})`)
      : failed(`${show(p)} already exists in the destination (${what}); decode into a fresh directory`);

  /** Why a new file could not be created (it is opened without following a symlink, refusing an existing path). */
  const createError = (p: string, err: unknown): FerryError => {
    const code = errCode(err);
    if (code === 'EEXIST') return existsError(p, 'file');
    if (code === 'ELOOP') return corrupt(`refusing to write ${show(p)}: it is a symlink`);
    return failed(`cannot create ${show(p)}: ${errText(err)}`, err);
  };

  let records = 0;
  for (;;) {
    const lenBuf = await reader.readExact(4, `the header length of record ${records}`);
    const len = lenBuf.readUInt32BE(0);
    if (len === 0 || len > MAX_HEADER_BYTES) {
      throw corrupt(`record ${records}: header length ${len} is out of range (1..${MAX_HEADER_BYTES})`);
    }
    const raw = await reader.readExact(len, `the header of record ${records}`);
    const h = parseHeader(raw, records);
    if (!('t' in h)) {
      if (h.n !== records) throw corrupt(`end record announces ${h.n} entries but ${records} were received`);
      if (h.s !== stats.bytes) {
        throw corrupt(`end record announces ${h.s} content bytes but ${stats.bytes} were received`);
      }
      if (h.h !== headerHash.digest('hex')) throw corrupt('header checksum mismatch in end record');
      break;
    }
    headerHash.update(raw);
    records++;
    if (h.t === 'r') {
      if (!opts.allowRemove) throw corrupt(`unexpected removal of ${show(h.p)} (not an update)`);
      // parents checked like any entry's (a removal never reaches through a symlink); a missing one: nothing to do
      let parentGone = false;
      let rel = '';
      for (const part of h.p.split('/').slice(0, -1)) {
        rel = joinStream(rel, part);
        let st: Stats;
        try {
          st = lstatSync(join(root, rel));
        } catch (err) {
          if (errCode(err) !== 'ENOENT') throw failed(`cannot check ${show(rel)}: ${errText(err)}`, err);
          parentGone = true;
          break;
        }
        if (!st.isDirectory() || st.isSymbolicLink())
          throw corrupt(`refusing to remove ${show(h.p)}: ${show(rel)} is not a directory`);
      }
      if (!parentGone) {
        try {
          rmSync(join(root, h.p), { recursive: true, force: true });
        } catch (err) {
          throw failed(`cannot remove ${show(h.p)}: ${errText(err)}`, err);
        }
      }
      for (const d of [...knownDirs]) if (d === h.p || d.startsWith(`${h.p}/`)) knownDirs.delete(d);
      created.delete(h.p);
      stats.removed = (stats.removed ?? 0) + 1;
      continue;
    }
    const abs = prepare(h.p);
    const chown = asRoot && h.u !== undefined && h.g !== undefined;

    if (h.t === 'd') {
      try {
        mkdirSync(abs, 0o700);
      } catch (err) {
        if (errCode(err) !== 'EEXIST') {
          throw failed(`cannot create directory ${show(h.p)}: ${errText(err)}`, err);
        }
        const st = lstatSync(abs);
        if (st.isSymbolicLink() || !st.isDirectory()) {
          throw created.has(h.p)
            ? corrupt(`directory ${show(h.p)} clashes with an earlier entry`)
            : failed(`${show(h.p)} already exists in the destination and is not a directory`);
        }
      }
      knownDirs.add(h.p);
      if (chown) lchownSync(abs, h.u!, h.g!);
      dirModes.set(abs, h.m);
      stats.dirs++;
    } else if (h.t === 'l') {
      try {
        symlinkSync(h.l, abs);
      } catch (err) {
        if (errCode(err) === 'EEXIST') throw existsError(h.p, 'symlink');
        throw failed(`cannot create symlink ${show(h.p)}: ${errText(err)}`, err);
      }
      created.add(h.p);
      if (chown) lchownSync(abs, h.u!, h.g!);
      stats.symlinks++;
    } else {
      if (opts.maxBytes !== undefined && reader.position + h.s + DIGEST_BYTES > opts.maxBytes) {
        throw corrupt(`file ${show(h.p)} (${h.s} bytes) would exceed the limit of ${opts.maxBytes} bytes`);
      }
      if (h.s <= SMALL_FILE) {
        // Small file: received whole and verified before anything is written.
        const data = await reader.readExact(h.s, `the content of ${show(h.p)}`);
        const digest = await reader.readExact(DIGEST_BYTES, `the checksum of ${show(h.p)}`);
        if (!digest.equals(contentHash().update(data).digest())) {
          throw corrupt(`checksum mismatch for file ${show(h.p)}`);
        }
        let fd: number;
        try {
          fd = openSync(abs, O_CREATE, 0o600);
        } catch (err) {
          throw createError(h.p, err);
        }
        created.add(h.p);
        try {
          let off = 0;
          while (off < data.length) off += writeSync(fd, data, off, data.length - off, off);
          if (chown) fchownSync(fd, h.u!, h.g!);
          fchmodSync(fd, h.m); // after chown, which clears setuid/setgid
        } catch (err) {
          throw failed(`cannot write ${show(h.p)}: ${errText(err)}`, err);
        } finally {
          closeSync(fd);
        }
        if (data.length > 0) opts.onBytes?.(data.length);
      } else {
        let fh: FileHandle;
        try {
          fh = await open(abs, O_CREATE, 0o600);
        } catch (err) {
          throw createError(h.p, err);
        }
        created.add(h.p);
        try {
          const zeroes = await receiveFile(reader, fh, h.p, h.s, opts.onBytes);
          if (zeroes > 0) stats.zeroBytes = (stats.zeroBytes ?? 0) + zeroes;
          if (chown) await fh.chown(h.u!, h.g!);
          await fh.chmod(h.m);
        } catch (err) {
          if (err instanceof FerryError) throw err;
          throw failed(`cannot write ${show(h.p)}: ${errText(err)}`, err);
        } finally {
          await fh.close().catch(noop);
        }
      }
      stats.files++;
      stats.bytes += h.s;
    }
  }

  if (await reader.hasMore()) throw corrupt(`unexpected data after the end record (${records} entries)`);

  const dirs = [...dirModes];
  for (let i = dirs.length - 1; i >= 0; i--) {
    const [abs, mode] = dirs[i]!;
    try {
      chmodSync(abs, mode);
    } catch (err) {
      throw failed(`cannot set mode of ${show(abs)}: ${errText(err)}`, err);
    }
  }
  return stats;
}

async function receiveFile(
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
