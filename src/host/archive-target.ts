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
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';

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
