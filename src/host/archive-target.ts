// The caller's own archive file, written by the agent when both see the same file system (the CLI on the agent's
// host): the archive then goes from the compressor straight into the file, not through TLS, HTTP and a second
// process. The file stays the caller's: the caller made it (hidden name, mode 0600), reads it back against the
// digest the agent sends, and renames it into place; the agent only writes into it.
//
// The agent writes as root, so it must not write wherever a caller names. It writes only into a file that holds a
// token it issued itself moments before: only someone able to write that file could have put the token there, so
// the agent writes nothing the caller could not have written. Anything else (no such file on this host, another
// content, a link, not a regular file, a token unknown or used) is no error: the archive is streamed, as to a
// caller on another host.
//
// A restore reads the caller's archive the same way, with the same care: the agent must not read what the caller
// could not. The caller opens the archive itself and holds it open, and proves the process is its own with a token
// file it holds open too (made, written and unlinked by the caller); the agent reads the archive through that
// process's open file (/proc/PID/fd/N) only if the same process holds the token it issued.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { type FileHandle, open, readFile } from 'node:fs/promises';

/** Where a caller on this host holds its archive and its token open. */
export interface CallerFile {
  pid: number;
  /** The archive, open for reading. */
  fd: number;
  /** A file holding the token, open for reading. */
  tokenFd: number;
  token: string;
}

/** A token is good for this long after it was issued, and for one checkpoint. */
const TOKEN_TTL_MS = 60_000;
/** Issued tokens not yet used are bounded (a caller asking in a loop does not grow the agent). */
const MAX_TOKENS = 256;

export class ArchiveTargets {
  private readonly tokens = new Map<string, number>();

  /** A fresh token (64 hex digits) for the caller to write into its file. */
  issue(now = Date.now()): string {
    for (const [t, expires] of this.tokens) if (expires <= now) this.tokens.delete(t);
    if (this.tokens.size >= MAX_TOKENS) {
      const oldest = this.tokens.keys().next().value;
      if (oldest !== undefined) this.tokens.delete(oldest);
    }
    const token = randomBytes(32).toString('hex');
    this.tokens.set(token, now + TOKEN_TTL_MS);
    return token;
  }

  /**
   * The archive a caller on this host holds open, opened for reading, if the same process holds the token issued
   * here (unexpired; used up either way) and had the archive open for reading; else undefined (it is streamed).
   */
  async openCallerFile(c: CallerFile, now = Date.now()): Promise<FileHandle | undefined> {
    const expires = this.tokens.get(c.token);
    this.tokens.delete(c.token);
    if (expires === undefined || expires <= now) return undefined;
    const proc = `/proc/${c.pid}`;
    try {
      if (!(await holds(`${proc}/fd/${c.tokenFd}`, c.token))) return undefined;
      // the caller opened it for reading (O_RDONLY or O_RDWR): not a file it could only write
      const info = await readFile(`${proc}/fdinfo/${c.fd}`, 'utf8');
      const flags = /^flags:\s*([0-7]+)$/m.exec(info);
      if (!flags || (Number.parseInt(flags[1]!, 8) & 3) === constants.O_WRONLY) return undefined;
    } catch {
      return undefined;
    }
    let fh: FileHandle;
    try {
      fh = await open(`${proc}/fd/${c.fd}`, constants.O_RDONLY | constants.O_NONBLOCK);
    } catch {
      return undefined;
    }
    if ((await fh.stat().catch(() => undefined))?.isFile()) return fh;
    await fh.close().catch(() => {});
    return undefined;
  }

  /**
   * The caller's file, opened for writing and emptied, if it is a regular file holding exactly `token` (issued here,
   * unexpired; used up either way); else undefined (the caller gets the archive as a stream).
   */
  async open(file: { path: string; token: string }, now = Date.now()): Promise<FileHandle | undefined> {
    const expires = this.tokens.get(file.token);
    this.tokens.delete(file.token);
    if (expires === undefined || expires <= now || !file.path.startsWith('/')) return undefined;
    let fh: FileHandle;
    try {
      // O_NOFOLLOW: never through a link; O_NONBLOCK: a FIFO put there does not hang the open
      fh = await open(file.path, constants.O_RDWR | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch {
      return undefined;
    }
    try {
      const st = await fh.stat();
      const want = Buffer.from(file.token);
      if (!st.isFile() || st.nlink !== 1 || st.size !== want.length) throw new Error('not the caller file');
      const got = Buffer.alloc(want.length);
      const { bytesRead } = await fh.read(got, 0, got.length, 0);
      if (bytesRead !== want.length || !got.equals(want)) throw new Error('not the caller file');
      await fh.truncate(0);
      return fh;
    } catch {
      await fh.close().catch(() => {});
      return undefined;
    }
  }
}

/** `path` is a regular file holding exactly `token` (opened without blocking: a FIFO put there does not hang). */
async function holds(path: string, token: string): Promise<boolean> {
  const want = Buffer.from(token);
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return false;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size !== want.length) return false;
    const got = Buffer.alloc(want.length);
    const { bytesRead } = await fh.read(got, 0, got.length, 0);
    return bytesRead === want.length && got.equals(want);
  } catch {
    return false;
  } finally {
    await fh.close().catch(() => {});
  }
}
