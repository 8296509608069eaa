// Typed wrapper over the runc CLI (runc talks RPC to CRIU for checkpoint/restore).
// Over 400 lines: one method per runc command, each with its options, its failure's explanation and its test-only
// fault; what reads runc's files is in runc-state.ts and freezer.ts, the gate of a staged dump or restore in
// criu-gate.ts, the libraries preloaded into CRIU in criu-preload.ts.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { access, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { FerryError } from '../core/errors.ts';
import { Faults } from '../core/faults.ts';
import { traceStep } from '../core/trace.ts';
import { type CriuTls, criuTlsOptions } from './criu.ts';
import {
  dumpFailingCriu,
  dumpMark,
  type GateLibrary,
  openGate,
  restoreMark,
  type StagedCheckpoint,
  stageGated,
  untilOrKill,
} from './criu-gate.ts';
import { criuLogError } from './criu-log.ts';
import { CriuDirs, resolveExecutable, withCriuDir } from './criu-path.ts';
import { type CriuPreloads, withPreload, withPreloads } from './criu-preload.ts';
import type { ExecResult, RunControl, Runner } from './exec.ts';
import { startProcess, tail } from './exec.ts';
import { freezeRecorded } from './freezer.ts';
import { externalDescriptorsOf, quickStatusOf } from './runc-state.ts';
import { PTRACE_ONLY_SEIZE_ENV, stoppedTasks } from './stopped-tasks.ts';

export type { StagedCheckpoint } from './criu-gate.ts';
export { quickStatusOf } from './runc-state.ts';

export interface RuncContainerState {
  id: string;
  pid: number;
  status: 'created' | 'running' | 'paused' | 'stopped' | string;
  bundle: string;
}

export interface CheckpointOptions {
  imagePath: string;
  workPath: string;
  leaveRunning?: boolean;
  /** A pre-dump round (memory only; the container keeps running). Needs soft-dirty tracking. */
  preDump?: boolean;
  /** The previous round's images, relative to imagePath (CRIU --prev-images-dir). */
  parentPath?: string;
  tcpEstablished?: boolean;
  /** Dump the container's file locks (flock, POSIX, OFD); default on (see FILE_LOCKS_DEFAULT). */
  fileLocks?: boolean;
  lazyPages?: boolean;
  /** ADDRESS:PORT of a page server the dump sends its pages to (a cold migration's destination). */
  pageServer?: string;
  /** TLS to that page server (CRIU's own, in the dump's configuration file: runc has no flag for it). */
  pageServerTls?: CriuTls;
  statusFd?: number;
  /** runc (and the CRIU under it) is killed past this; default 600 s. */
  timeoutMs?: number;
  /** Drop TCP connections a listening socket has not accepted yet (CRIU --skip-in-flight) instead of failing. */
  skipInFlight?: boolean;
}

/**
 * CRIU options runc 1.1 has no flag for, for one dump: a configuration file of their own, named to CRIU by
 * CRIU_CONFIG_FILE in runc's environment (CRIU reads it besides the container's `org.criu.config`). In a fresh
 * private directory (a file in a shared one could be planted); `done()` removes it. Undefined when none is needed.
 */
export function extraCriuConfig(o: {
  skipInFlight?: boolean;
  pageServerTls?: CriuTls;
}): { env: NodeJS.ProcessEnv; done(): void } | undefined {
  const lines: string[] = [];
  if (o.skipInFlight) lines.push('skip-in-flight');
  if (o.pageServerTls)
    for (const [k, v] of criuTlsOptions(o.pageServerTls)) lines.push(v === undefined ? k : `${k} ${v}`);
  if (lines.length === 0) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'ferry-criu-'));
  const file = join(dir, 'dump.conf');
  writeFileSync(file, `${lines.join('\n')}\n`, { mode: 0o600 });
  return {
    env: { ...process.env, CRIU_CONFIG_FILE: file },
    done: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * File locks move with the container unless a caller says otherwise: a process that holds a lock expects to
 * hold it after the migration, and without --file-locks CRIU refuses to dump a task holding one at all
 * ("Some file locks are hold by dumping tasks"). Costs nothing when there are none.
 */
export const FILE_LOCKS_DEFAULT = true;

/**
 * A staged dump's runc waits for its release under this deadline (the migration's own phases bound the wait; a
 * rollback cancels it); the release re-arms it with the dump's own, counted from the freeze.
 */
export const STAGED_WAIT_MS = 600_000;

export interface RestoreOptions {
  bundle: string;
  imagePath: string;
  workPath: string;
  tcpEstablished?: boolean;
  /** Restore the file locks the dump recorded; default on, as for the dump. */
  fileLocks?: boolean;
  lazyPages?: boolean;
  /** runc and the CRIU under it are killed past this; default 600 s. */
  timeoutMs?: number;
}

/** What ferry needs from runc; the real one below, fakes in unit tests. */
export interface RuncLike {
  readonly root: string;
  run(id: string, bundle: string, logFile: string): Promise<void>;
  state(id: string): Promise<RuncContainerState | undefined>;
  list(): Promise<RuncContainerState[]>;
  kill(id: string, signal?: string, all?: boolean): Promise<void>;
  delete(id: string): Promise<void>;
  pause(id: string): Promise<void>;
  resume(id: string): Promise<void>;
  destroy(id: string): Promise<void>;
  checkpoint(id: string, o: CheckpointOptions): Promise<{ ms: number }>;
  restore(id: string, o: RestoreOptions): Promise<{ ms: number }>;
  checkpointLazy(id: string, o: LazyCheckpointOptions): LazyDump;
  /**
   * A dump whose runc starts now, ahead of the freeze, and whose CRIU starts only at `go()`; undefined when it
   * cannot be staged (then `checkpoint` as usual).
   */
  stageCheckpoint?(id: string, o: CheckpointOptions): Promise<StagedCheckpoint | undefined>;
  /** A restore staged the same way (`Runc.stageRestore`): its CRIU starts at `go()`. */
  stageRestore?(id: string, o: RestoreOptions): Promise<StagedCheckpoint | undefined>;
  /** The same for a lazy dump: its CRIU starts at `go()`, which hands over the dump as `checkpointLazy` would. */
  stageCheckpointLazy?(id: string, o: LazyCheckpointOptions): Promise<StagedLazyDump | undefined>;
  /**
   * Running or paused, as `state` would say, read from runc's files without starting runc (inside the freeze);
   * undefined for anything else or when it cannot be told: then ask `state`.
   */
  quickStatus?(id: string): Promise<{ status: 'running' | 'paused'; pid: number } | undefined>;
  /** What a dump of the container writes as descriptors.json (runc's record of its init's stdio), read from runc's files. */
  externalDescriptors?(id: string): Promise<string[] | undefined>;
}

export interface LazyCheckpointOptions {
  imagePath: string;
  workPath: string;
  /** ADDRESS:PORT the page server listens on (runc makes CRIU listen on every address: fence it). */
  pageServer: string;
  tcpEstablished?: boolean;
  fileLocks?: boolean;
  /** Hybrid: the last pre-dump round, relative to imagePath; only what changed since is left to the page server. */
  parentPath?: string;
  skipInFlight?: boolean;
}

/**
 * runc's arguments for a lazy dump (the container's id follows them). Always `--leave-running`: CRIU takes the TCP
 * sockets out of repair mode only on the way out of a dump that leaves the tasks alive, and a lazy dump decides that
 * before it serves pages. Without it, a lazy dump whose page server fails (post-copy's rollback) hands the tasks back
 * with their connections still in repair mode: the next read fails, the program closes the socket, silently, and
 * the client's next segment draws a reset. With it the sockets come out of repair while the tasks are still frozen
 * and their network locked and cut off; after the last page the tasks stay frozen until ferry kills them (as a cold
 * dump's do), instead of CRIU killing them.
 */
export function lazyCheckpointArgs(o: LazyCheckpointOptions): string[] {
  const args = [
    'checkpoint',
    '--lazy-pages',
    '--leave-running',
    '--page-server',
    o.pageServer,
    '--status-fd',
    '3',
  ];
  args.push('--image-path', o.imagePath, '--work-path', o.workPath);
  if (o.tcpEstablished) args.push('--tcp-established');
  if (o.fileLocks ?? FILE_LOCKS_DEFAULT) args.push('--file-locks');
  if (o.parentPath) args.push('--parent-path', o.parentPath);
  return args;
}

/** A post-copy dump: everything but memory is written when `ready` resolves; CRIU then serves pages until `done`. */
export interface LazyDump {
  ready: Promise<void>;
  done: Promise<ExecResult>;
  kill(): void;
}

/** A lazy dump staged ahead of the freeze (Runc.stageCheckpointLazy). */
export interface StagedLazyDump {
  /** The freeze has begun: CRIU dumps now. */
  go(): Promise<LazyDump>;
  /** Not needed after all: runc ends without its CRIU having dumped, and has ended when this resolves. */
  cancel(): Promise<void>;
}

export class Runc implements RuncLike {
  readonly root: string;
  private readonly runner: Runner;
  private readonly runcPath: string;
  /** The CRIU configured, when it is not simply `criu` as runc finds it in PATH (runtime/criu-path.ts). */
  private readonly criuPath: string | undefined;
  /** The real CRIU's absolute path, resolved once: a gate execs it (a name would find the gate itself). */
  private readonly criu: string | undefined;
  private readonly criuDirs = new CriuDirs();
  private readonly faults: Faults;
  /**
   * Libraries preloaded into CRIU (criu-preload.ts): uncork into a dump to or as a page server, conntrack into every
   * dump, tmpfs into every dump and restore, cgroup into every restore, gate into a staged run's CRIU.
   */
  private readonly preload: CriuPreloads;

  constructor(
    runner: Runner,
    opts: { root: string; runcPath?: string; criuPath?: string; faults?: Faults; preload?: CriuPreloads },
  ) {
    this.runner = runner;
    this.root = opts.root;
    this.runcPath = opts.runcPath ?? 'runc';
    this.criuPath = opts.criuPath === 'criu' ? undefined : opts.criuPath;
    this.criu = resolveExecutable(opts.criuPath ?? 'criu');
    this.faults = opts.faults ?? Faults.none();
    this.preload = opts.preload ?? {};
  }

  /** runc's arguments; no `--criu` (runc 1.2 and 1.3 ignore it, 1.4 refuses it): see `criuDir`. */
  private argv(logFile: string | undefined, ...args: string[]): string[] {
    const base = [this.runcPath, '--root', this.root];
    if (logFile) base.push('--log', logFile, '--log-format', 'json');
    return [...base, ...args];
  }

  /**
   * The directory to put first in runc's PATH so that it runs the CRIU ferry means (undefined: the PATH's own).
   * `failing`: the test-only fault (`criu-fail:restore`) names this run: a CRIU that exits at once, so the failure
   * takes the path a real CRIU error takes (a dump's fault fails its dump's CRIU only: `dumpFault`).
   */
  private criuDir(failing: string | undefined, id: string): string | undefined {
    if (failing && this.faults.has(failing, id)) return this.criuDirs.dirFor('/bin/false');
    if (!this.criuPath) return undefined;
    // a configured CRIU that is not there: runc fails on it, as it would have with --criu
    return this.criuDirs.dirFor(this.criu ?? resolve(this.criuPath));
  }

  /**
   * A dump under the test-only fault `criu-fail:dump`: its version check passes and its dump's CRIU fails
   * (runtime/criu-gate.ts `dumpFailingCriu`), as a real CRIU error inside the freeze would; a pre-dump's CRIU fails
   * at once. Undefined without the fault.
   */
  private dumpFault(
    id: string,
    imagePath: string,
    preDump?: boolean,
  ): { dir: string; close(): void } | undefined {
    if (!this.faults.has('criu-fail:dump', id)) return undefined;
    const gate = this.criu && !preDump ? dumpFailingCriu({ imagePath, criu: this.criu }) : undefined;
    // no gate possible (an earlier dump's descriptors.json): a CRIU that fails at once, version check and all
    return gate ?? { dir: this.criuDirs.dirFor('/bin/false'), close: () => {} };
  }

  async version(): Promise<string> {
    const r = await this.runner.run([this.runcPath, '--version']);
    return /runc version (\S+)/.exec(r.stdout)?.[1] ?? 'unknown';
  }

  /** Starts a container detached; its stdio is /dev/null (a host file would make the dump fail). */
  async run(id: string, bundle: string, logFile: string): Promise<void> {
    await rm(logFile, { force: true });
    await this.runner.run(this.argv(logFile, 'run', '-d', '--bundle', bundle, id), {
      stdio: 'null',
      label: 'runc run',
      errorCode: 'FERRY_E_RUN_FAILED',
      phase: 'run',
      onFailure: () => runcLogError(logFile),
      timeoutMs: 60_000,
    });
  }

  async state(id: string): Promise<RuncContainerState | undefined> {
    const r = await this.runner.run(this.argv(undefined, 'state', id), { allowFail: true });
    if (r.code !== 0) return undefined;
    return JSON.parse(r.stdout) as RuncContainerState;
  }

  async externalDescriptors(id: string): Promise<string[] | undefined> {
    return externalDescriptorsOf(join(this.root, id));
  }

  async quickStatus(id: string): Promise<{ status: 'running' | 'paused'; pid: number } | undefined> {
    return quickStatusOf(join(this.root, id));
  }

  async list(): Promise<RuncContainerState[]> {
    const r = await this.runner.run(this.argv(undefined, 'list', '--format', 'json'), { allowFail: true });
    if (r.code !== 0 || !r.stdout.trim() || r.stdout.trim() === 'null') return [];
    return JSON.parse(r.stdout) as RuncContainerState[];
  }

  async kill(id: string, signal = 'KILL', all = true): Promise<void> {
    await this.runner.run(this.argv(undefined, 'kill', ...(all ? ['--all'] : []), id, signal), {
      allowFail: true,
    });
  }

  async delete(id: string): Promise<void> {
    await this.runner.run(this.argv(undefined, 'delete', '--force', id), { allowFail: true });
  }

  /** Frozen through the cgroup runc recorded (runtime/freezer.ts); runc is asked when that cannot be done. */
  async pause(id: string): Promise<void> {
    const traced = performance.now();
    if (await freezeRecorded(join(this.root, id))) {
      traceStep('runc pause: frozen directly', traced);
      return;
    }
    await this.runner.run(this.argv(undefined, 'pause', id), { label: 'runc pause' });
  }

  async resume(id: string): Promise<void> {
    await this.runner.run(this.argv(undefined, 'resume', id), { label: 'runc resume' });
  }

  /**
   * Kills and deletes a container, waiting until runc no longer knows it. `delete --force` waits for a container
   * still dying, so the usual case is two runc runs and a look at runc's own directory for the container (which
   * `delete` removes): no `runc state` polls, each a process start that costs a few hundred ms on a busy host.
   * Anything else (the directory still there) falls back to asking `runc state`.
   */
  async destroy(id: string): Promise<void> {
    await this.kill(id, 'KILL');
    await this.delete(id);
    if (!(await exists(join(this.root, id)))) return;
    for (let i = 0; i < 50; i++) {
      const s = await this.state(id);
      if (!s) return;
      if (s.status === 'stopped' || s.status === 'created' || i > 10) await this.delete(id);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async checkpoint(id: string, o: CheckpointOptions): Promise<{ ms: number }> {
    const fault = this.dumpFault(id, o.imagePath, o.preDump);
    try {
      return await this.runCheckpoint(id, o, fault?.dir ?? this.criuDir(undefined, id));
    } finally {
      fault?.close();
    }
  }

  /**
   * The dump with runc's own start and CRIU version check behind it before the freeze; its CRIU starts at `go()`
   * (runtime/criu-gate.ts). Undefined when it cannot be staged. Until `go()` runc waits under a deadline of its own
   * (STAGED_WAIT_MS); `go(timeoutMs)` re-arms it with the dump's (default `o.timeoutMs`), so the staging's wait
   * does not eat into the freeze ceiling.
   */
  async stageCheckpoint(id: string, o: CheckpointOptions): Promise<StagedCheckpoint | undefined> {
    if (o.preDump || !this.criu) return undefined;
    const dump = this.faults.has('criu-fail:dump', id) ? { dump: '/bin/false' } : {};
    return stageGated(
      this.runner,
      {
        id,
        mark: dumpMark(o.imagePath),
        criu: this.criu,
        ...dump,
        ...this.gateLibrary('dump'),
        timeoutMs: o.timeoutMs ?? 600_000,
      },
      (dir, control) => this.runCheckpoint(id, { ...o, timeoutMs: STAGED_WAIT_MS }, dir, control),
    );
  }

  private async runCheckpoint(
    id: string,
    o: CheckpointOptions,
    criuDir: string | undefined,
    control?: (c: RunControl) => void,
  ): Promise<{ ms: number }> {
    const args = ['checkpoint', '--image-path', o.imagePath, '--work-path', o.workPath];
    if (o.leaveRunning) args.push('--leave-running');
    if (o.preDump) args.push('--pre-dump');
    if (o.parentPath) args.push('--parent-path', o.parentPath);
    if (o.tcpEstablished && !o.preDump) args.push('--tcp-established');
    // a pre-dump copies memory only; the locks go with the final dump
    if ((o.fileLocks ?? FILE_LOCKS_DEFAULT) && !o.preDump) args.push('--file-locks');
    if (o.lazyPages) args.push('--lazy-pages');
    if (o.pageServer) args.push('--page-server', o.pageServer);
    if (o.statusFd !== undefined) args.push('--status-fd', String(o.statusFd));
    const logFile = join(o.workPath, 'runc-checkpoint.log');
    const extra = o.preDump ? undefined : extraCriuConfig(o);
    let dumpEnv = this.dumpEnv(id, extra?.env);
    // a dump to a page server: its CRIU without the cork that would hold its last request 200 ms (criu-preload.ts)
    if (o.pageServer && this.preload.uncork) dumpEnv = withPreload(this.preload.uncork, dumpEnv);
    const env = criuDir ? withCriuDir(criuDir, dumpEnv) : dumpEnv;
    try {
      const r = await this.runner.run(this.argv(logFile, ...args, id), {
        label: 'runc checkpoint',
        errorCode: 'FERRY_E_CHECKPOINT_FAILED',
        phase: 'checkpoint',
        // past the deadline CRIU may be stuck holding the tasks (a seize the frozen cgroup never lets finish): the
        // whole group goes, runc and its CRIU, and is gone before a rollback resumes the container
        group: true,
        onFailure: async (r) =>
          r.timedOut
            ? 'the dump passed the freeze ceiling (deadlines.freezeMs); runc and its CRIU were killed'
            : ((await criuLogError(join(o.workPath, 'dump.log'))) ?? (await runcLogError(logFile))),
        timeoutMs: o.timeoutMs ?? 600_000,
        ...(env ? { env } : {}),
        ...(control ? { control } : {}),
      });
      return { ms: r.ms };
    } finally {
      extra?.done();
    }
  }

  /** A staged run's CRIU held inside CRIU when the gate library is installed (criu-gate.ts `GateLibrary`). */
  private gateLibrary(at: GateLibrary['at']): { library?: GateLibrary } {
    return this.preload.gate ? { library: { path: this.preload.gate, at } } : {};
  }

  /**
   * runc's environment for a dump (undefined: the agent's own). A container with a task stopped by a signal under
   * a cgroup-v1 freezer gets CRIU's ptrace-only seize, without which the dump hangs (runtime/stopped-tasks.ts).
   */
  private dumpEnv(id: string, extra: NodeJS.ProcessEnv | undefined): NodeJS.ProcessEnv | undefined {
    // no walk of the host's conntrack table for a namespace that tracks nothing, no tar and gzip started for an
    // empty tmpfs (criu-preload.ts)
    const env = withPreloads([this.preload.conntrack, this.preload.tmpfs], extra);
    // (the test-only `criu-hang:dump` leaves the switch off: a stopped task then hangs the dump, as any stuck CRIU)
    if (this.faults.has('criu-hang:dump', id) || !stoppedTasks(this.root, id).length) return env;
    return { ...(env ?? process.env), ...PTRACE_ONLY_SEIZE_ENV };
  }

  checkpointLazy(id: string, o: LazyCheckpointOptions): LazyDump {
    const fault = this.dumpFault(id, o.imagePath);
    const lazy = this.startLazy(id, o, fault?.dir ?? this.criuDir(undefined, id));
    if (fault) void lazy.done.finally(() => fault.close());
    return lazy;
  }

  /**
   * A lazy dump whose runc starts now, before the freeze, and whose CRIU starts at `go()` (runtime/criu-gate.ts):
   * runc's start, its version check and its check that CRIU can serve lazy pages are behind it at the freeze.
   */
  async stageCheckpointLazy(id: string, o: LazyCheckpointOptions): Promise<StagedLazyDump | undefined> {
    if (!this.criu) return undefined;
    const dump = this.faults.has('criu-fail:dump', id) ? { dump: '/bin/false' } : {};
    const gate = await openGate(this.runner, {
      mark: dumpMark(o.imagePath),
      criu: this.criu,
      ...dump,
      ...this.gateLibrary('dump'),
    });
    if (!gate) return undefined;
    const lazy = this.startLazy(id, o, gate.dir);
    let released = false;
    let early = false;
    let ended = false;
    void lazy.ready.then(
      () => {
        early = !released;
      },
      () => {},
    );
    const finished = lazy.done.then(() => {
      ended = true;
      gate.close();
    });
    // ready before its release: its dump got past the gate, which the gate rules out; refused, and it goes
    const refuse = (): never => {
      lazy.kill();
      throw new FerryError('FERRY_E_CHECKPOINT_FAILED', `runc dumped ${id} before the freeze`, {
        phase: 'checkpoint',
      });
    };
    return {
      go: async () => {
        released = true;
        if (early) refuse();
        // runc ended before the release (or ends while it is given): its own error, explained, not the closed FIFO's
        if (ended) {
          await lazy.ready;
          refuse();
        }
        try {
          await gate.release();
        } catch {
          await lazy.ready;
          refuse();
        }
        return lazy;
      },
      cancel: async () => {
        await gate.stop();
        await untilOrKill(finished, () => lazy.kill());
      },
    };
  }

  private startLazy(id: string, o: LazyCheckpointOptions, criuDir: string | undefined): LazyDump {
    const args = lazyCheckpointArgs(o);
    const logFile = join(o.workPath, 'runc-checkpoint.log');
    const extra = extraCriuConfig(o);
    let dumpEnv = this.dumpEnv(id, extra?.env);
    // the lazy dump serves the pages: its answer to the daemon's closing request is not held 200 ms by a cork
    if (this.preload.uncork) dumpEnv = withPreload(this.preload.uncork, dumpEnv);
    const env = criuDir ? withCriuDir(criuDir, dumpEnv) : dumpEnv;
    const p = startProcess(this.argv(logFile, ...args, id), {
      statusFile: join(o.workPath, 'status'),
      group: true,
      ...(env ? { env } : {}),
    });
    if (extra) void p.done.finally(() => extra.done());
    const explain = async (err: unknown): Promise<never> => {
      const why =
        (await criuLogError(join(o.workPath, 'dump.log'))) ?? (await runcLogError(logFile)) ?? String(err);
      throw new FerryError('FERRY_E_CHECKPOINT_FAILED', `runc checkpoint --lazy-pages failed: ${why}`, {
        phase: 'checkpoint',
      });
    };
    return { ready: p.status.catch(explain), done: p.done, kill: () => p.kill('SIGKILL') };
  }

  async restore(id: string, o: RestoreOptions): Promise<{ ms: number }> {
    return this.runRestore(id, o, this.criuDir('criu-fail:restore', id));
  }

  /**
   * A restore whose runc starts now, before the freeze, and whose CRIU starts at `go()` (runtime/criu-gate.ts, the
   * mark `criu-root`): runc's start, its CRIU version check and its mounts are behind it when the images are in.
   * The bundle's config.json and the images' `descriptors.json` must be final now: runc has read both by the time
   * its CRIU waits. Undefined when it cannot be staged (then `restore`).
   */
  async stageRestore(id: string, o: RestoreOptions): Promise<StagedCheckpoint | undefined> {
    if (!this.criu || this.faults.has('criu-fail:restore', id)) return undefined;
    return stageGated(
      this.runner,
      {
        id,
        mark: restoreMark(this.root, id),
        criu: this.criu,
        restore: true,
        ...this.gateLibrary('restore'),
        timeoutMs: o.timeoutMs ?? 600_000,
      },
      (dir, control) => this.runRestore(id, { ...o, timeoutMs: STAGED_WAIT_MS }, dir, control),
    );
  }

  private async runRestore(
    id: string,
    o: RestoreOptions,
    criuDir: string | undefined,
    control?: (c: RunControl) => void,
  ): Promise<{ ms: number }> {
    const args = [
      'restore',
      '-d',
      '--bundle',
      o.bundle,
      '--image-path',
      o.imagePath,
      '--work-path',
      o.workPath,
    ];
    if (o.tcpEstablished) args.push('--tcp-established');
    if (o.fileLocks ?? FILE_LOCKS_DEFAULT) args.push('--file-locks');
    if (o.lazyPages) args.push('--lazy-pages');
    const logFile = join(o.workPath, 'runc-restore.log');
    // an empty tmpfs restored without starting tar and gzip for it, no cgroup move into the cgroup the restored
    // task is in already (criu-preload.ts)
    const preloaded = withPreloads([this.preload.tmpfs, this.preload.cgroup]);
    const env = criuDir ? withCriuDir(criuDir, preloaded) : preloaded;
    const r = await this.runner.run(this.argv(logFile, ...args, id), {
      stdio: 'null',
      label: 'runc restore',
      errorCode: 'FERRY_E_RESTORE_FAILED',
      phase: 'restore',
      // past the deadline the whole group goes, runc and the CRIU under it: killing runc alone would leave its CRIU
      // restoring on, a process the destination's cleanup would never see
      group: true,
      onFailure: async (r) =>
        r.timedOut
          ? 'runc and its CRIU were killed'
          : ((await criuLogError(join(o.workPath, 'restore.log'))) ?? (await runcLogError(logFile))),
      timeoutMs: o.timeoutMs ?? 600_000,
      ...(env ? { env } : {}),
      ...(control ? { control } : {}),
    });
    return { ms: r.ms };
  }
}

function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** The last error message in a runc JSON log. */
export async function runcLogError(logFile: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(logFile, 'utf8');
  } catch {
    return undefined;
  }
  const msgs: string[] = [];
  for (const line of text.trim().split('\n')) {
    try {
      const j = JSON.parse(line) as { level?: string; msg?: string };
      if ((j.level === 'error' || j.level === 'fatal') && j.msg) msgs.push(j.msg);
    } catch {
      if (line.trim()) msgs.push(line.trim());
    }
  }
  return msgs.length ? msgs[msgs.length - 1] : tail(text, 1) || undefined;
}
