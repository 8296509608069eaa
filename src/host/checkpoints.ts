// Checkpoints of this host's containers into archives (archive/), and dumps of a running container to look inside.
//
// An archive is an honest point in time: the container's network is locked and its cgroup frozen, CRIU dumps it
// without letting it go (`--leave-running` on a frozen container keeps it frozen), the writable rootfs is tarred
// while it is still frozen, and only then does the container run again (--leave-running) — or it stays frozen
// until the caller says the archive is on its disk and verified (`finish`), and is stopped then. Any failure, or a
// caller that never comes back, thaws it: a checkpoint never loses a container. The archive goes to the caller as the
// answer's body, or straight into the caller's own file when it shares this host (archive-target.ts).
// Over 400 lines: start, stream, finish and abort share one hold on the container and its thaw; split, the paths that
// thaw it would drift apart.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { CheckpointRequest, CheckpointResult, ContainerRecord } from '../api/types.ts';
import { EarlySlices } from '../archive/early.ts';
import { type ArchiveMeta, FORMAT, FORMAT_VERSION } from '../archive/format.ts';
import { archiveIntoFile, archiveStream, SLICE } from '../archive/writer.ts';
import { FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { traceStep } from '../core/trace.ts';
import { directorySource, type InspectImages, inspectImages } from '../images/inspect.ts';
import { readConfig } from '../runtime/bundle.ts';
import { cgroupPids } from '../runtime/cgroups.ts';
import { describeUnmovable } from '../runtime/proc-scan.ts';
import { requireZstd } from '../runtime/zstd.ts';
import { ArchiveTargets } from './archive-target.ts';
import { type ContainerHost, identity } from './containers.ts';
import { digestOf } from './digest.ts';
import { relinkRemaps, removeRelinked } from './link-remaps.ts';
import { bundleDir } from './paths.ts';
import { RootfsArchiver } from './rootfs-archive.ts';

export interface HostVersions {
  ferry: string;
  criu: string;
  runc: string;
  kernel: string;
}

/** The annotation checkpointctl reads to pick whose layout it is looking at (ferry writes Podman's). */
export const MANAGER_ANNOTATION = 'io.container.manager';

/** How long a finished stream waits for the caller's `finish` before the container is thawed. */
const FINISH_WAIT_MS = 120_000;

interface Session {
  id: string;
  name: string;
  leaveRunning: boolean;
  dir: string;
  /** The container is frozen and its network locked (until finish, abort or the timer). */
  frozen: boolean;
  streamed: boolean;
  timer?: NodeJS.Timeout;
  release: () => Promise<void>;
}

export interface StartedCheckpoint {
  id: string;
  /** The archive, unless it goes into the caller's file (archive-target.ts); when it ends, `digest` holds what it sent. */
  stream?: Readable;
  /**
   * Settles once the whole archive was sent, or written into the caller's file and synced; the SHA-256 of what went
   * through this process (none when zstd wrote the file itself).
   */
  digest: Promise<{ sha256?: string; bytes: number }>;
  /** The caller went away: stop (the container is thawed). */
  cancel: () => void;
}

export class Checkpoints {
  private readonly host: ContainerHost;
  private readonly versions: () => Promise<HostVersions>;
  private readonly log: Logger;
  private readonly sessions = new Map<string, Session>();
  private readonly finishWaitMs: number;
  private readonly rootfs: RootfsArchiver;
  /** Tokens for callers on this host, and their files (a restore reads through them too). */
  readonly targets = new ArchiveTargets();

  constructor(deps: {
    host: ContainerHost;
    versions: () => Promise<HostVersions>;
    log: Logger;
    finishWaitMs?: number;
    rootfs?: RootfsArchiver;
  }) {
    this.rootfs = deps.rootfs ?? new RootfsArchiver();
    this.host = deps.host;
    this.versions = deps.versions;
    this.log = deps.log;
    this.finishWaitMs = deps.finishWaitMs ?? FINISH_WAIT_MS;
  }

  /** Holds the container's name busy until `release` is called (and has resolved); fails at once if it is busy now. */
  private async hold(name: string, what: string): Promise<() => Promise<void>> {
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    let entered!: () => void;
    const inside = new Promise<void>((r) => {
      entered = r;
    });
    const lock = this.host.exclusive(name, what, async () => {
      entered();
      await held;
    });
    await Promise.race([inside, lock]);
    return async () => {
      release();
      await lock;
    };
  }

  private async running(name: string): Promise<ContainerRecord> {
    const info = await this.host.info(name);
    if (info.status !== 'running') {
      throw new FerryError(
        'FERRY_E_CONTAINER_NOT_RUNNING',
        `container ${name} on ${this.host.hostName} is ${info.status}, not running`,
        { phase: 'input' },
      );
    }
    const rec = await this.host.readRecord(name);
    if (!rec) throw new FerryError('FERRY_E_CONTAINER_UNKNOWN', `no record of ${name}`, { phase: 'input' });
    return rec;
  }

  /** What CRIU would fail on or leave behind (a process joined with runc exec), refused before the freeze. */
  private async refuseUnmovable(name: string): Promise<void> {
    const unmovable = await this.host.unmovable(name);
    if (!unmovable.length) return;
    throw new FerryError(
      'FERRY_E_CONTAINER_UNMOVABLE',
      `container ${name} cannot be checkpointed: ${unmovable.map(describeUnmovable).join('; ')}`,
      {
        phase: 'checkpoint',
        hint: 'the container keeps running, untouched; checkpoint it once that process has changed or exited',
        details: { processes: unmovable },
      },
    );
  }

  /**
   * Locks the network, freezes, dumps (the container stays frozen); undone on failure. `early`, if given, follows
   * the images while CRIU writes them (stopped if the dump fails).
   */
  private async freezeAndDump(
    name: string,
    rec: ContainerRecord,
    dir: string,
    early?: (images: string) => EarlySlices,
  ): Promise<{ images: string; early?: EarlySlices }> {
    const { runc, network } = this.host;
    const net = identity(rec);
    const images = join(dir, 'checkpoint');
    await mkdir(images, { recursive: true, mode: 0o700 });
    await network.quiesce(name, net);
    let follower: EarlySlices | undefined;
    try {
      await runc.pause(name);
      try {
        follower = early?.(images);
        follower?.start();
        await runc.checkpoint(name, {
          imagePath: images,
          workPath: dir,
          leaveRunning: true,
          tcpEstablished: rec.net !== 'none',
        });
      } catch (err) {
        await follower?.stop();
        await runc.resume(name).catch(() => {});
        throw err;
      }
    } catch (err) {
      await network.unlock(name, net).catch(() => {});
      throw err;
    }
    return { images, ...(follower ? { early: follower } : {}) };
  }

  private async thaw(name: string, rec: ContainerRecord): Promise<void> {
    await this.host.runc.resume(name);
    await this.host.network.unlock(name, identity(rec));
  }

  /** A token for a caller that may share this host's file system (archive-target.ts). */
  issueToken(): string {
    return this.targets.issue();
  }

  /**
   * Takes the checkpoint and starts the archive's stream. The container is frozen on return; it runs again at once
   * with leaveRunning, else when the caller finishes or aborts (or the stream fails, or the caller goes away).
   */
  async start(name: string, req: CheckpointRequest): Promise<StartedCheckpoint> {
    const release = await this.hold(name, 'checkpoint');
    let rec: ContainerRecord;
    try {
      rec = await this.running(name);
      await this.refuseUnmovable(name);
      // what the archive could not carry is refused while nothing is frozen
      await this.rootfs.survey(join(bundleDir(this.host.paths, name), 'rootfs'));
      if (req.compress === 'zstd') await requireZstd(this.host.hostName);
    } catch (err) {
      await release();
      throw err;
    }
    // the caller's own file, if this host sees it (else undefined: the archive is streamed); opened before the freeze
    const target = req.file ? await this.targets.open(req.file) : undefined;
    const id = `k${randomBytes(6).toString('hex')}`;
    // CRIU's images and the rootfs tar go to the images directory (tmpfs): memory in, memory out, no disk between
    const dir = join(this.host.paths.imagesDir, `checkpoint-${id}`);
    const s: Session = {
      id,
      name,
      leaveRunning: req.leaveRunning,
      dir,
      frozen: false,
      streamed: false,
      release,
    };
    try {
      const [versions, spec] = await Promise.all([
        this.versions(),
        readConfig(bundleDir(this.host.paths, name)),
      ]);
      let t = performance.now();
      // a zstd archive's page images are compressed slice by slice while CRIU writes them (archive/early.ts): the
      // container stays frozen until the archive is written, so that freeze ends sooner. Not with --leave-running,
      // whose freeze is the dump alone: zstd beside CRIU would lengthen it.
      const dumped = await this.freezeAndDump(
        name,
        rec,
        dir,
        req.compress === 'zstd' && !req.leaveRunning
          ? (imgs) => new EarlySlices(imgs, join(dir, 'early'), { slice: SLICE })
          : undefined,
      );
      const { images } = dumped;
      s.frozen = true;
      traceStep('checkpoint: freeze and dump', t);
      // the slice under way when the dump ended is finished; a failure there only means the writer does it all
      const early = await dumped.early?.finish();
      if (early?.error)
        this.log.warn(
          { container: name, checkpoint: id, err: early.error.message },
          'compressing page images during the dump failed; the archive compresses them whole',
        );
      t = performance.now();
      // the writable rootfs while the container is still frozen: files and memory from the same instant, with the
      // links the restore needs for open, unlinked files (the dump removed them; they leave again once packed)
      const bundle = bundleDir(this.host.paths, name);
      const rootfsTar = join(dir, 'rootfs-diff.tar');
      const relinked: string[] = [];
      let sockets: Awaited<ReturnType<RootfsArchiver['pack']>>;
      try {
        await relinkRemaps({ images, bundle, pids: () => cgroupPids(this.host.cgroupsPath(name)) }, relinked);
        sockets = await this.rootfs.pack(join(bundle, 'rootfs'), rootfsTar);
      } finally {
        await removeRelinked(relinked);
      }
      traceStep('checkpoint: rootfs tar', t);
      if (req.leaveRunning) {
        await this.thaw(name, rec);
        s.frozen = false;
      }
      const now = new Date().toISOString();
      const meta: ArchiveMeta = {
        format: FORMAT,
        version: FORMAT_VERSION,
        createdAt: now,
        host: this.host.hostName,
        record: rec,
        versions,
        leaveRunning: req.leaveRunning,
        tcpEstablished: rec.net !== 'none',
        rootfs: { sockets },
      };
      // Podman's config.dump, reduced to what checkpointctl reads
      const configDump = {
        id: `${id}${'0'.repeat(64 - id.length)}`,
        name,
        rootfsImageName: spec['root']?.['path'] === 'rootfs' ? 'ferry (host /usr and /etc, own rootfs)' : '',
        runtime: 'runc',
        createdTime: rec.createdAt,
        checkpointedTime: now,
        restored: false,
      };
      // checkpointctl 1.3 knows Podman, CRI-O and containerd by this annotation; the layout and config.dump are
      // Podman's, so Podman's name lets it show the container's name (ferry removes it again on restore)
      const specDump = {
        ...spec,
        annotations: { ...(spec['annotations'] ?? {}), [MANAGER_ANNOTATION]: 'libpod' },
      };
      const sources = {
        meta,
        configDump,
        spec: specDump,
        imagesDir: images,
        rootfsTar,
        ...(early ? { early: early.files } : {}),
      };
      const streamed = performance.now();
      const sent = () => {
        traceStep(
          target ? 'checkpoint: archive written into the file' : 'checkpoint: archive streamed',
          streamed,
        );
        s.streamed = true;
        s.timer = setTimeout(() => void this.abort(id, 'no finish from the caller'), this.finishWaitMs);
      };
      this.sessions.set(id, s);
      this.log.info(
        { container: name, checkpoint: id, leaveRunning: req.leaveRunning, into: target ? 'file' : 'stream' },
        'checkpoint taken',
      );
      if (target && req.compress === 'zstd') {
        // the zstd program writes the caller's file itself: no compressed byte passes through this process (nor a
        // second pass to hash them: the CLI checks the length; zstd's exit status covers every write, fsync the disk)
        const into = archiveIntoFile(sources, target.fd);
        const written = into.done
          .then(async () => {
            await target.sync();
            const { size } = await target.stat();
            sent();
            return { bytes: size };
          })
          .finally(() => target.close().catch(() => {}));
        written.catch(() => void this.abort(id, 'writing the archive failed or the caller went away'));
        return { id, digest: written, cancel: () => into.cancel(new Error('the caller went away')) };
      }
      const body = archiveStream({ ...sources, compress: req.compress });
      if (target) {
        const digest = digestOf(() => {});
        // flush: fsync before the file is closed, and the pipeline ends only once it is
        const file = target.createWriteStream({ start: 0, flush: true, highWaterMark: 1 << 20 });
        const written = pipeline(body, digest.transform, file).then(async () => {
          const d = await digest.done;
          sent();
          return d;
        });
        written.catch(() => void this.abort(id, 'writing the archive failed or the caller went away'));
        return { id, digest: written, cancel: () => body.destroy(new Error('the caller went away')) };
      }
      // (synchronously at the stream's end: the close that follows must see it)
      const digest = digestOf(sent);
      const out = body.pipe(digest.transform);
      body.on('error', (err) => out.destroy(err));
      out.on('close', () => {
        // the writer (and its zstd) stops too, instead of waiting on a stream nobody reads
        body.destroy();
        if (!s.streamed) void this.abort(id, 'the stream failed or the caller went away');
      });
      return { id, stream: out, digest: digest.done, cancel: () => out.destroy() };
    } catch (err) {
      await target?.close().catch(() => {});
      if (s.frozen) await this.thaw(name, rec).catch(() => {});
      await rm(dir, { recursive: true, force: true });
      await release();
      throw err;
    }
  }

  /** The caller has the archive: stop the container (unless it was left running) and drop the images. */
  async finish(id: string, opts: { stop: boolean }): Promise<CheckpointResult> {
    const s = this.sessions.get(id);
    if (!s?.streamed) {
      throw new FerryError(
        'FERRY_E_CHECKPOINT_UNKNOWN',
        `no finished checkpoint ${id} on ${this.host.hostName}`,
        {
          phase: 'checkpoint',
        },
      );
    }
    this.sessions.delete(id);
    clearTimeout(s.timer);
    // the caller has the archive: the images go now, beside the stop and after the answer, not before it (a GiB
    // of tmpfs takes a fraction of a second to free, more on a busy host); the folder is this checkpoint's own, and
    // one left by an agent that stopped meanwhile is removed as a leftover when it starts again
    void rm(s.dir, { recursive: true, force: true }).catch((err: Error) =>
      this.log.warn(
        { checkpoint: id, err: err.message },
        'could not remove the images of a finished checkpoint',
      ),
    );
    try {
      let status: CheckpointResult['status'] = 'running';
      if (opts.stop && !s.leaveRunning) {
        // the record stays: `ferry ps` shows it stopped, `ferry rm` removes it
        await this.host.runc.destroy(s.name);
        status = 'stopped';
      } else if (s.frozen) {
        const rec = await this.host.readRecord(s.name);
        if (rec) await this.thaw(s.name, rec);
      }
      this.log.info({ container: s.name, checkpoint: id, status }, 'checkpoint finished');
      return { name: s.name, host: this.host.hostName, status };
    } finally {
      await s.release();
    }
  }

  /** Thaws the container and drops the images; idempotent. */
  async abort(id: string, why = 'aborted by the caller'): Promise<void> {
    const s = this.sessions.get(id);
    if (!s) return;
    this.sessions.delete(id);
    clearTimeout(s.timer);
    try {
      if (s.frozen) {
        const rec = await this.host.readRecord(s.name);
        if (rec) await this.thaw(s.name, rec);
      }
      this.log.warn({ container: s.name, checkpoint: id, why }, 'checkpoint aborted; the container runs on');
    } finally {
      await rm(s.dir, { recursive: true, force: true });
      await s.release();
    }
  }

  /** Dumps a running container (it keeps running after a short freeze) and decodes the images. */
  async inspectRunning(name: string): Promise<{ rec: ContainerRecord; images: InspectImages; bytes: Sizes }> {
    const release = await this.hold(name, 'inspect');
    const dir = join(this.host.paths.imagesDir, `inspect-${randomBytes(6).toString('hex')}`);
    try {
      const rec = await this.running(name);
      const { images } = await this.freezeAndDump(name, rec, dir);
      await this.thaw(name, rec);
      const src = await directorySource(images);
      const sizes: Sizes = { images: 0, pages: 0 };
      for (const n of src.names) {
        const len = (await readFile(join(images, n))).length;
        sizes.images += len;
        if (n.startsWith('pages-')) sizes.pages += len;
      }
      return { rec, images: await inspectImages(src), bytes: sizes };
    } finally {
      await rm(dir, { recursive: true, force: true });
      await release();
    }
  }
}

export interface Sizes {
  images: number;
  pages: number;
}
