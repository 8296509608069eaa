// This host's containers: their records and bundles on disk, their processes through runc.
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContainerInfo, ContainerRecord } from '../api/types.ts';
import { FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { checkName } from '../core/names.ts';
import { macFor, type NetIdentity, type NetMode, type NetworkLike } from '../network/identity.ts';
import {
  buildCommandBundle,
  type OciConfig,
  placeConfig,
  readConfig,
  validateConfig,
  writeConfig,
} from '../runtime/bundle.ts';
import { type BundlePolicy, checkBundlePolicy, DEFAULT_BUNDLE_POLICY } from '../runtime/bundle-policy.ts';
import { cgroupPids, memoryUsage } from '../runtime/cgroups.ts';
import { dumperCredentials, hostProcFs, scanUnmovable, type Unmovable } from '../runtime/proc-scan.ts';
import { type ProcessInfo, readProcesses } from '../runtime/proc-tree.ts';
import type { RuncLike } from '../runtime/runc.ts';
import { measureTouchRate, type TouchRate } from '../runtime/touch-rate.ts';
import { removeContainerImages } from './images.ts';
import { bundleDir, containerDir, type HostPaths } from './paths.ts';

export type { ContainerInfo, ContainerRecord, NetMode, Unmovable };

/** Finds the processes CRIU cannot move, given the container's init and every pid of it (host pids). */
export type UnmovableScan = (init: number, pids: number[]) => Promise<Unmovable[]>;

const scanHost: UnmovableScan = async (init, pids) =>
  scanUnmovable(hostProcFs, {
    init,
    pids,
    dumper: await dumperCredentials(),
  });

export interface CreateRequest {
  name: string;
  command?: string[];
  /** A directory holding an uploaded bundle (config.json + rootfs), moved into this host's storage. */
  uploadedBundle?: string;
  net?: NetMode;
  ip?: string;
}

export class ContainerHost {
  readonly hostName: string;
  readonly paths: HostPaths;
  readonly runc: RuncLike;
  readonly cgroupParent: string;
  readonly network: NetworkLike;
  /** CRIU options for this host's containers, handed to runc through the `org.criu.config` annotation. */
  readonly criuConfig: string | undefined;
  /** What an uploaded bundle may ask of this host (runtime/bundle-policy.ts). */
  readonly bundlePolicy: BundlePolicy;
  /** Paths of the agent's own beyond `paths` (its TLS material) that no bundle may mount. */
  private readonly protectedPaths: string[];
  private readonly log: Logger;
  private readonly scan: UnmovableScan;
  /** Names with an operation in flight (create, remove, migration). */
  private readonly busy = new Map<string, string>();

  constructor(deps: {
    hostName: string;
    paths: HostPaths;
    runc: RuncLike;
    cgroupParent: string;
    network: NetworkLike;
    log: Logger;
    criuConfig?: string;
    bundlePolicy?: BundlePolicy;
    protectedPaths?: string[];
    /** The /proc scan (runtime/proc-scan.ts on this host's /proc unless a test says otherwise). */
    unmovable?: UnmovableScan;
  }) {
    this.scan = deps.unmovable ?? scanHost;
    this.hostName = deps.hostName;
    this.network = deps.network;
    this.criuConfig = deps.criuConfig;
    this.paths = deps.paths;
    this.runc = deps.runc;
    this.cgroupParent = deps.cgroupParent;
    this.log = deps.log;
    this.bundlePolicy = deps.bundlePolicy ?? DEFAULT_BUNDLE_POLICY;
    this.protectedPaths = deps.protectedPaths ?? [];
  }

  async init(): Promise<void> {
    const p = this.paths;
    for (const d of [p.stateDir, p.runcRoot, p.containersDir, p.incomingDir, p.logsDir, p.imagesDir]) {
      await mkdir(d, { recursive: true, mode: 0o700 });
    }
  }

  cgroupsPath(name: string): string {
    return `${this.cgroupParent}/${name}`;
  }

  /** The container's processes CRIU could not dump or restore, read from /proc while it runs; empty when none. */
  async unmovable(name: string): Promise<Unmovable[]> {
    const st = await this.runc.state(name);
    if (!st?.pid) return [];
    return this.scan(st.pid, await cgroupPids(this.cgroupsPath(name)));
  }

  /** The processes of the container's cgroup (none when it is not running); an unknown name is an error. */
  async processes(name: string): Promise<{ processes: ProcessInfo[]; truncated: boolean }> {
    const info = await this.info(name);
    if (info.pid === undefined) return { processes: [], truncated: false };
    return readProcesses(hostProcFs, await cgroupPids(this.cgroupsPath(name)));
  }

  /** How fast the container touches writable memory now (runtime/touch-rate.ts); it keeps running. */
  async touchRate(name: string): Promise<TouchRate | undefined> {
    return measureTouchRate(await cgroupPids(this.cgroupsPath(name)));
  }

  /** Memory the container uses now (its cgroup's figure), 0 when unknown. */
  async memoryBytes(name: string): Promise<number> {
    return (await memoryUsage(this.cgroupsPath(name))) ?? 0;
  }

  /** Marks a name busy for the duration of fn; a second operation on it fails at once. */
  async exclusive<T>(name: string, what: string, fn: () => Promise<T>): Promise<T> {
    const current = this.busy.get(name);
    if (current) {
      throw new FerryError('FERRY_E_CONTAINER_BUSY', `container ${name} is busy (${current} in progress)`, {
        phase: 'input',
      });
    }
    this.busy.set(name, what);
    try {
      return await fn();
    } finally {
      this.busy.delete(name);
    }
  }

  isBusy(name: string): boolean {
    return this.busy.has(name);
  }

  async readRecord(name: string): Promise<ContainerRecord | undefined> {
    try {
      return JSON.parse(
        await readFile(join(containerDir(this.paths, name), 'record.json'), 'utf8'),
      ) as ContainerRecord;
    } catch {
      return undefined;
    }
  }

  async writeRecord(rec: ContainerRecord): Promise<void> {
    const dir = containerDir(this.paths, rec.name);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = join(dir, 'record.json.tmp');
    await writeFile(tmp, `${JSON.stringify(rec, null, 2)}\n`);
    await rename(tmp, join(dir, 'record.json'));
  }

  async exists(name: string): Promise<boolean> {
    return (await this.readRecord(name)) !== undefined || (await this.runc.state(name)) !== undefined;
  }

  async names(): Promise<string[]> {
    try {
      return (await readdir(this.paths.containersDir)).sort();
    } catch {
      return [];
    }
  }

  async info(name: string): Promise<ContainerInfo> {
    checkName(name);
    const rec = await this.readRecord(name);
    if (!rec) {
      throw new FerryError(
        'FERRY_E_CONTAINER_UNKNOWN',
        `no container named ${name} on host ${this.hostName}`,
        {
          phase: 'input',
        },
      );
    }
    const st = await this.runc.state(name);
    const out: ContainerInfo = {
      name,
      host: this.hostName,
      status:
        this.busy.get(name) === 'migration'
          ? 'migrating'
          : this.busy.get(name) === 'create'
            ? 'creating'
            : (st?.status ?? 'stopped'),
      net: rec.net,
      createdAt: rec.createdAt,
    };
    if (st?.pid && st.status === 'running') out.pid = st.pid;
    if (rec.ip) out.ip = rec.ip;
    if (rec.command) out.command = rec.command;
    return out;
  }

  async list(): Promise<ContainerInfo[]> {
    const out: ContainerInfo[] = [];
    for (const n of await this.names()) {
      try {
        out.push(await this.info(n));
      } catch {
        // a half-written record (create or migration in flight) is not listed
      }
    }
    return out;
  }

  async create(req: CreateRequest): Promise<ContainerInfo> {
    const name = checkName(req.name);
    if (!req.command?.length && !req.uploadedBundle) {
      throw new FerryError('FERRY_E_INPUT_ARGS', 'give a command or a bundle', { phase: 'input' });
    }
    const net: NetMode = req.net ?? 'none';
    if (net !== 'none' && !req.ip) {
      throw new FerryError('FERRY_E_INPUT_ARGS', `network mode ${net} needs an address (--ip)`, {
        phase: 'input',
      });
    }
    return this.exclusive(name, 'create', async () => {
      if (await this.exists(name)) {
        throw new FerryError(
          'FERRY_E_CONTAINER_EXISTS',
          `a container named ${name} already exists on host ${this.hostName}`,
          {
            phase: 'input',
          },
        );
      }
      const dir = containerDir(this.paths, name);
      const bundle = bundleDir(this.paths, name);
      const rec: ContainerRecord = {
        name,
        createdAt: new Date().toISOString(),
        net,
        origin: { kind: 'run' },
      };
      if (req.ip && net !== 'none') {
        rec.ip = req.ip;
        if (net === 'own') rec.mac = macFor(req.ip);
      }
      if (req.command) rec.command = req.command;
      try {
        await mkdir(dir, { recursive: true, mode: 0o700 });
        if (req.uploadedBundle) {
          await rename(req.uploadedBundle, bundle);
        } else {
          await buildCommandBundle(bundle, req.command ?? [], name);
        }
        const config = await readConfig(bundle);
        validateConfig(config);
        // ferry's own command bundles bind the host's /usr and /etc read-only by design; uploaded ones pass the policy
        if (req.uploadedBundle) {
          const p = this.paths;
          await checkBundlePolicy(config, this.bundlePolicy, {
            bundleDir: bundle,
            protectedPaths: [p.stateDir, p.imagesDir, p.runcRoot, ...this.protectedPaths],
            hostNetwork: net === 'host',
          });
        }
        await writeConfig(bundle, this.place(config, rec));
        await this.writeRecord(rec);
        await this.network.create(name, identity(rec), { attached: true, locked: false });
        await this.runc.run(name, bundle, join(dir, 'runc-run.log'));
        this.log.info({ container: name, net, ip: rec.ip }, 'container started');
      } catch (err) {
        await this.runc.destroy(name).catch(() => {});
        await this.network.destroy(name, identity(rec)).catch(() => {});
        await rm(dir, { recursive: true, force: true });
        throw err;
      }
      return this.info(name);
    });
  }

  /** This host's version of a container's config: its cgroup path and its network namespace. */
  place(config: OciConfig, rec: ContainerRecord): OciConfig {
    const placed = placeConfig(config, {
      cgroupsPath: this.cgroupsPath(rec.name),
      hostname: rec.name,
      net:
        rec.net === 'own'
          ? { netnsPath: this.network.netnsPath(rec.name) }
          : rec.net === 'host'
            ? 'host'
            : 'fresh',
    });
    if (this.criuConfig)
      placed.annotations = { ...(placed.annotations ?? {}), 'org.criu.config': this.criuConfig };
    return placed;
  }

  async remove(name: string): Promise<void> {
    checkName(name);
    if (!(await this.readRecord(name)) && !(await this.runc.state(name))) {
      throw new FerryError(
        'FERRY_E_CONTAINER_UNKNOWN',
        `no container named ${name} on host ${this.hostName}`,
        {
          phase: 'input',
        },
      );
    }
    await this.exclusive(name, 'remove', async () => {
      const rec = await this.readRecord(name);
      await this.runc.destroy(name);
      if (rec) await this.network.destroy(name, identity(rec));
      // the local checkpoints of its failed migrations go with it
      await removeContainerImages(this.paths, name);
      await rm(containerDir(this.paths, name), { recursive: true, force: true });
      this.log.info({ container: name }, 'container removed');
    });
  }

  /** Drops a container's files after it moved away (runc already forgot it at checkpoint). */
  async forget(name: string): Promise<void> {
    const rec = await this.readRecord(name);
    await this.runc.destroy(name);
    if (rec) await this.network.destroy(name, identity(rec));
    await rm(containerDir(this.paths, name), { recursive: true, force: true });
  }
}

export function identity(rec: ContainerRecord): NetIdentity {
  const id: NetIdentity = { mode: rec.net };
  if (rec.ip) id.ip = rec.ip;
  if (rec.mac) id.mac = rec.mac;
  return id;
}
