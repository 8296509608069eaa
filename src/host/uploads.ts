// Bundles uploaded for a later create: received under the state directory, taken by the create that names them,
// and removed when no create follows (a client that died between the two requests must not fill the disk).
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { FerryError } from '../core/errors.ts';
import { checkName } from '../core/names.ts';
import { decodeTree } from '../transport/image-stream/index.ts';
import type { HostPaths } from './paths.ts';

export interface UploadOptions {
  /** Largest bundle accepted, in bytes of stream. */
  limitBytes: number;
  /** An upload no create has taken after this long is removed. */
  maxAgeMs: number;
  now?: () => number;
}

export const UPLOAD_DEFAULTS = { limitBytes: 8 * 1024 ** 3, maxAgeMs: 10 * 60_000 } as const;

export class Uploads {
  private readonly root: string;
  private readonly opts: UploadOptions;
  private readonly now: () => number;
  /** Finished uploads by name, with when they finished. */
  private readonly done = new Map<string, number>();
  /** Uploads being received (a sweep leaves them alone; a second one of the name is refused). */
  private readonly receiving = new Set<string>();

  constructor(paths: HostPaths, opts: Partial<UploadOptions> = {}) {
    this.root = join(paths.stateDir, 'uploads');
    this.opts = { ...UPLOAD_DEFAULTS, ...opts };
    this.now = opts.now ?? Date.now;
  }

  private dir(name: string): string {
    return join(this.root, checkName(name));
  }

  /** Receives a bundle stream; a failed or oversize one leaves nothing behind. */
  async receive(name: string, body: Readable): Promise<{ bytes: number; files: number }> {
    const dir = this.dir(name);
    if (this.receiving.has(name))
      throw new FerryError('FERRY_E_CONTAINER_BUSY', `a bundle for ${name} is being uploaded`, {
        phase: 'input',
      });
    this.receiving.add(name);
    this.done.delete(name);
    try {
      await mkdir(this.root, { recursive: true, mode: 0o700 });
      await rm(dir, { recursive: true, force: true });
      // a bundle's rootfs may hold device nodes; the uploader holds a client certificate of this cluster
      const stats = await decodeTree(body, dir, { maxBytes: this.opts.limitBytes, allowDevices: true });
      this.done.set(name, this.now());
      return { bytes: stats.bytes, files: stats.files };
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      if (err instanceof FerryError && err.code === 'FERRY_E_INPUT_TOO_LARGE')
        throw new FerryError(
          'FERRY_E_INPUT_TOO_LARGE',
          `bundle for ${name} exceeds this host's limit of ${this.opts.limitBytes} bytes`,
          { phase: 'input', cause: err },
        );
      throw err;
    } finally {
      this.receiving.delete(name);
    }
  }

  /** The directory of a finished upload, for a create to move away; a clear error when there is none. */
  async take(name: string): Promise<string> {
    const dir = this.dir(name);
    const there = this.done.has(name) && (await stat(dir).catch(() => undefined))?.isDirectory();
    if (!there) {
      throw new FerryError('FERRY_E_INPUT_REQUEST', `no bundle was uploaded for ${name}`, {
        phase: 'input',
        hint: `upload it first (PUT /v1/uploads/${name}); an upload not used within ${Math.round(this.opts.maxAgeMs / 1000)} s is removed`,
      });
    }
    this.done.delete(name);
    return dir;
  }

  /** Removes what a create left of an upload it took (moved away on success, still there on failure). */
  async discard(name: string): Promise<void> {
    this.done.delete(name);
    await rm(this.dir(name), { recursive: true, force: true });
  }

  /**
   * Removes uploads no create took within maxAgeMs, and anything on disk this process did not receive (left by a
   * previous run of the agent). Returns the names removed.
   */
  async sweep(): Promise<string[]> {
    const removed: string[] = [];
    let entries: string[];
    try {
      entries = await readdir(this.root);
    } catch {
      return removed;
    }
    const cutoff = this.now() - this.opts.maxAgeMs;
    for (const name of entries) {
      if (this.receiving.has(name)) continue;
      const at = this.done.get(name);
      if (at !== undefined && at > cutoff) continue;
      this.done.delete(name);
      await rm(join(this.root, name), { recursive: true, force: true });
      removed.push(name);
    }
    return removed;
  }

  /** Names of the uploads waiting for a create (for tests and `ferry rm`). */
  pending(): string[] {
    return [...this.done.keys()].sort();
  }
}
