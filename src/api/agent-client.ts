// The agent API as typed methods: what the CLI, the controller, the benchmarks and a source agent (its peer, the
// destination) call. One method per endpoint; the paths and bodies live here and in the agent's server only.
import { stat } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { resolve } from 'node:path';
import { Readable } from 'node:stream';
import { createZstdCompress, constants as zlibConstants } from 'node:zlib';
import { FerryError } from '../core/errors.ts';
import type { FileRange } from '../transport/ranges.ts';
import type { ProcessList } from './dashboard.ts';
import { errorFromBody, HttpsClient, seg } from './https-client.ts';
import type {
  AgentHealth,
  CapabilitiesReport,
  CheckpointRequest,
  CheckpointResult,
  ClaimRequest,
  ContainerInfo,
  CreateRequest,
  ImportOptions,
  ImportResult,
  IncomingRequest,
  IncomingState,
  InspectReport,
  LocalArchive,
  MigrateRequest,
  MigrationEvent,
  MigrationReport,
  MigrationTracking,
  RestoreOptions,
  RestoreResult,
  StagedArchive,
} from './types.ts';

/** Creating a container may build its bundle and network first; removing one stops it. */
const CREATE_TIMEOUT_MS = 120_000;
const REMOVE_TIMEOUT_MS = 60_000;
/** A part of a migration: the whole bundle or a large image file over one connection. */
const PART_TIMEOUT_MS = 120_000;
/** The source agent writes a heartbeat into a migration's event stream this often; four missed ones: a dead link. */
export const MIGRATE_HEARTBEAT_MS = 5000;
const MIGRATE_IDLE_MS = 4 * MIGRATE_HEARTBEAT_MS;
/** How long `migrate` keeps asking a source agent it lost the link to how the migration ended. */
const REATTACH_MS = 15 * 60_000;

export class AgentClient extends HttpsClient {
  /** A stream between agents fails once it makes no progress for the stall timeout (without one: a long limit). */
  private partTimeoutMs(): number {
    return this.stallMs ?? PART_TIMEOUT_MS;
  }

  health(opts: { timeoutMs?: number } = {}): Promise<AgentHealth> {
    return this.request('GET', '/v1/health', opts);
  }

  capabilities(): Promise<CapabilitiesReport> {
    return this.request('GET', '/v1/capabilities');
  }

  containers(): Promise<ContainerInfo[]> {
    return this.request('GET', '/v1/containers');
  }

  container(name: string): Promise<ContainerInfo> {
    return this.request('GET', `/v1/containers/${seg(name)}`);
  }

  /** The container's processes (its cgroup's), for the dashboard's process tree. */
  processes(name: string): Promise<ProcessList> {
    return this.request('GET', `/v1/containers/${seg(name)}/processes`);
  }

  create(req: CreateRequest): Promise<ContainerInfo> {
    return this.request('POST', '/v1/containers', { json: req, timeoutMs: CREATE_TIMEOUT_MS });
  }

  /** Copies an OCI bundle (config.json and rootfs) to the host; `create({name, upload: true})` then runs it. */
  async uploadBundle(name: string, dir: string): Promise<{ bytes: number; files: number }> {
    const root = resolve(dir);
    const st = await stat(`${root}/config.json`).catch(() => undefined);
    if (!st?.isFile())
      throw new FerryError('FERRY_E_BUNDLE_INVALID', `${root} is not an OCI bundle (no config.json)`, {
        phase: 'input',
      });
    // loaded here, not with the client: every CLI command holds one, and only this call walks a tree (the encoder
    // brings the native xattr addon)
    const { encodeTree } = await import('../transport/image-stream/index.ts');
    return this.request('PUT', `/v1/uploads/${seg(name)}`, {
      body: encodeTree([{ root, prefix: '' }]),
      timeoutMs: CREATE_TIMEOUT_MS,
    });
  }

  /** Claims a name (and address) on this agent while the container is created on another host. */
  async claim(c: ClaimRequest, opts: { timeoutMs?: number } = {}): Promise<void> {
    await this.request('POST', '/v1/claims', { json: c, ...opts });
  }

  async releaseClaim(token: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    await this.request('DELETE', `/v1/claims/${seg(token)}`, opts);
  }

  async remove(name: string): Promise<void> {
    await this.request('DELETE', `/v1/containers/${seg(name)}`, { timeoutMs: REMOVE_TIMEOUT_MS });
  }

  /**
   * Runs a migration on this (the source) agent and follows its event stream to the end; the report is the
   * stream's last object. A failed migration is a report with ok false, not an exception; a stream that ends
   * without a report is (the source agent went away).
   */
  async migrate(
    name: string,
    req: MigrateRequest,
    onEvent: (e: Exclude<MigrationEvent, { type: 'result' }>) => void = () => {},
    opts: { reattachMs?: number; pollMs?: number } = {},
  ): Promise<MigrationReport> {
    let result: MigrationReport | undefined;
    let id: string | undefined;
    let lost: unknown;
    await this.ndjson<MigrationEvent>(
      'POST',
      `/v1/containers/${seg(name)}/migrate`,
      req,
      (e) => {
        if (e.type === 'started') id = e.id;
        if (e.type === 'result') result = e.report;
        else onEvent(e);
      },
      { idleMs: MIGRATE_IDLE_MS },
    ).catch((err: unknown) => {
      // the stream broke: the migration goes on without us, and its outcome is asked for below
      if (id === undefined) throw err;
      lost = err;
    });
    if (!result && id !== undefined)
      result = await this.reattach(id, lost ?? new Error('the stream ended without a result'), onEvent, opts);
    if (!result)
      throw new FerryError(
        'FERRY_E_HOST_UNREACHABLE',
        `source host ${this.endpoint.name} ended the migration of ${name} without a result`,
      );
    return result;
  }

  /** Where a migration run by this (the source) agent stands, and its report once done. */
  migrationStatus(id: string, opts: { timeoutMs?: number } = {}): Promise<MigrationTracking> {
    return this.request('GET', `/v1/migrations/${seg(id)}`, opts);
  }

  /**
   * The link to the source agent dropped mid-migration: its outcome is asked for until it is known, so the
   * caller's disconnect never decides it. An agent that restarted meanwhile no longer knows the migration (it
   * settles it on its own): that is an error that says so.
   */
  private async reattach(
    id: string,
    lost: unknown,
    onEvent: (e: Exclude<MigrationEvent, { type: 'result' }>) => void,
    opts: { reattachMs?: number; pollMs?: number },
  ): Promise<MigrationReport | undefined> {
    const until = Date.now() + (opts.reattachMs ?? REATTACH_MS);
    onEvent({
      type: 'info',
      message: `lost the link to ${this.endpoint.name} (${(lost as Error).message}); asking it how migration ${id} ends`,
    });
    let phase: string | undefined;
    while (Date.now() < until) {
      try {
        const s = await this.migrationStatus(id, { timeoutMs: 5000 });
        if (s.state === 'done' && s.report) return s.report;
        if (s.phase !== phase) onEvent({ type: 'info', message: `migration ${id}: phase ${s.phase}` });
        phase = s.phase;
      } catch (err) {
        if (err instanceof FerryError && err.code === 'FERRY_E_MIGRATION_UNKNOWN')
          throw new FerryError(
            'FERRY_E_HOST_UNREACHABLE',
            `source host ${this.endpoint.name} restarted during migration ${id} of its container; it settles the migration on its own`,
            { cause: lost, hint: 'ferry ps shows where the container runs once it is settled' },
          );
        // not reachable yet: asked again
      }
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 1000));
    }
    throw new FerryError(
      'FERRY_E_HOST_UNREACHABLE',
      `lost the link to source host ${this.endpoint.name} during migration ${id} and could not reach it again`,
      { cause: lost, hint: 'the migration goes on (or rolls back) there without this command: ferry ps' },
    );
  }

  /** Sends `bytes` of filler and returns the measured rate in bytes/s (the link measurement of `auto`). */
  async measureRate(bytes: number): Promise<number> {
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    const body = Readable.from(
      (function* () {
        for (let sent = 0; sent < bytes; sent += chunk.length) yield chunk;
      })(),
    );
    const t0 = performance.now();
    await this.request('PUT', '/v1/bandwidth', { body, timeoutMs: this.stallMs ?? 30_000 });
    return (bytes / Math.max(1, performance.now() - t0)) * 1000;
  }

  // ---- checkpoints into an archive and restores from one ----

  /**
   * Checkpoints a container; the answer's body is the archive. When it has ended, `trailer()` gives the SHA-256 and
   * length the agent sent (absent: the stream was cut). Then `finishCheckpoint` (or `abortCheckpoint`) must follow:
   * the container stays frozen until then (unless left running), and is thawed if neither comes.
   */
  async checkpoint(
    name: string,
    req: CheckpointRequest,
  ): Promise<{
    id: string;
    body: IncomingMessage;
    /** The agent wrote the archive into `req.file` (the body is empty); else the body is the archive. */
    written: boolean;
    /** The SHA-256 is absent when the agent's zstd wrote `req.file` itself (the bytes never passed through it). */
    trailer: () => { sha256?: string; bytes: number } | undefined;
    /** Why the agent could not write `req.file`, if it could not. */
    writeError: () => string | undefined;
  }> {
    const path = `/v1/containers/${seg(name)}/checkpoint`;
    // no idle timeout: a large dump may take a while before the first byte
    const res = await this.open('POST', path, { json: req, timeoutMs: 0 });
    const status = res.statusCode ?? 0;
    if (status >= 400) {
      const chunks: Buffer[] = [];
      for await (const c of res) chunks.push(c as Buffer);
      throw errorFromBody(Buffer.concat(chunks).toString('utf8'), status, this.endpoint.name);
    }
    const id = String(res.headers['x-ferry-checkpoint'] ?? '');
    const written = res.headers['x-ferry-written'] === 'file';
    const trailer = () => {
      const sha256 = res.trailers['x-ferry-sha256'];
      const raw = res.trailers['x-ferry-bytes'];
      const bytes = Number(raw);
      if (raw === undefined || !Number.isSafeInteger(bytes)) return undefined;
      if (sha256) return { sha256, bytes };
      return written ? { bytes } : undefined;
    };
    const writeError = () => res.trailers['x-ferry-error'];
    return { id, body: res, written, trailer, writeError };
  }

  /** A token to write into a file the agent may see too (checkpoint's `file`): proof that the caller may write it. */
  async checkpointToken(): Promise<string> {
    const r = await this.request<{ token: string }>('POST', '/v1/checkpoints/tokens', { json: {} });
    return r.token;
  }

  finishCheckpoint(id: string, stop: boolean): Promise<CheckpointResult> {
    return this.request('POST', `/v1/checkpoints/${seg(id)}/finish`, {
      json: { stop },
      timeoutMs: REMOVE_TIMEOUT_MS,
    });
  }

  async abortCheckpoint(id: string): Promise<void> {
    await this.request('DELETE', `/v1/checkpoints/${seg(id)}`, { timeoutMs: REMOVE_TIMEOUT_MS });
  }

  /** Streams an archive to the agent, which checks it whole and keeps it staged for `restoreStaged`. */
  stageArchive(body: Readable): Promise<StagedArchive> {
    return this.request('PUT', '/v1/restores', { body, timeoutMs: 600_000 });
  }

  /**
   * Asks the agent to read an archive this process holds open (it must be on the agent's host): staged, or null if
   * the agent could not (another host): then stream it with `stageArchive`.
   */
  async stageLocalArchive(local: LocalArchive): Promise<StagedArchive | null> {
    const r = await this.request<{ staged: StagedArchive | null }>('POST', '/v1/restores/local', {
      json: local,
      timeoutMs: 600_000,
    });
    return r.staged;
  }

  restoreStaged(id: string, opts: ImportOptions = {}): Promise<ImportResult> {
    return this.request('POST', `/v1/restores/${seg(id)}`, { json: opts, timeoutMs: 600_000 });
  }

  async discardStaged(id: string): Promise<void> {
    await this.request('DELETE', `/v1/restores/${seg(id)}`, { timeoutMs: REMOVE_TIMEOUT_MS });
  }

  /** Streams an archive to the agent, which decodes it without keeping it. */
  inspectArchive(body: Readable): Promise<InspectReport> {
    return this.request('PUT', '/v1/inspect', { body, timeoutMs: 600_000 });
  }

  /** Dumps a running container (it keeps running after a short freeze) and decodes what CRIU saw. */
  inspectContainer(name: string): Promise<InspectReport> {
    return this.request('POST', `/v1/containers/${seg(name)}/inspect`, { timeoutMs: 600_000 });
  }

  // ---- the destination's half of a migration (called by the source agent) ----

  async prepareIncoming(req: IncomingRequest): Promise<void> {
    await this.request('POST', '/v1/incoming', { json: req });
  }

  /** The bundle or the images as one stream; compress: zstd on the wire; update: a delta of the staged tree. */
  sendPart(
    id: string,
    part: 'bundle' | 'images',
    body: Readable,
    opts: { compress?: boolean; update?: boolean } = {},
  ): Promise<{ bytes: number }> {
    const path = `/v1/incoming/${seg(id)}/${part}${opts.update ? '?update=1' : ''}`;
    if (opts.compress) {
      // zstd level 1: cheap enough to pay off whenever the link, not the CPU, is the bottleneck
      const z = createZstdCompress({ params: { [zlibConstants.ZSTD_c_compressionLevel]: 1 } });
      body.on('error', (err) => z.destroy(err));
      return this.request('PUT', path, {
        body: body.pipe(z),
        headers: { 'content-encoding': 'zstd' },
        timeoutMs: this.partTimeoutMs(),
      });
    }
    return this.request('PUT', path, { body, timeoutMs: this.partTimeoutMs() });
  }

  /** One range of a large image file; the destination answers with the CRC-32 it computed. */
  sendRange(
    id: string,
    r: FileRange,
    body: Readable,
    opts: { sparse?: boolean } = {},
  ): Promise<{ crc: number; bytes: number }> {
    const q = new URLSearchParams({
      file: r.file,
      offset: String(r.offset),
      length: String(r.length),
      total: String(r.total),
      ...(opts.sparse ? { sparse: '1' } : {}),
    });
    return this.request('PUT', `/v1/incoming/${seg(id)}/range?${q}`, {
      body,
      timeoutMs: this.partTimeoutMs(),
    });
  }

  sendBlocks(id: string, body: Readable): Promise<{ pages: number; added: number }> {
    return this.request('PUT', `/v1/incoming/${seg(id)}/blocks`, { body, timeoutMs: this.partTimeoutMs() });
  }

  restoreIncoming(id: string, opts: RestoreOptions): Promise<RestoreResult> {
    return this.request('POST', `/v1/incoming/${seg(id)}/restore`, {
      json: opts,
      timeoutMs: 600_000,
    });
  }

  /** Post-copy: waits until every page arrived (or the lazy-pages daemon failed). */
  incomingPages(id: string): Promise<{ ok: boolean; message: string }> {
    return this.request('GET', `/v1/incoming/${seg(id)}/pages`, { timeoutMs: 3_600_000 });
  }

  /** Held switchover: the destination primes a hold for the container's packets (before the freeze). */
  async holdIncoming(id: string): Promise<void> {
    await this.request('POST', `/v1/incoming/${seg(id)}/hold`, { timeoutMs: 10_000 });
  }

  /** Held switchover: the destination announces the address (the source is locked). */
  async announceIncoming(id: string): Promise<void> {
    await this.request('POST', `/v1/incoming/${seg(id)}/announce`, { timeoutMs: 10_000 });
  }

  async commitIncoming(id: string): Promise<void> {
    await this.request('POST', `/v1/incoming/${seg(id)}/commit`);
  }

  /** Where the destination stands on a migration (committed, uncommitted, unknown); a short timeout: it only reads. */
  async incomingStatus(id: string): Promise<IncomingState> {
    const r: { state: IncomingState } = await this.request('GET', `/v1/incoming/${seg(id)}/status`, {
      timeoutMs: Math.min(5000, this.stallMs ?? 5000),
    });
    return r.state;
  }

  async abortIncoming(id: string): Promise<void> {
    await this.request('DELETE', `/v1/incoming/${seg(id)}`, { timeoutMs: 60_000 });
  }
}
