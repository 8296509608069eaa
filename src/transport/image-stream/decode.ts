// The decoder: a framed stream (format.ts) back into a tree under a destination root. Each record kind has its
// own handler (RECORD_HANDLERS); the loop here only reads headers, checks the end record and dispatches. What the
// handlers share (which directories are known to be real, which entries this stream created, the directory
// metadata applied at the end) lives in one TreeWriter.
//
// An entry's metadata goes on in this order: content, owner (chown clears setuid/setgid and file capabilities),
// mode, xattrs (after the mode: an ACL sets the group bits itself), times (last: everything before touches
// them). Directories get mode, xattrs and times once everything inside them is written (a default ACL set
// earlier would be inherited by their new entries; every new entry changes a directory's mtime).
// Over 400 lines: the record handlers share one decoder state (known directories, created entries); a split
// would pass that state through every call.
// Over 400 lines: the record handlers share the TreeWriter and the order metadata goes on in; kept together so that
// order is read in one place.
import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import {
  chmodSync,
  closeSync,
  fchmodSync,
  fchownSync,
  constants as fsc,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeSync,
} from 'node:fs';
import { type FileHandle, mkdir, open } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { FerryError } from '../../core/errors.ts';
import { ByteReader } from './byte-reader.ts';
import { receiveFile } from './content.ts';
import {
  contentHash,
  corrupt,
  DIGEST_BYTES,
  type EntryKind,
  errCode,
  errText,
  failed,
  type Header,
  joinStream,
  MAGIC_BUF,
  MAX_HEADER_BYTES,
  noop,
  parseHeader,
  SMALL_FILE,
  STREAM_MAGIC,
  type StreamStats,
  show,
  tooLarge,
} from './format.ts';
import { type DeviceKind, type NodeMaker, SystemNodeMaker } from './nodes.ts';
import { writeXattrs } from './xattrs.ts';

export interface DecodeOptions {
  /** Progress: called with the number of file content bytes just received (increments, not totals). */
  onBytes?: (n: number) => void;
  /** Upper bound on the whole stream size in bytes (content + framing); checked early from declared sizes. */
  maxBytes?: number;
  /** Accept removal records: the stream updates a tree that is already there (existing files stay otherwise). */
  allowRemove?: boolean;
  /** Accept character and block device nodes (a rootfs from a trusted sender); refused otherwise. */
  allowDevices?: boolean;
  /** Makes FIFOs, socket files and device nodes (default: mknod and a bound socket, nodes.ts). */
  nodes?: NodeMaker;
  /**
   * Small regular files the receiver wrote ahead of the stream (a staged restore's descriptors.json): one already
   * there is replaced, by a rename over it, instead of refused.
   */
  replaceable?: ReadonlySet<string>;
}

const O_CREATE = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW;

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

// Metadata operations below are synchronous on purpose: they take microseconds, and a thread-pool round trip
// per call would dominate the time to unpack a rootfs of thousands of small files.

/** The destination tree as this stream builds it, and the checks every handler makes before writing. */
class TreeWriter {
  readonly stats: StreamStats = { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
  readonly asRoot = process.getuid?.() === 0;
  /** Relative paths known to be real directories (created or checked by us); '' is root. */
  readonly knownDirs = new Set<string>(['']);
  /** Non-directory entries created by this stream (to tell duplicates from pre-existing files). */
  readonly created = new Set<string>();
  /** Directory metadata, applied at the end (deepest first) so read-only dirs can still be filled. */
  readonly dirMeta = new Map<string, Header>();
  readonly reader: ByteReader;
  readonly root: string;
  readonly opts: DecodeOptions;

  readonly nodes: NodeMaker;

  constructor(reader: ByteReader, root: string, opts: DecodeOptions) {
    this.reader = reader;
    this.root = root;
    this.opts = opts;
    this.nodes = opts.nodes ?? new SystemNodeMaker();
  }

  /** Absolute path for entry `p` after checking every parent component is a real directory. */
  prepare(p: string): string {
    const cut = p.lastIndexOf('/');
    const parent = cut < 0 ? '' : p.slice(0, cut);
    if (!this.knownDirs.has(parent)) {
      let rel = '';
      for (const part of parent.split('/')) {
        rel = joinStream(rel, part);
        if (this.knownDirs.has(rel)) continue;
        let st: Stats;
        try {
          st = lstatSync(join(this.root, rel));
        } catch (err) {
          if (errCode(err) === 'ENOENT') {
            throw corrupt(`${show(p)} arrived before its parent directory ${show(rel)}`);
          }
          throw failed(`cannot check ${show(rel)}: ${errText(err)}`, err);
        }
        if (st.isSymbolicLink()) throw corrupt(`refusing to write ${show(p)}: ${show(rel)} is a symlink`);
        if (!st.isDirectory()) throw corrupt(`refusing to write ${show(p)}: ${show(rel)} is not a directory`);
        this.knownDirs.add(rel);
      }
    }
    return join(this.root, p);
  }

  /** Whether the owner in `h` is applied (only as root, and only when the stream carries one). */
  chowns(h: Header): boolean {
    return this.asRoot && h.u !== undefined && h.g !== undefined;
  }

  existsError(p: string, what: string): FerryError {
    return this.created.has(p) || this.knownDirs.has(p)
      ? corrupt(`duplicate entry ${show(p)} (${what})`)
      : failed(`${show(p)} already exists in the destination (${what}); decode into a fresh directory`);
  }

  /** Why a new file could not be created (it is opened without following a symlink, refusing an existing path). */
  createError(p: string, err: unknown): FerryError {
    const code = errCode(err);
    if (code === 'EEXIST') return this.existsError(p, 'file');
    if (code === 'ELOOP') return corrupt(`refusing to write ${show(p)}: it is a symlink`);
    return failed(`cannot create ${show(p)}: ${errText(err)}`, err);
  }

  /** Xattrs and times of the entry at `abs` (after its owner and mode; never following a symlink). */
  finishEntry(abs: string, h: Header, fd?: number): void {
    if (h.x && h.x.size > 0) writeXattrs(abs, h.p, h.x);
    const times = timesOf(h);
    if (!times) return;
    try {
      if (fd !== undefined) futimesSync(fd, times[0], times[1]);
      else lutimesSync(abs, times[0], times[1]);
    } catch (err) {
      throw failed(`cannot set the times of ${show(h.p)}: ${errText(err)}`, err);
    }
  }

  /** Directory mode, xattrs and times, deepest first (a read-only directory is filled before it becomes read-only). */
  finish(): void {
    const dirs = [...this.dirMeta];
    for (let i = dirs.length - 1; i >= 0; i--) {
      const [abs, h] = dirs[i]!;
      try {
        chmodSync(abs, h.m);
      } catch (err) {
        throw failed(`cannot set mode of ${show(abs)}: ${errText(err)}`, err);
      }
      this.finishEntry(abs, h);
    }
  }
}

type RecordHandler = (w: TreeWriter, h: Header) => void | Promise<void>;

/** 'r': remove what is at the path (an update of a tree sent earlier; only when the caller allows it). */
function decodeRemoval(w: TreeWriter, h: Header): void {
  if (!w.opts.allowRemove) throw corrupt(`unexpected removal of ${show(h.p)} (not an update)`);
  // parents checked like any entry's (a removal never reaches through a symlink); a missing one: nothing to do
  let parentGone = false;
  let rel = '';
  for (const part of h.p.split('/').slice(0, -1)) {
    rel = joinStream(rel, part);
    let st: Stats;
    try {
      st = lstatSync(join(w.root, rel));
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
      rmSync(join(w.root, h.p), { recursive: true, force: true });
    } catch (err) {
      throw failed(`cannot remove ${show(h.p)}: ${errText(err)}`, err);
    }
  }
  for (const d of [...w.knownDirs]) if (d === h.p || d.startsWith(`${h.p}/`)) w.knownDirs.delete(d);
  // (what was below is gone too: a hard link may not name it any more)
  for (const e of [...w.created]) if (e === h.p || e.startsWith(`${h.p}/`)) w.created.delete(e);
  w.stats.removed = (w.stats.removed ?? 0) + 1;
}

/** 'd': a directory (an existing one is merged); its mode is set at the end. */
function decodeDirectory(w: TreeWriter, h: Header): void {
  const abs = w.prepare(h.p);
  try {
    mkdirSync(abs, 0o700);
  } catch (err) {
    if (errCode(err) !== 'EEXIST') {
      throw failed(`cannot create directory ${show(h.p)}: ${errText(err)}`, err);
    }
    const st = lstatSync(abs);
    if (st.isSymbolicLink() || !st.isDirectory()) {
      throw w.created.has(h.p)
        ? corrupt(`directory ${show(h.p)} clashes with an earlier entry`)
        : failed(`${show(h.p)} already exists in the destination and is not a directory`);
    }
  }
  w.knownDirs.add(h.p);
  if (w.chowns(h)) lchownSync(abs, h.u!, h.g!);
  w.dirMeta.set(abs, h);
  w.stats.dirs++;
}

/** 'l': a symlink, its target verbatim (never followed). */
function decodeSymlink(w: TreeWriter, h: Header): void {
  const abs = w.prepare(h.p);
  try {
    symlinkSync(h.l, abs);
  } catch (err) {
    if (errCode(err) === 'EEXIST') throw w.existsError(h.p, 'symlink');
    throw failed(`cannot create symlink ${show(h.p)}: ${errText(err)}`, err);
  }
  w.created.add(h.p);
  if (w.chowns(h)) lchownSync(abs, h.u!, h.g!);
  w.finishEntry(abs, h);
  w.stats.symlinks++;
}

/** 'f': a regular file, its content and its digest. */
async function decodeFile(w: TreeWriter, h: Header): Promise<void> {
  const abs = w.prepare(h.p);
  const { reader, opts } = w;
  const chown = w.chowns(h);
  if (opts.maxBytes !== undefined && reader.position + h.s + DIGEST_BYTES > opts.maxBytes) {
    throw tooLarge(`file ${show(h.p)} (${h.s} bytes) would exceed the limit of ${opts.maxBytes} bytes`);
  }
  if (h.s <= SMALL_FILE) {
    // Small file: received whole and verified before anything is written.
    const data = await reader.readExact(h.s, `the content of ${show(h.p)}`);
    const digest = await reader.readExact(DIGEST_BYTES, `the checksum of ${show(h.p)}`);
    if (!digest.equals(contentHash().update(data).digest())) {
      throw corrupt(`checksum mismatch for file ${show(h.p)}`);
    }
    let fd: number;
    // written beside and renamed over the one the receiver put there: a reader of it sees one or the other, whole
    const replace =
      opts.replaceable?.has(h.p) === true && lstatSync(abs, { throwIfNoEntry: false })?.isFile();
    const target = replace ? `${abs}.ferry-new` : abs;
    try {
      fd = openSync(target, O_CREATE, 0o600);
    } catch (err) {
      throw w.createError(h.p, err);
    }
    w.created.add(h.p);
    try {
      let off = 0;
      while (off < data.length) off += writeSync(fd, data, off, data.length - off, off);
      if (chown) fchownSync(fd, h.u!, h.g!);
      fchmodSync(fd, h.m); // after chown, which clears setuid/setgid
      w.finishEntry(target, h, fd);
      if (replace) renameSync(target, abs);
    } catch (err) {
      if (err instanceof FerryError) throw err;
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
      throw w.createError(h.p, err);
    }
    w.created.add(h.p);
    try {
      const zeroes = await receiveFile(reader, fh, h.p, h.s, opts.onBytes);
      if (zeroes > 0) w.stats.zeroBytes = (w.stats.zeroBytes ?? 0) + zeroes;
      if (chown) await fh.chown(h.u!, h.g!);
      await fh.chmod(h.m);
      w.finishEntry(abs, h, fh.fd);
    } catch (err) {
      if (err instanceof FerryError) throw err;
      throw failed(`cannot write ${show(h.p)}: ${errText(err)}`, err);
    } finally {
      await fh.close().catch(noop);
    }
  }
  w.stats.files++;
  w.stats.bytes += h.s;
}

/** 'h': another name for an inode this stream created (never a directory, never outside the tree). */
function decodeHardLink(w: TreeWriter, h: Header): void {
  if (!w.created.has(h.l)) {
    throw corrupt(`hard link ${show(h.p)} names ${show(h.l)}, which is not a file this stream created`);
  }
  const target = w.prepare(h.l); // its parents are still real directories
  const abs = w.prepare(h.p);
  try {
    linkSync(target, abs);
  } catch (err) {
    if (errCode(err) === 'EEXIST') throw w.existsError(h.p, 'hard link');
    throw failed(`cannot link ${show(h.p)} to ${show(h.l)}: ${errText(err)}`, err);
  }
  w.created.add(h.p);
  w.stats.links = (w.stats.links ?? 0) + 1;
}

/** 'p', 's', 'c', 'b': a FIFO, a socket file, a device node (devices only when the caller accepts them). */
async function decodeNode(w: TreeWriter, h: Header): Promise<void> {
  const device = h.t === 'c' || h.t === 'b';
  if (device && !w.opts.allowDevices) {
    throw corrupt(`device node ${show(h.p)} refused: this stream's receiver does not accept devices`);
  }
  const abs = w.prepare(h.p);
  let exists = true;
  try {
    lstatSync(abs);
  } catch {
    exists = false;
  }
  if (exists) throw w.existsError(h.p, 'special file');
  if (h.t === 'p') await w.nodes.fifo(abs);
  else if (h.t === 's') await w.nodes.socket(abs);
  else await w.nodes.device(abs, h.t as DeviceKind, h.rdev!.major, h.rdev!.minor);
  w.created.add(h.p);
  try {
    if (w.chowns(h)) lchownSync(abs, h.u!, h.g!);
    chmodSync(abs, h.m); // a node just made here, not a symlink: following is harmless
  } catch (err) {
    throw failed(`cannot set owner or mode of ${show(h.p)}: ${errText(err)}`, err);
  }
  w.finishEntry(abs, h);
  w.stats.nodes = (w.stats.nodes ?? 0) + 1;
}

const RECORD_HANDLERS: Record<EntryKind, RecordHandler> = {
  r: decodeRemoval,
  d: decodeDirectory,
  l: decodeSymlink,
  f: decodeFile,
  h: decodeHardLink,
  p: decodeNode,
  s: decodeNode,
  c: decodeNode,
  b: decodeNode,
};

/** [atime, mtime] in seconds for utimes, when the header carries times (a double: Node's utimes takes no more). */
function timesOf(h: Header): [number, number] | undefined {
  if (h.mt === undefined) return undefined;
  return [seconds(h.at ?? h.mt), seconds(h.mt)];
}

function seconds(ns: bigint): number {
  return Number(ns / 1_000_000_000n) + Number(ns % 1_000_000_000n) / 1e9;
}

async function decodeInto(reader: ByteReader, root: string, opts: DecodeOptions): Promise<StreamStats> {
  const w = new TreeWriter(reader, root, opts);
  const headerHash = createHash('sha256');

  const magic = await reader.readExact(MAGIC_BUF.length, 'the stream header');
  if (!magic.equals(MAGIC_BUF)) {
    throw corrupt(`bad magic ${show(magic.toString('latin1'))}, expected ${show(STREAM_MAGIC)}`);
  }

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
      if (h.s !== w.stats.bytes) {
        throw corrupt(`end record announces ${h.s} content bytes but ${w.stats.bytes} were received`);
      }
      if (h.h !== headerHash.digest('hex')) throw corrupt('header checksum mismatch in end record');
      break;
    }
    headerHash.update(raw);
    records++;
    await RECORD_HANDLERS[h.t](w, h);
  }

  if (await reader.hasMore()) throw corrupt(`unexpected data after the end record (${records} entries)`);
  w.finish();
  return w.stats;
}
