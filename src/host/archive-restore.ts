// Restores a container from a checkpoint archive arriving as a stream, and looks inside one without keeping it.
//
// The archive is staged and checked whole (archive/reader.ts: format, version, every checksum) before anything
// of the container is made; the name, the CRIU version and the address are checked before the restore too. A
// failure at any step removes all that this restore made and nothing else. Under the identity it was taken with
// (same name, same address) established TCP connections are restored; under another one they cannot be (the
// peers know the old address), so CRIU closes them (`tcp-close`) and the result says so.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatRegistry } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { ContainerRecord as RecordSchema } from '../api/schemas.ts';
import type {
  ContainerRecord,
  ImportOptions,
  ImportResult,
  InspectReport,
  StagedArchive,
} from '../api/types.ts';
import {
  type ArchiveMeta,
  CONFIG_DUMP,
  MANIFEST_FILE,
  META_FILE,
  ROOTFS_DIFF,
  SPEC_DUMP,
} from '../archive/format.ts';
import { type ArchiveInput, readArchive } from '../archive/reader.ts';
import { FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { checkName } from '../core/names.ts';
import { traceStep } from '../core/trace.ts';
import { ImageError } from '../images/image-file.ts';
import { type ImageSource, inspectImages } from '../images/inspect.ts';
import { macFor } from '../network/identity.ts';
import { type OciConfig, validateConfig, writeConfig } from '../runtime/bundle.ts';
import { compareVersions } from '../runtime/criu.ts';
import { MANAGER_ANNOTATION } from './checkpoints.ts';
import { type ContainerHost, identity } from './containers.ts';
import { bundleDir, containerDir } from './paths.ts';
import { checkSockets, RootfsArchiver } from './rootfs-archive.ts';

/** An archive's content is bounded: a caller with a client certificate may not fill the disk without limit. */
const MAX_ARCHIVE_BYTES = 64 * 1024 * 1024 * 1024;
/** Images other than page data are small; what inspect keeps in memory is bounded by this. */
const MAX_INSPECT_MEMORY = 256 * 1024 * 1024;

/** How long a staged archive waits for its `start`. */
const STAGED_WAIT_MS = 10 * 60_000;

const invalid = (message: string) => new FerryError('FERRY_E_ARCHIVE_INVALID', message, { phase: 'input' });

export class ArchiveRestores {
  private readonly host: ContainerHost;
  private readonly criuVersion: () => Promise<string | undefined>;
  private readonly log: Logger;

  private readonly staged = new Map<
    string,
    { dir: string; meta: ArchiveMeta; rec: ContainerRecord; timer: NodeJS.Timeout }
  >();
  private readonly stagedWaitMs: number;
  private readonly rootfs: RootfsArchiver;

  constructor(deps: {
    host: ContainerHost;
    criuVersion: () => Promise<string | undefined>;
    log: Logger;
    stagedWaitMs?: number;
    rootfs?: RootfsArchiver;
  }) {
    this.rootfs = deps.rootfs ?? new RootfsArchiver();
    this.host = deps.host;
    this.criuVersion = deps.criuVersion;
    this.log = deps.log;
    this.stagedWaitMs = deps.stagedWaitMs ?? STAGED_WAIT_MS;
  }

  /**
   * Receives an archive and checks it whole (format, version, every checksum, the record, the CRIU version) into a
   * staging directory; nothing of a container is made. `start` restores it, `discard` drops it; a staged archive
   * nobody starts is dropped after a while.
   */
  async stage(body: ArchiveInput): Promise<StagedArchive> {
    const id = `r${randomBytes(6).toString('hex')}`;
    // staged in the images directory (tmpfs), where CRIU then restores from: no disk between the archive and CRIU
    const dir = join(this.host.paths.imagesDir, `restore-${id}`);
    try {
      const t = performance.now();
      const got = await readArchive(body, { dest: dir, keep: () => 'disk', maxBytes: MAX_ARCHIVE_BYTES });
      traceStep('restore: archive read, checked and staged', t);
      const rec = recordOf(got.meta);
      checkSockets(got.meta.rootfs?.sockets ?? []);
      await this.refuseNewerCriu(got.meta);
      const timer = setTimeout(() => void this.discard(id), this.stagedWaitMs);
      timer.unref();
      this.staged.set(id, { dir, meta: got.meta, rec, timer });
      const out: StagedArchive = {
        id,
        name: rec.name,
        net: rec.net,
        from: got.meta.host,
        checkpointedAt: got.meta.createdAt,
        tcpEstablished: got.meta.tcpEstablished,
        bytes: got.bytes,
      };
      if (rec.ip) out.ip = rec.ip;
      return out;
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  async discard(id: string): Promise<void> {
    const s = this.staged.get(id);
    if (!s) return;
    this.staged.delete(id);
    clearTimeout(s.timer);
    await rm(s.dir, { recursive: true, force: true });
  }

  /** Restores a staged archive (under another name or address if asked); the staging goes either way. */
  async start(id: string, opts: ImportOptions): Promise<ImportResult> {
    const { host } = this;
    const s = this.staged.get(id);
    if (!s) {
      throw new FerryError('FERRY_E_CHECKPOINT_UNKNOWN', `no staged archive ${id} on ${host.hostName}`, {
        phase: 'restore',
      });
    }
    this.staged.delete(id);
    clearTimeout(s.timer);
    const { dir: staging, meta, rec } = s;
    try {
      const name = checkName(opts.name ?? rec.name);
      const ip = opts.ip ?? rec.ip;
      const sameIdentity = name === rec.name && ip === rec.ip;
      const next: ContainerRecord = {
        ...rec,
        name,
        origin: { kind: 'archive', from: meta.host, checkpointedAt: meta.createdAt },
      };
      if (ip && rec.net !== 'none') {
        next.ip = ip;
        if (rec.net === 'own') next.mac = macFor(ip);
      }
      const tcp: ImportResult['tcp'] = !meta.tcpEstablished ? 'none' : sameIdentity ? 'restored' : 'closed';
      const spec = JSON.parse(await readFile(join(staging, SPEC_DUMP), 'utf8')) as OciConfig;
      return await host.exclusive(name, 'restore', async () => {
        await this.refuseTaken(name);
        const ms = await this.restoreStaged(staging, spec, next, tcp, meta);
        const out: ImportResult = { container: await host.info(name), tcp, restoreMs: ms };
        if (tcp === 'closed') {
          out.note =
            `restored as ${name}${next.ip ? ` at ${next.ip}` : ''}, not as ${rec.name}${rec.ip ? ` at ${rec.ip}` : ''}: ` +
            'its established TCP connections were closed (their peers know the old identity); listening sockets are restored';
        }
        this.log.info({ container: name, from: meta.host, tcp }, 'restored from an archive');
        return out;
      });
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  }

  private async refuseTaken(name: string): Promise<void> {
    if (await this.host.exists(name)) {
      throw new FerryError(
        'FERRY_E_CONTAINER_EXISTS',
        `a container named ${name} already exists on host ${this.host.hostName}`,
        { phase: 'input', hint: 'restore under another --name, or ferry rm it first' },
      );
    }
  }

  private async refuseNewerCriu(meta: ArchiveMeta): Promise<void> {
    const here = await this.criuVersion();
    if (!here) throw new FerryError('FERRY_E_CAPABILITY', `criu is not installed on ${this.host.hostName}`);
    if (compareVersions(meta.versions.criu, here) > 0) {
      throw new FerryError(
        'FERRY_E_ARCHIVE_VERSION',
        `the archive was dumped by CRIU ${meta.versions.criu}; host ${this.host.hostName} has CRIU ${here}, which may not read its images`,
        { phase: 'input', hint: `restore on a host with CRIU ≥ ${meta.versions.criu}` },
      );
    }
  }

  private async restoreStaged(
    staging: string,
    spec: OciConfig,
    rec: ContainerRecord,
    tcp: ImportResult['tcp'],
    meta: ArchiveMeta,
  ): Promise<number> {
    const { host } = this;
    const name = rec.name;
    const dir = containerDir(host.paths, name);
    const bundle = bundleDir(host.paths, name);
    const net = identity(rec);
    let made = false;
    try {
      await mkdir(bundle, { recursive: true, mode: 0o700 });
      made = true;
      const rootfs = join(bundle, 'rootfs');
      await mkdir(rootfs, { mode: 0o755 });
      let t = performance.now();
      await this.rootfs.unpack(join(staging, ROOTFS_DIFF), rootfs, meta.rootfs?.sockets ?? []);
      traceStep('restore: rootfs unpacked', t);
      t = performance.now();
      const { [MANAGER_ANNOTATION]: _manager, ...annotations } = (spec['annotations'] ?? {}) as Record<
        string,
        string
      >;
      const config: OciConfig = { ...spec, annotations };
      validateConfig(config);
      const placed = host.place(config, rec);
      if (tcp === 'closed') {
        // runc has no --tcp-close; CRIU reads it from the configuration file runc hands it (org.criu.config)
        const base = host.criuConfig ? await readFile(host.criuConfig, 'utf8').catch(() => '') : '';
        const conf = join(dir, 'criu-restore.conf');
        await writeFile(conf, `${base}${base.endsWith('\n') || !base ? '' : '\n'}tcp-close\n`);
        placed.annotations = { ...(placed.annotations ?? {}), 'org.criu.config': conf };
      }
      await writeConfig(bundle, placed);
      await host.writeRecord(rec);
      // the same address and MAC, locked until the restore is done (as a migration's destination does)
      await host.network.create(name, net, { attached: false, locked: true });
      await host.network.attach(name, net);
      traceStep('restore: bundle and network', t);
      t = performance.now();
      const work = join(staging, 'work');
      await mkdir(work, { recursive: true });
      let ms: number;
      try {
        ({ ms } = await host.runc.restore(name, {
          bundle,
          imagePath: join(staging, 'checkpoint'),
          workPath: work,
          tcpEstablished: tcp === 'restored',
        }));
      } catch (err) {
        await this.keepLog(work, name);
        throw err;
      }
      // tcp-close was for this restore only: later dumps (a migration) read the same file and must keep connections
      if (tcp === 'closed' && host.criuConfig)
        await writeFile(
          join(dir, 'criu-restore.conf'),
          await readFile(host.criuConfig, 'utf8').catch(() => ''),
        );
      traceStep('restore: runc restore', t);
      t = performance.now();
      await host.network.unlock(name, net);
      host.network.reannounce(name, net);
      const st = await host.runc.state(name);
      if (st?.status !== 'running') {
        throw new FerryError(
          'FERRY_E_CONFIRM_FAILED',
          `${name} is ${st?.status ?? 'gone'} right after restore`,
          {
            phase: 'confirm',
          },
        );
      }
      traceStep('restore: unlock and confirm', t);
      return ms;
    } catch (err) {
      if (made) {
        await host.runc.destroy(name).catch(() => {});
        await host.network.destroy(name, net).catch(() => {});
        await rm(dir, { recursive: true, force: true });
      }
      throw err;
    }
  }

  private async keepLog(work: string, name: string): Promise<void> {
    try {
      await mkdir(this.host.paths.logsDir, { recursive: true });
      const to = join(this.host.paths.logsDir, `restore-${name}-${Date.now()}.log`);
      await writeFile(`${to}.tmp`, await readFile(join(work, 'restore.log')));
      await rename(`${to}.tmp`, to);
    } catch {
      // no log to keep
    }
  }

  /** Reads an archive without storing it: small images in memory, page data and the rootfs only counted. */
  async inspect(body: AsyncIterable<Buffer>): Promise<InspectReport> {
    let kept = 0;
    const got = await readArchive(body, {
      keep: (n) => {
        if (n === ROOTFS_DIFF || /^checkpoint\/pages-/.test(n) || /\.tar(\.gz)?\.img$/.test(n)) return 'skip';
        if (n.startsWith('checkpoint/') || n === CONFIG_DUMP || n === SPEC_DUMP) return 'memory';
        return 'skip';
      },
      maxBytes: MAX_ARCHIVE_BYTES,
    });
    for (const b of got.memory.values()) kept += b.length;
    if (kept > MAX_INSPECT_MEMORY) throw invalid('the archive holds more image metadata than ferry inspects');
    const rec = recordOf(got.meta);
    const prefix = 'checkpoint/';
    const src: ImageSource = {
      names: got.names.filter((n) => n.startsWith(prefix)).map((n) => n.slice(prefix.length)),
      read: async (n) => got.memory.get(prefix + n),
    };
    const sizes = { total: 0, images: 0, pages: 0, rootfsDiff: 0 };
    for (const f of got.manifest.files) {
      if (f.name === META_FILE || f.name === MANIFEST_FILE) continue;
      sizes.total += f.size;
      if (f.name.startsWith(prefix)) sizes.images += f.size;
      if (f.name.startsWith(`${prefix}pages-`)) sizes.pages += f.size;
      if (f.name === ROOTFS_DIFF) sizes.rootfsDiff = f.size;
    }
    let images: InspectReport['images'];
    try {
      images = await inspectImages(src);
    } catch (err) {
      if (err instanceof ImageError) throw invalid(`the archive's CRIU images do not decode: ${err.message}`);
      throw err;
    }
    const net: NonNullable<InspectReport['net']> = { mode: rec.net };
    if (rec.ip) net.ip = rec.ip;
    if (rec.mac) net.mac = rec.mac;
    return {
      source: 'archive',
      name: rec.name,
      host: got.meta.host,
      checkpointedAt: got.meta.createdAt,
      createdAt: rec.createdAt,
      versions: got.meta.versions,
      leaveRunning: got.meta.leaveRunning,
      net,
      sizes,
      images,
    };
  }
}

// TypeBox checks formats only when they are registered (the servers validate with ajv instead)
if (!FormatRegistry.Has('ipv4'))
  FormatRegistry.Set('ipv4', (v) =>
    /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/.test(v),
  );

/** The container record an archive carries, checked against the wire schema (it came from outside). */
function recordOf(meta: ArchiveMeta): ContainerRecord {
  if (!Value.Check(RecordSchema, meta.record)) {
    const first = [...Value.Errors(RecordSchema, meta.record)][0];
    throw invalid(
      `the archive's container record is invalid${first ? ` (${first.path}: ${first.message})` : ''}`,
    );
  }
  return meta.record as ContainerRecord;
}
