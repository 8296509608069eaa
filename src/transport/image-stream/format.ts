/*
 * Image stream: a framed byte stream carrying a directory tree from one host to another over an HTTP body, with
 * integrity checks. Used to ship an OCI bundle (config.json + a writable rootfs) and CRIU checkpoint images from
 * the source agent to the destination agent. A rootfs travels faithfully: every file type, hard links, owners,
 * mode bits, times, extended attributes and POSIX ACLs (docs/decisions/0008).
 *
 * Wire format (version 4):
 *
 *   stream  := magic record* end
 *   magic   := "FERRYIS4"                          8 bytes, ASCII (magic + format version)
 *   record  := hlen header [content digest]         content + digest only for t:'f'
 *   hlen    := uint32 big-endian                    byte length of header, 1 .. 65536
 *   header  := UTF-8 JSON object
 *              { t, p, m?, s?, l?, r?, u?, g?, at?, mt?, x? }
 *                t  'd' directory, 'f' regular file, 'l' symlink, 'p' FIFO, 's' unix socket file, 'c' character
 *                   device, 'b' block device, 'h' hard link (another name of an inode sent earlier in this
 *                   stream), 'r' remove what is at p (a file, a symlink or a whole directory): only in an update of
 *                   a tree sent earlier (a bundle sent before the freeze, then what changed), and only accepted by
 *                   a decoder told to (allowRemove)
 *                p  relative path inside the stream: '/'-separated, no empty, '.' or '..' component,
 *                   no leading '/', no NUL (e.g. 'bundle/rootfs/etc/passwd')
 *                m  permission bits (mode & 0o7777, includes setuid/setgid/sticky); not for 'h' and 'r'
 *                s  file size in bytes ('f' only)
 *                l  'l': symlink target, sent verbatim and never followed; 'h': the stream path the inode was first
 *                   sent under (an entry of this stream that is not a directory)
 *                r  [major, minor] ('c' and 'b' only)
 *                u, g  owner uid/gid (optional; applied by the decoder only when it runs as root)
 *                at, mt  access and modification time, nanoseconds since the epoch as a decimal string (optional)
 *                x  extended attributes, { name: base64 value } (optional; user.*, trusted.*, security.*,
 *                   system.posix_acl_access, system.posix_acl_default)
 *   content := a file of up to 64 KiB: exactly s bytes of file data
 *              a larger file: pieces that add up to s bytes, each kind (1 byte) + length (uint32 big-endian):
 *                'D' len  followed by len bytes of data
 *                'Z' len  len bytes of zeroes, not sent: whole 4 KiB pages of zeroes (memory a program touched
 *                         but never wrote, freed heap, the holes of a sparse file) are skipped; the decoder
 *                         leaves them as holes
 *   digest  := 4 bytes, CRC-32 (big-endian) of content as sent: the transport (TLS) already authenticates every
 *              byte; the digest catches truncation, reordering and local read/write faults at 4+ GB/s,
 *              where SHA-256 cost a quarter of the transfer time (docs/decisions/0003)
 *   end     := hlen header with { t: 'e', n, s, h }
 *                n  number of records before the end record
 *                s  total file bytes (sum of all s, zeroes included)
 *                h  hex SHA-256 over all the JSON headers before it, concatenated (without hlen)
 *
 * Nothing may follow the end record. A directory is always sent before anything inside it (depth-first,
 * names sorted), so the decoder never has to create a parent on its own. Inode numbers do not travel: a hard
 * link names the path its inode was first sent under. A source root that is itself a symlink is followed (the
 * caller named it); nothing below it is. Version 3 (no special files, xattrs, links or times) is refused.
 *
 * This module is the format itself: the magic, the record kinds, the header layout and its validation, the
 * content digest, the limits. Walking a tree (walk.ts), encoding (encode.ts) and decoding (decode.ts) build on it.
 */

import { crc32 } from 'node:zlib';
import { FerryError } from '../../core/errors.ts';

/** What a stream carried (or would carry). */
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
  /** Hard links: names of an inode sent earlier in the stream (when there are any). */
  links?: number;
  /** FIFOs, socket files and device nodes (when there are any). */
  nodes?: number;
}

export const STREAM_MAGIC = 'FERRYIS4';
export const MAX_HEADER_BYTES = 64 * 1024;
export const MAGIC_BUF = Buffer.from(STREAM_MAGIC, 'latin1');
export const DIGEST_BYTES = 4;

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

/** Longest path or symlink target, in bytes. */
export const MAX_PATH_BYTES = 4096;
/**
 * Files up to this size travel as their bytes (no pieces), and both ends read, write and checksum them whole with
 * synchronous calls: each call blocks the event loop only for microseconds, while four thread-pool round trips
 * per file dominate the cost of a rootfs with thousands of small files.
 */
export const SMALL_FILE = 64 * 1024;

/** Record kinds of an entry header (the end record has none: it is told apart by its missing 't'). */
export type EntryKind = 'd' | 'f' | 'l' | 'p' | 's' | 'c' | 'b' | 'h' | 'r';
export const ENTRY_KINDS: readonly EntryKind[] = ['d', 'f', 'l', 'p', 's', 'c', 'b', 'h', 'r'];
/** Kinds whose header carries the inode's metadata (mode, owner, times, xattrs). */
const WITH_META = new Set<EntryKind>(['d', 'f', 'l', 'p', 's', 'c', 'b']);

/** The metadata of an inode, as sent. */
export interface EntryMeta {
  /** mode & 0o7777 */
  m: number;
  u?: number;
  g?: number;
  /** Nanoseconds since the epoch. */
  at?: bigint;
  mt?: bigint;
  /** Names sorted. */
  x?: Map<string, Buffer>;
}

export interface Header {
  t: EntryKind;
  p: string;
  m: number;
  s: number;
  l: string;
  u: number | undefined;
  g: number | undefined;
  rdev?: { major: number; minor: number };
  at?: bigint;
  mt?: bigint;
  x?: Map<string, Buffer>;
}

/** The JSON header fields for `meta` (to spread into a header object). */
export function metaFields(meta: EntryMeta): Record<string, unknown> {
  const h: Record<string, unknown> = { m: meta.m };
  if (meta.u !== undefined) h['u'] = meta.u;
  if (meta.g !== undefined) h['g'] = meta.g;
  if (meta.at !== undefined) h['at'] = meta.at.toString();
  if (meta.mt !== undefined) h['mt'] = meta.mt.toString();
  if (meta.x !== undefined && meta.x.size > 0) {
    const x: Record<string, string> = {};
    for (const [name, value] of meta.x) x[name] = value.toString('base64');
    h['x'] = x;
  }
  return h;
}

/** Largest device major and minor numbers Linux encodes (12 and 20 bits in the old, 32 in the new encoding). */
const MAX_DEV_NUMBER = 0xffffffff;
const NS_RE = /^-?\d{1,20}$/;
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;
/** Same limits as the kernel's (XATTR_NAME_MAX, XATTR_SIZE_MAX); the namespaces are checked where they are set. */
export const MAX_XATTR_NAME = 255;
export const MAX_XATTR_VALUE = 64 * 1024;

export interface EndHeader {
  n: number;
  s: number;
  h: string;
}

function isId(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < 0xffffffff;
}

export function parseHeader(raw: Buffer, index: number): Header | EndHeader {
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
  if (!ENTRY_KINDS.includes(t as EntryKind))
    throw corrupt(`record ${index}: unknown entry type ${JSON.stringify(t)}`);
  const kind = t as EntryKind;
  const p = o['p'];
  const reason = unsafePathReason(p);
  if (reason !== null) {
    throw corrupt(`record ${index}: unsafe path ${typeof p === 'string' ? show(p) : String(p)}: ${reason}`);
  }
  const path = p as string;
  const none = { t: kind, p: path, m: 0, s: 0, l: '', u: undefined, g: undefined };
  if (kind === 'r') return none;
  if (kind === 'h') {
    const first = o['l'];
    const why = unsafePathReason(first);
    if (why !== null) throw corrupt(`${show(path)}: invalid hard link target: ${why}`);
    return { ...none, l: first as string };
  }
  const m = o['m'];
  if (typeof m !== 'number' || !Number.isInteger(m) || m < 0 || m > 0o7777) {
    throw corrupt(`${show(path)}: invalid mode ${JSON.stringify(m)}`);
  }
  const u = o['u'];
  const g = o['g'];
  if ((u !== undefined && !isId(u)) || (g !== undefined && !isId(g))) {
    throw corrupt(`${show(path)}: invalid owner`);
  }
  const out: Header = { ...none, m, u: u as number | undefined, g: g as number | undefined };
  if (kind === 'f') {
    const size = o['s'];
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      throw corrupt(`${show(path)}: invalid file size ${JSON.stringify(size)}`);
    }
    out.s = size;
  } else if (kind === 'l') {
    const target = o['l'];
    if (typeof target !== 'string' || target.length === 0 || target.includes('\0')) {
      throw corrupt(`${show(path)}: invalid symlink target`);
    }
    if (Buffer.byteLength(target) > MAX_PATH_BYTES) throw corrupt(`${show(path)}: symlink target too long`);
    out.l = target;
  } else if (kind === 'c' || kind === 'b') {
    const r = o['r'];
    if (
      !Array.isArray(r) ||
      r.length !== 2 ||
      !r.every((n) => Number.isInteger(n) && n >= 0 && n <= MAX_DEV_NUMBER)
    )
      throw corrupt(`${show(path)}: invalid device number ${JSON.stringify(r)}`);
    out.rdev = { major: r[0] as number, minor: r[1] as number };
  }
  if (WITH_META.has(kind)) {
    for (const f of ['at', 'mt'] as const) {
      const v = o[f];
      if (v === undefined) continue;
      if (typeof v !== 'string' || !NS_RE.test(v))
        throw corrupt(`${show(path)}: invalid time ${JSON.stringify(v)}`);
      out[f] = BigInt(v);
    }
    const x = o['x'];
    if (x !== undefined) {
      if (typeof x !== 'object' || x === null || Array.isArray(x))
        throw corrupt(`${show(path)}: invalid xattrs`);
      const attrs = new Map<string, Buffer>();
      for (const [name, v] of Object.entries(x as Record<string, unknown>)) {
        if (name.length === 0 || Buffer.byteLength(name) > MAX_XATTR_NAME || name.includes('\0'))
          throw corrupt(`${show(path)}: invalid xattr name ${JSON.stringify(name)}`);
        if (typeof v !== 'string' || !BASE64_RE.test(v))
          throw corrupt(`${show(path)}: invalid value of xattr ${show(name)}`);
        const value = Buffer.from(v, 'base64');
        if (value.length > MAX_XATTR_VALUE) throw corrupt(`${show(path)}: xattr ${show(name)} is too large`);
        attrs.set(name, value);
      }
      out.x = attrs;
    }
  }
  return out;
}

export function corrupt(message: string, cause?: unknown): FerryError {
  return new FerryError('FERRY_E_TRANSFER_CORRUPT', `image stream: ${message}`, {
    phase: 'transfer',
    ...(cause === undefined ? {} : { cause }),
  });
}

export function failed(message: string, cause?: unknown): FerryError {
  return new FerryError('FERRY_E_TRANSFER_FAILED', `image stream: ${message}`, {
    phase: 'transfer',
    ...(cause === undefined ? {} : { cause }),
  });
}

export function errCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const c = (err as { code: unknown }).code;
    return typeof c === 'string' ? c : undefined;
  }
  return undefined;
}

export function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function show(p: string): string {
  return JSON.stringify(p);
}

export const noop = (): void => {};

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

export function joinStream(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}
