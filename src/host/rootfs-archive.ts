// A container's writable rootfs in a checkpoint archive: `rootfs-diff.tar` written and read by GNU tar
// (runtime/tar.ts: every file type tar has, modes, owners, nanosecond mtimes, xattrs, ACLs, hard links, holes), and
// the unix socket files tar cannot hold, listed in ferry.json and made again on restore as the image stream makes
// them (an equivalent inode, nothing listening: CRIU restores a listening socket itself and removes such a file
// before it binds). Whatever neither can carry (an xattr of a namespace a restore cannot set, an unknown inode
// type) is refused before the container is frozen, naming the path.
import type { BigIntStats } from 'node:fs';
import { chmodSync, lchownSync, lstatSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { getAttributeSync, listAttributesSync, setAttributeSync } from '@napi-rs/xattr';
import type { RootfsSocket } from '../archive/format.ts';
import { FerryError } from '../core/errors.ts';
import { ProcessRunner, type Runner } from '../runtime/exec.ts';
import { packTree, unpackTree } from '../runtime/tar.ts';
import {
  type NodeMaker,
  SystemNodeMaker,
  unsafePathReason,
  xattrNameProblem,
} from '../transport/image-stream/index.ts';

/** The walk lets the event loop run after this many synchronous calls. */
const YIELD_EVERY = 512;

const refused = (message: string) =>
  new FerryError('FERRY_E_ARCHIVE_ROOTFS', message, {
    phase: 'checkpoint',
    hint: 'the container keeps running, untouched; remove or change that file, or migrate the container instead',
  });

const invalid = (message: string) => new FerryError('FERRY_E_ARCHIVE_INVALID', message, { phase: 'input' });

/** `@S.NNNNNNNNN`, the form `touch --date` takes to the nanosecond. */
function touchDate(ns: bigint): string {
  const sign = ns < 0n ? '-' : '';
  const abs = ns < 0n ? -ns : ns;
  return `@${sign}${abs / 1_000_000_000n}.${(abs % 1_000_000_000n).toString().padStart(9, '0')}`;
}

export class RootfsArchiver {
  private readonly runner: Runner;
  private readonly nodes: NodeMaker;

  constructor(runner: Runner = new ProcessRunner(), nodes: NodeMaker = new SystemNodeMaker(runner)) {
    this.runner = runner;
    this.nodes = nodes;
  }

  /**
   * Walks the rootfs: throws FERRY_E_ARCHIVE_ROOTFS at the first entry an archive cannot carry, else returns
   * its socket files with their metadata. Cheap enough to run both before the freeze (to refuse) and inside it.
   */
  async survey(root: string): Promise<RootfsSocket[]> {
    const sockets: RootfsSocket[] = [];
    const pace = { n: 0 };
    const walk = async (dir: string, rel: string): Promise<void> => {
      const names = (await readdir(dir)).sort();
      for (const name of names) {
        const abs = join(dir, name);
        const path = rel === '' ? name : `${rel}/${name}`;
        let st: BigIntStats;
        try {
          st = lstatSync(abs, { bigint: true });
        } catch {
          continue; // gone since readdir
        }
        const xattrs = this.xattrsOf(abs, path);
        if (++pace.n >= YIELD_EVERY) {
          pace.n = 0;
          await new Promise<void>((r) => setImmediate(r));
        }
        if (st.isDirectory()) await walk(abs, path);
        else if (st.isSocket())
          sockets.push({
            path,
            mode: Number(st.mode & 0o7777n),
            uid: Number(st.uid),
            gid: Number(st.gid),
            mtimeNs: String(st.mtimeNs),
            xattrs: Object.fromEntries([...xattrs].map(([k, v]) => [k, v.toString('base64')])),
          });
        else if (
          !st.isFile() &&
          !st.isSymbolicLink() &&
          !st.isFIFO() &&
          !st.isCharacterDevice() &&
          !st.isBlockDevice()
        )
          throw refused(`cannot archive /${path}: unknown file type (mode ${st.mode.toString(8)})`);
      }
    };
    await walk(root, '');
    return sockets;
  }

  /** A socket's xattrs (others are only checked: tar carries them). */
  private xattrsOf(abs: string, path: string): Map<string, Buffer> {
    const out = new Map<string, Buffer>();
    let names: string[];
    try {
      names = listAttributesSync(abs);
    } catch {
      return out; // a filesystem without xattrs, or gone since readdir
    }
    for (const n of names.sort()) {
      const problem = xattrNameProblem(n);
      if (problem !== null) throw refused(`cannot archive extended attribute ${n} of /${path}: ${problem}`);
      const v = getAttributeSync(abs, n);
      if (v) out.set(n, v);
    }
    return out;
  }

  /** Writes the rootfs into `file` (the container is frozen); returns the socket files tar leaves out. */
  async pack(root: string, file: string): Promise<RootfsSocket[]> {
    const sockets = await this.survey(root);
    await packTree(this.runner, root, file);
    return sockets;
  }

  /** Unpacks `file` into `root` (made by the caller, empty) and makes the socket files again. */
  async unpack(file: string, root: string, sockets: RootfsSocket[]): Promise<void> {
    checkSockets(sockets);
    await unpackTree(this.runner, file, root);
    if (!sockets.length) return;
    // each new name moves its directory's mtime: put back what tar set once all are made
    const parents = new Map<string, bigint>();
    for (const s of sockets) {
      const dir = dirname(join(root, s.path));
      this.refuseLinkedPath(root, s.path);
      if (!parents.has(dir)) parents.set(dir, lstatSync(dir, { bigint: true }).mtimeNs);
    }
    for (const s of sockets) {
      const abs = join(root, s.path);
      await this.nodes.socket(abs);
      lchownSync(abs, s.uid, s.gid); // (clears setuid/setgid: the mode goes after)
      chmodSync(abs, s.mode);
      for (const [k, v] of Object.entries(s.xattrs)) setAttributeSync(abs, k, Buffer.from(v, 'base64'));
      await this.touch(abs, BigInt(s.mtimeNs));
    }
    for (const [dir, mtime] of parents) await this.touch(dir, mtime);
  }

  /** A socket's directories must be real directories that tar made, never a symlink to elsewhere. */
  private refuseLinkedPath(root: string, path: string): void {
    const parts = path.split('/').slice(0, -1);
    let at = root;
    for (const p of parts) {
      at = join(at, p);
      let st: BigIntStats | undefined;
      try {
        st = lstatSync(at, { bigint: true });
      } catch {
        st = undefined;
      }
      if (!st?.isDirectory())
        throw invalid(
          `the archive lists socket file /${path}, but /${parts.join('/')} is not a directory in its rootfs`,
        );
    }
  }

  /** Node sets times through a double of seconds; coreutils' touch sets them to the nanosecond. */
  private async touch(abs: string, mtimeNs: bigint): Promise<void> {
    await this.runner.run(
      ['touch', '--no-dereference', '--no-create', '-m', `--date=${touchDate(mtimeNs)}`, '--', abs],
      {
        label: 'touch (a restored socket file)',
        errorCode: 'FERRY_E_RESTORE_FAILED',
        phase: 'restore',
      },
    );
  }
}

/** The socket list of an archive came from outside: safe relative paths, plain numbers, carried xattr names. */
export function checkSockets(sockets: unknown): asserts sockets is RootfsSocket[] {
  if (!Array.isArray(sockets)) throw invalid("the archive's list of socket files is not a list");
  for (const s of sockets as Partial<RootfsSocket>[]) {
    const path = typeof s?.path === 'string' ? s.path : undefined;
    const why = path === undefined ? 'no path' : unsafePathReason(path);
    if (why !== null) throw invalid(`the archive lists a socket file with an unusable path: ${why}`);
    const ints = [s.mode, s.uid, s.gid];
    if (
      !ints.every((n) => Number.isInteger(n) && (n as number) >= 0 && (n as number) <= 0xffffffff) ||
      (s.mode as number) > 0o7777 ||
      typeof s.mtimeNs !== 'string' ||
      !/^-?\d{1,25}$/.test(s.mtimeNs) ||
      typeof s.xattrs !== 'object' ||
      s.xattrs === null ||
      Object.entries(s.xattrs).some(([k, v]) => xattrNameProblem(k) !== null || typeof v !== 'string')
    )
      throw invalid(`the archive's entry for socket file /${path} is malformed`);
  }
}
