// Walking the source trees of an image stream into entries, in the order they are sent: a directory before
// anything inside it, depth-first, names sorted. A source root that is itself a symlink is followed (the caller
// named it); nothing below it is.
import type { Stats } from 'node:fs';
import { lstatSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { errCode, errText, failed, joinStream, type StreamStats, show, unsafePathReason } from './format.ts';

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

export type WalkEntry =
  | { kind: 'd'; path: string; mode: number; uid?: number; gid?: number; abs?: string }
  | { kind: 'f'; path: string; abs: string; size: number }
  | { kind: 'l'; path: string; abs: string; mode: number; uid: number; gid: number };

export async function* walkSources(
  sources: StreamEntrySource[],
  exclude: ExcludeFn | undefined,
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

/** What encodeTree would send (entry counts and content bytes), without reading file contents. */
export async function measureTree(
  sources: StreamEntrySource[],
  opts: { exclude?: ExcludeFn } = {},
): Promise<StreamStats> {
  const out: StreamStats = { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
  for await (const e of walkSources(sources, opts.exclude)) {
    if (e.kind === 'd') out.dirs++;
    else if (e.kind === 'l') out.symlinks++;
    else {
      out.files++;
      out.bytes += e.size;
    }
  }
  return out;
}
