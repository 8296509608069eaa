// Creating the inodes Node has no call for: FIFOs and device nodes through coreutils' mknod (a child process
// per node: a rootfs holds a handful), unix socket files by binding a socket and closing it. A socket file is
// only a name: what listened on it does not travel in the tree (CRIU restores listening sockets itself, and
// unlinks such a file before binding the restored socket). Behind an interface so tests and callers can swap it.
import { closeSync, constants as fsc, linkSync, openSync, unlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { ProcessRunner, type Runner } from '../../runtime/exec.ts';
import { errText, failed, show } from './format.ts';

export type DeviceKind = 'c' | 'b';

/** Makes special inodes at absolute paths that do not exist yet (never replacing anything). */
export interface NodeMaker {
  fifo(abs: string): Promise<void>;
  device(abs: string, kind: DeviceKind, major: number, minor: number): Promise<void>;
  socket(abs: string): Promise<void>;
}

let sockets = 0;

export class SystemNodeMaker implements NodeMaker {
  private readonly runner: Runner;

  constructor(runner: Runner = new ProcessRunner()) {
    this.runner = runner;
  }

  async fifo(abs: string): Promise<void> {
    await this.mknod(abs, ['p']);
  }

  async device(abs: string, kind: DeviceKind, major: number, minor: number): Promise<void> {
    await this.mknod(abs, [kind, String(major), String(minor)]);
  }

  private async mknod(abs: string, args: string[]): Promise<void> {
    // '--' keeps a name starting with '-' a name; -m 0600: the mode is set afterwards, after the owner
    await this.runner.run(['mknod', '-m', '0600', '--', abs, ...args], {
      label: `mknod ${show(abs)}`,
      errorCode: 'FERRY_E_TRANSFER_FAILED',
      phase: 'transfer',
    });
  }

  /**
   * Binds a socket to a short temporary name in the target's directory (sun_path holds 108 bytes, a bundle path
   * can be longer: the directory is reached through /proc/self/fd), links the inode to its real name (a link
   * never replaces an existing file) and closes the socket, which unlinks the temporary name.
   */
  async socket(abs: string): Promise<void> {
    const dir = dirname(abs);
    const tmpName = `.ferry-sock-${process.pid}-${++sockets}`;
    let fd: number;
    try {
      fd = openSync(dir, fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW);
    } catch (err) {
      throw failed(`cannot open the directory of socket ${show(abs)}: ${errText(err)}`, err);
    }
    const server = createServer();
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(`/proc/self/fd/${fd}/${tmpName}`, () => resolve());
      });
      try {
        linkSync(join(dir, tmpName), abs);
      } finally {
        try {
          unlinkSync(join(dir, tmpName));
        } catch {
          // close() below unlinks it too
        }
      }
    } catch (err) {
      throw failed(`cannot create socket file ${show(basename(abs))} in ${show(dir)}: ${errText(err)}`, err);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      closeSync(fd);
    }
  }
}
