// Walking the source trees of an image stream into entries, in the order they are sent: a directory before
// anything inside it, depth-first, names sorted. A source root that is itself a symlink is followed (the caller
// named it); nothing below it is. Every entry comes with its metadata (lstat with nanosecond times, xattrs); an
// inode with several names inside the trees is recognised by device and inode number (LinkTracker), which the
// stream itself never carries.
import type { BigIntStats } from 'node:fs';
import { lstatSync, realpathSync, statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type EntryMeta,
  errCode,
  errText,
  failed,
  joinStream,
  type StreamStats,
  show,
  unsafePathReason,
} from './format.ts';
import { readXattrs } from './xattrs.ts';

export interface StreamEntrySource {
  root: string;
  prefix: string;
}

/** Called for each entry below a source root; relPath is relative to the root ('rootfs/proc'). True skips it (and its subtree). */
export type ExcludeFn = (relPath: string, prefix: string) => boolean;

/** The walker lets the event loop run after this many synchronous lstat calls. */
const YIELD_EVERY = 512;

function normalisePrefix(prefix: string): string {
  if (prefix === '') return '';
  const reason = unsafePathReason(prefix);
  if (reason !== null) throw failed(`invalid prefix ${show(prefix)}: ${reason}`);
  return prefix;
}

export type NodeKind = 'p' | 's' | 'c' | 'b';

export type WalkEntry =
  | { kind: 'd'; path: string; meta: EntryMeta; abs?: string }
  /**
   * A file's mode, owner and times are taken when it is opened (fstat); `x` and `inode` here. An empty file
   * comes with its metadata (`meta`, from lstat) and is sent without being opened: opening a file breaks a
   * write lease on it (fcntl F_SETLEASE), which sends its holder SIGIO and blocks the open for up to the
   * kernel's lease-break-time, and an empty file has no content to read anyway.
   */
  | {
      kind: 'f';
      path: string;
      abs: string;
      size: number;
      x: Map<string, Buffer>;
      inode?: string;
      meta?: EntryMeta;
    }
  | { kind: 'l'; path: string; abs: string; meta: EntryMeta; inode?: string }
  | {
      kind: NodeKind;
      path: string;
      abs: string;
      meta: EntryMeta;
      rdev?: { major: number; minor: number };
      inode?: string;
    };

/** The first stream path of every inode with several names, so later names go as hard links. */
export class LinkTracker {
  private readonly first = new Map<string, string>();

  /** The path `inode` was sent under, if it was. */
  sentAs(inode: string | undefined): string | undefined {
    return inode === undefined ? undefined : this.first.get(inode);
  }

  /** `path` was sent with the content and metadata of `inode`. */
  sent(inode: string | undefined, path: string): void {
    if (inode !== undefined && !this.first.has(inode)) this.first.set(inode, path);
  }
}

/** Device and inode number of a non-directory with more than one name (else undefined: nothing to link). */
function inodeKey(st: BigIntStats): string | undefined {
  return st.nlink > 1n && !st.isDirectory() ? `${st.dev}:${st.ino}` : undefined;
}

/** Linux's encoding of a device number (glibc's gnu_dev_major / gnu_dev_minor). */
export function splitRdev(rdev: bigint): { major: number; minor: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n);
  return { major: Number(major), minor: Number(minor) };
}

/** The metadata sent for an inode: mode bits, owner, times to the nanosecond, xattrs. */
export function metaOf(st: BigIntStats, x: Map<string, Buffer>): EntryMeta {
  return {
    m: Number(st.mode & 0o7777n),
    u: Number(st.uid),
    g: Number(st.gid),
    at: st.atimeNs,
    mt: st.mtimeNs,
    x,
  };
}

export async function* walkSources(
  sources: StreamEntrySource[],
  exclude: ExcludeFn | undefined,
): AsyncGenerator<WalkEntry> {
  const declaredDirs = new Set<string>();
  for (const src of sources) {
    const prefix = normalisePrefix(src.prefix);
    let st: BigIntStats;
    let real: string;
    try {
      st = statSync(src.root, { bigint: true });
      real = realpathSync(src.root);
    } catch (err) {
      throw failed(`cannot read source ${show(src.root)}: ${errText(err)}`, err);
    }
    // Ancestors of a multi-component prefix ('a/b' needs 'a' first).
    const parts = prefix === '' ? [] : prefix.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (declaredDirs.has(d)) continue;
      declaredDirs.add(d);
      yield { kind: 'd', path: d, meta: { m: 0o755 } };
    }
    if (st.isDirectory()) {
      if (prefix !== '') {
        declaredDirs.add(prefix);
        yield { kind: 'd', path: prefix, meta: metaOf(st, readXattrs(real, src.root)) };
      }
      yield* walkDir(src.root, '', prefix, prefix, exclude, { n: 0 });
    } else if (prefix === '') {
      throw failed(`source ${show(src.root)} is not a directory, so it needs a non-empty prefix`);
    } else if (st.isFile()) {
      yield { kind: 'f', path: prefix, abs: src.root, size: Number(st.size), x: readXattrs(real, src.root) };
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
  exclude: ExcludeFn | undefined,
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
    let st: BigIntStats;
    try {
      st = lstatSync(abs, { bigint: true });
    } catch (err) {
      if (errCode(err) === 'ENOENT') continue; // vanished since readdir
      throw failed(`cannot stat ${show(abs)}: ${errText(err)}`, err);
    }
    const x = readXattrs(abs, abs);
    if (++pace.n >= YIELD_EVERY) {
      pace.n = 0;
      await new Promise<void>((r) => setImmediate(r));
    }
    const path = joinStream(streamDir, name);
    const inode = inodeKey(st);
    if (st.isDirectory()) {
      yield { kind: 'd', path, meta: metaOf(st, x), abs };
      yield* walkDir(abs, joinStream(rel, name), path, prefix, exclude, pace);
    } else if (st.isFile()) {
      yield {
        kind: 'f',
        path,
        abs,
        size: Number(st.size),
        x,
        ...(inode ? { inode } : {}),
        ...(st.size === 0n ? { meta: metaOf(st, x) } : {}),
      };
    } else if (st.isSymbolicLink()) {
      yield { kind: 'l', path, abs, meta: metaOf(st, x), ...(inode ? { inode } : {}) };
    } else {
      const kind: NodeKind | undefined = st.isFIFO()
        ? 'p'
        : st.isSocket()
          ? 's'
          : st.isCharacterDevice()
            ? 'c'
            : st.isBlockDevice()
              ? 'b'
              : undefined;
      if (kind === undefined)
        throw failed(`cannot carry ${show(abs)}: unknown file type (mode ${st.mode.toString(8)})`);
      const rdev = kind === 'c' || kind === 'b' ? { rdev: splitRdev(st.rdev) } : {};
      yield { kind, path, abs, meta: metaOf(st, x), ...rdev, ...(inode ? { inode } : {}) };
    }
  }
}

/** What encodeTree would send (entry counts and content bytes), without reading file contents. */
export async function measureTree(
  sources: StreamEntrySource[],
  opts: { exclude?: ExcludeFn } = {},
): Promise<StreamStats> {
  const out: StreamStats = { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
  const links = new LinkTracker();
  for await (const e of walkSources(sources, opts.exclude)) {
    if (e.kind === 'd') {
      out.dirs++;
      continue;
    }
    if (links.sentAs(e.inode) !== undefined) {
      out.links = (out.links ?? 0) + 1;
      continue;
    }
    links.sent(e.inode, e.path);
    if (e.kind === 'l') out.symlinks++;
    else if (e.kind === 'f') {
      out.files++;
      out.bytes += e.size;
    } else out.nodes = (out.nodes ?? 0) + 1;
  }
  return out;
}
