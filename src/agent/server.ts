// The agent's HTTP API: one handler per endpoint, each checking its request and handing over to the host, the
// engine or the destination's registry. Over 400 lines because it is the one route table of the agent (which roles
// each route takes sits beside it); split, the contract would be spread over files.
import type { IncomingMessage } from 'node:http';
import { createZstdDecompress } from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import { MIGRATE_HEARTBEAT_MS } from '../api/agent-client.ts';
import {
  type ApiServerOptions,
  buildApiServer,
  type HttpsServerOptions,
  type Role,
} from '../api/http-server.ts';
import {
  CheckpointBody,
  CheckpointParams,
  ClaimBody,
  ClaimParams,
  CreateBody,
  FinishBody,
  IdParams,
  ImportBody,
  IncomingBody,
  LocalArchiveBody,
  MigrateBody,
  NameParams,
  PartParams,
  PartQuery,
  RangeQuery,
  RestoreBody,
  StagedParams,
} from '../api/schemas.ts';
import type {
  AgentHealth,
  CapabilitiesReport,
  Endpoint,
  MigrationEvent,
  MigrationRequest,
} from '../api/types.ts';
import { lanAddressProblem } from '../core/addresses.ts';
import { FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { checkName } from '../core/names.ts';
import type { ArchiveRestores } from '../host/archive-restore.ts';
import type { Checkpoints } from '../host/checkpoints.ts';
import type { ContainerHost } from '../host/containers.ts';
import type { Uploads } from '../host/uploads.ts';
import type { IncomingMigrations } from '../migration/destination.ts';
import type { MigrationSource } from '../migration/source.ts';
import type { DestinationPeer } from '../migration/types.ts';
import { MigrationStatuses } from './migrations.ts';
import type { Held, Reservations } from './reservations.ts';

export interface AgentDeps {
  host: ContainerHost;
  /** Tells the controller at once what changed here (a heartbeat out of turn); bounded, never fails. */
  reportChange?: () => Promise<void>;
  /** The other hosts of the cluster: the only sources it takes migrations from and destinations it sends to. */
  peers: readonly Endpoint[];
  uploads: Uploads;
  reservations: Reservations;
  /** The LAN a container address must be on (any address of it, this agent's own) and its prefix length. */
  lan?: { member: string; prefixLen: number };
  checkpoints: Checkpoints;
  restores: ArchiveRestores;
  incoming: IncomingMigrations;
  source: MigrationSource;
  /** The migrations run here as their source, for callers that lost their stream (GET /v1/migrations/:id). */
  statuses?: MigrationStatuses;
  capabilities: () => Promise<CapabilitiesReport>;
  peerFor: (ep: Endpoint) => DestinationPeer;
  log: Logger;
  version: string;
  /** When this agent's own certificate expires (reported by /v1/health). */
  certificateExpires?: Date;
  /** A stream from a source that makes no progress this long is cut (deadlines.stallMs): a dead link frees it. */
  stallMs?: number;
}

export interface ServerOptions {
  https?: HttpsServerOptions;
  /** The caller's certificate without TLS (unit tests); see ApiServerOptions. */
  peerCertificate?: ApiServerOptions['peerCertificate'];
}

/** A source agent of the cluster, for the destination's half of a migration (and the link probe). */
const PEER = { roles: ['agent'] as Role[], knownPeer: true };
/** The CLI's users and the controller: containers and the migrations they start. */
const USER = { roles: ['client', 'controller'] as Role[] };
/** Facts a peer reads in its plan phase as much as a user does. */
const ANYONE = { roles: ['agent', 'client', 'controller'] as Role[] };

/**
 * The destination of a migration as the cluster knows it: a peer's name at its own address and port. Any
 * other address is refused, so an agent cannot be made to stream a container (or connect at all) elsewhere.
 */
export function clusterDestination(peers: readonly Endpoint[], self: string, to: Endpoint): Endpoint {
  if (to.name === self) return to; // the plan phase refuses it (FERRY_E_HOST_SAME)
  const known = peers.find((p) => p.name === to.name);
  const hint = `hosts of this cluster: ${peers.map((p) => `${p.name} (${p.address}:${p.port})`).join(', ') || 'none'}`;
  if (!known)
    throw new FerryError('FERRY_E_HOST_UNKNOWN', `host ${to.name} is not a host of this cluster`, {
      phase: 'input',
      hint,
    });
  if (known.address !== to.address || known.port !== to.port)
    throw new FerryError(
      'FERRY_E_HOST_UNKNOWN',
      `host ${to.name} is at ${known.address}:${known.port} in this cluster, not ${to.address}:${to.port}`,
      { phase: 'input', hint },
    );
  return known;
}

export function buildAgentApp(deps: AgentDeps, opts: ServerOptions = {}): FastifyInstance {
  const peerNames = new Set(deps.peers.map((p) => p.name));
  const app = buildApiServer({
    log: deps.log,
    knownPeer: (name) => peerNames.has(name),
    ...(opts.https ? { https: opts.https } : {}),
    ...(opts.peerCertificate ? { peerCertificate: opts.peerCertificate } : {}),
  });
  const { host, incoming } = deps;
  const statuses = deps.statuses ?? new MigrationStatuses();
  /** A migration's later steps: only the source that prepared it (another peer cannot commit or abort it). */
  const ITS_SOURCE = {
    ...PEER,
    claimedPeer: (req: { params: unknown }) => incoming.sourceOf((req.params as { id: string }).id),
  };
  /** A stream from the source that stalls (its link cut) ends with an error instead of holding its files open. */
  const stallGuard = (raw: IncomingMessage): void => {
    const ms = deps.stallMs;
    if (ms === undefined) return;
    raw.setTimeout(ms, () =>
      raw.destroy(
        new FerryError('FERRY_E_PEER_TIMEOUT', `the source's stream made no progress for ${ms} ms`, {
          phase: 'transfer',
        }),
      ),
    );
  };

  app.get(
    '/v1/health',
    { config: ANYONE },
    async (): Promise<AgentHealth> => ({
      host: host.hostName,
      version: deps.version,
      ok: true,
      ...(deps.certificateExpires ? { certificateExpires: deps.certificateExpires.toISOString() } : {}),
    }),
  );
  app.get('/v1/capabilities', { config: ANYONE }, async () => deps.capabilities());
  // a link measurement for `auto`: the bytes are counted and dropped
  app.put('/v1/bandwidth', { config: PEER }, async (req) => {
    let bytes = 0;
    for await (const c of req.raw) {
      bytes += (c as Buffer).length;
      if (bytes > 256 << 20) throw new FerryError('FERRY_E_INPUT_REQUEST', 'bandwidth probe too large');
    }
    return { bytes };
  });

  app.get('/v1/containers', { config: USER }, async () => host.list());
  // a source's plan phase asks whether the destination already runs the name
  app.get('/v1/containers/:name', { config: ANYONE, schema: { params: NameParams } }, async (req) =>
    host.info(req.params.name),
  );
  // the dashboard's process tree (through the controller)
  app.get(
    '/v1/containers/:name/processes',
    { config: USER, schema: { params: NameParams } },
    async (req) => ({
      container: req.params.name,
      host: host.hostName,
      ...(await host.processes(req.params.name)),
    }),
  );

  app.put('/v1/uploads/:name', { config: USER, schema: { params: NameParams } }, async (req) => {
    const name = checkName(req.params.name);
    // refused before gigabytes travel for nothing
    if (await host.exists(name))
      throw new FerryError(
        'FERRY_E_CONTAINER_EXISTS',
        `a container named ${name} already exists on host ${host.hostName}`,
        {
          phase: 'input',
        },
      );
    return deps.uploads.receive(name, req.raw);
  });

  app.post('/v1/claims', { config: PEER, schema: { body: ClaimBody } }, async (req, reply) => {
    checkName(req.body.name);
    await deps.reservations.claim(req.body);
    reply.code(201);
    return { token: req.body.token };
  });
  app.delete('/v1/claims/:token', { config: PEER, schema: { params: ClaimParams } }, async (req, reply) => {
    deps.reservations.release(req.params.token);
    reply.code(204);
  });

  app.post('/v1/containers', { config: USER, schema: { body: CreateBody } }, async (req, reply) => {
    const b = req.body;
    checkName(b.name);
    // every check on the request before anything is claimed or taken
    if (b.upload && b.command)
      throw new FerryError('FERRY_E_INPUT_REQUEST', 'give either a command or upload: true, not both', {
        phase: 'input',
      });
    if (!b.upload && !b.command)
      throw new FerryError(
        'FERRY_E_INPUT_REQUEST',
        'give a command, or upload a bundle and set upload: true',
        {
          phase: 'input',
        },
      );
    const net = b.net ?? 'none';
    if (net !== 'none' && !b.ip)
      throw new FerryError('FERRY_E_INPUT_REQUEST', `network mode ${net} needs an address (ip)`, {
        phase: 'input',
      });
    if (net === 'none' && b.ip)
      throw new FerryError('FERRY_E_INPUT_REQUEST', 'network mode none takes no address', { phase: 'input' });
    const ip = net !== 'none' ? b.ip : undefined;
    const problem = ip && deps.lan ? lanAddressProblem(ip, deps.lan) : undefined;
    if (problem) throw new FerryError('FERRY_E_INPUT_REQUEST', problem, { phase: 'input' });
    const upload = b.upload ? await deps.uploads.take(b.name) : undefined;
    let held: Held | undefined;
    let created = false;
    try {
      held = await deps.reservations.acquire(b.name, ip);
      const info = await host.create({
        name: b.name,
        ...(b.command ? { command: b.command } : {}),
        ...(upload ? { uploadedBundle: upload } : {}),
        ...(b.net ? { net: b.net } : {}),
        ...(b.ip ? { ip: b.ip } : {}),
      });
      created = true;
      reply.code(201);
      return info;
    } finally {
      await held?.release(created);
      if (upload) await deps.uploads.discard(b.name);
    }
  });

  app.delete('/v1/containers/:name', { config: USER, schema: { params: NameParams } }, async (req, reply) => {
    if (incoming.isReserved(req.params.name)) {
      throw new FerryError('FERRY_E_CONTAINER_BUSY', `container ${req.params.name} is arriving by migration`);
    }
    await host.remove(req.params.name);
    // the controller hears of it before the answer: a create that reuses the name or address right after is not
    // refused on its picture of a moment ago
    await deps.reportChange?.();
    reply.code(204);
  });

  app.post(
    '/v1/containers/:name/migrate',
    { config: USER, schema: { params: NameParams, body: MigrateBody } },
    async (req, reply) => {
      // an unknown container or destination fails before any streaming starts (the engine's plan phase checks
      // the rest, the destination being this host included)
      const to = clusterDestination(deps.peers, host.hostName, req.body.to);
      await host.info(req.params.name);
      if (host.isBusy(req.params.name))
        throw new FerryError(
          'FERRY_E_CONTAINER_BUSY',
          `container ${req.params.name} is busy (a migration or removal is in progress)`,
          {
            phase: 'input',
          },
        );
      const peer = deps.peerFor(to);
      reply.hijack();
      const raw = reply.raw;
      raw.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
      const emit = (e: MigrationEvent) => {
        if (!raw.destroyed) raw.write(`${JSON.stringify(e)}\n`);
      };
      // the migration goes on even if the caller disconnects: a half-done migration must finish or roll back
      const { to: _asked, ...options } = req.body;
      const mreq: MigrationRequest = {
        ...options,
        name: req.params.name,
        to: to.name,
        toAddress: to.address,
      };
      const tracked = statuses.track(req.params.name, to.name, emit);
      // a blank line now and then: the caller tells a quiet phase from a dead link (agent-client.ts)
      const heartbeat = setInterval(() => {
        if (!raw.destroyed) raw.write('\n');
      }, MIGRATE_HEARTBEAT_MS);
      try {
        const report = await deps.source.migrate(mreq, peer, tracked);
        tracked({ type: 'result', report });
      } finally {
        clearInterval(heartbeat);
      }
      raw.end();
    },
  );
  app.get('/v1/migrations/:id', { config: USER, schema: { params: IdParams } }, async (req) =>
    statuses.get(req.params.id),
  );

  // ---- checkpoints into an archive (streamed to the caller), restores from one (streamed from it) ----

  app.post(
    '/v1/containers/:name/checkpoint',
    { config: USER, schema: { params: NameParams, body: CheckpointBody } },
    async (req, reply) => {
      // every refusal (unknown, not running, busy, a failed dump) is an ordinary error answer, before any byte
      const started = await deps.checkpoints.start(req.params.name, req.body);
      reply.hijack();
      const raw = reply.raw;
      const { stream } = started;
      if (!stream) {
        // written into the caller's file: the answer carries only the digest, in its trailers
        raw.writeHead(200, {
          'content-type': 'application/octet-stream',
          'cache-control': 'no-store',
          'x-ferry-checkpoint': started.id,
          'x-ferry-written': 'file',
          trailer: 'x-ferry-sha256, x-ferry-bytes, x-ferry-error',
        });
        raw.flushHeaders();
        raw.on('close', () => {
          if (!raw.writableFinished) started.cancel();
        });
        started.digest.then(
          (d) => {
            raw.addTrailers({
              ...(d.sha256 ? { 'x-ferry-sha256': d.sha256 } : {}),
              'x-ferry-bytes': String(d.bytes),
            });
            raw.end();
          },
          // why the file could not be written (a full disk, say): the caller names it
          (err: Error) => {
            if (raw.destroyed) return;
            raw.addTrailers({ 'x-ferry-error': err.message.replace(/[^\x20-\x7e]/g, ' ').slice(0, 500) });
            raw.end();
          },
        );
        return;
      }
      raw.writeHead(200, {
        'content-type': 'application/octet-stream',
        'cache-control': 'no-store',
        'x-ferry-checkpoint': started.id,
        trailer: 'x-ferry-sha256, x-ferry-bytes',
      });
      stream.on('error', () => raw.destroy());
      // a caller that goes away mid-stream: the stream is destroyed, which thaws the container (host/checkpoints.ts)
      raw.on('close', () => {
        if (!raw.writableFinished) stream.destroy();
      });
      stream.pipe(raw, { end: false });
      // the digest settles when the last byte went into the stream, maybe before it came out of it: end the response
      // only once the stream has ended too (every byte handed to it), or its tail is cut off behind the trailers
      const drained = new Promise<void>((resolve) => stream.once('end', resolve));
      Promise.all([started.digest, drained]).then(
        ([d]) => {
          // (a stream always has its SHA-256: it went through here)
          raw.addTrailers({ 'x-ferry-sha256': d.sha256 ?? '', 'x-ferry-bytes': String(d.bytes) });
          raw.end();
        },
        // the caller sees a cut stream (and no trailers): never a complete-looking archive
        () => raw.destroy(),
      );
    },
  );
  // a token for a caller that may share this host's file system (host/archive-target.ts)
  app.post('/v1/checkpoints/tokens', { config: USER }, async () => ({
    token: deps.checkpoints.issueToken(),
  }));
  app.post(
    '/v1/checkpoints/:id/finish',
    { config: USER, schema: { params: CheckpointParams, body: FinishBody } },
    async (req) => deps.checkpoints.finish(req.params.id, req.body),
  );
  app.delete(
    '/v1/checkpoints/:id',
    { config: USER, schema: { params: CheckpointParams } },
    async (req, reply) => {
      await deps.checkpoints.abort(req.params.id);
      reply.code(204);
    },
  );
  app.put('/v1/restores', { config: USER }, async (req, reply) => {
    const out = await deps.restores.stage(req.raw);
    reply.code(201);
    return out;
  });
  // the archive a caller on this host holds open, read where it lies (host/archive-target.ts); `staged: null`: the
  // caller is not on this host (or proved nothing), and streams it instead
  app.post('/v1/restores/local', { config: USER, schema: { body: LocalArchiveBody } }, async (req, reply) => {
    const fh = await deps.checkpoints.targets.openCallerFile(req.body);
    if (!fh) return { staged: null };
    try {
      const staged = await deps.restores.stage({ file: fh });
      reply.code(201);
      return { staged };
    } finally {
      await fh.close().catch(() => {});
    }
  });
  app.post(
    '/v1/restores/:id',
    { config: USER, schema: { params: StagedParams, body: ImportBody } },
    async (req, reply) => {
      const out = await deps.restores.start(req.params.id, req.body);
      reply.code(201);
      return out;
    },
  );
  app.delete('/v1/restores/:id', { config: USER, schema: { params: StagedParams } }, async (req, reply) => {
    await deps.restores.discard(req.params.id);
    reply.code(204);
  });
  app.put('/v1/inspect', { config: USER }, async (req) => deps.restores.inspect(req.raw));
  app.post('/v1/containers/:name/inspect', { config: USER, schema: { params: NameParams } }, async (req) => {
    const { rec, images, bytes } = await deps.checkpoints.inspectRunning(req.params.name);
    const net: { mode: string; ip?: string; mac?: string } = { mode: rec.net };
    if (rec.ip) net.ip = rec.ip;
    if (rec.mac) net.mac = rec.mac;
    return {
      source: 'container' as const,
      name: rec.name,
      host: host.hostName,
      createdAt: rec.createdAt,
      net,
      sizes: { total: bytes.images, images: bytes.images, pages: bytes.pages, rootfsDiff: 0 },
      images,
    };
  });

  app.post(
    '/v1/incoming',
    {
      config: { ...PEER, claimedPeer: (req) => (req.body as { from?: string }).from },
      schema: { body: IncomingBody },
    },
    async (req, reply) => {
      await incoming.prepare(req.body);
      reply.code(201);
      return { id: req.body.id };
    },
  );
  app.put(
    '/v1/incoming/:id/:part',
    { config: ITS_SOURCE, schema: { params: PartParams, querystring: PartQuery } },
    async (req) => {
      stallGuard(req.raw);
      const opts = { update: req.query.update === '1' };
      const enc = req.headers['content-encoding'];
      if (enc === undefined || enc === 'identity')
        return incoming.receive(req.params.id, req.params.part, req.raw, opts);
      if (enc !== 'zstd')
        throw new FerryError('FERRY_E_INPUT_REQUEST', `unsupported content-encoding ${enc}`);
      const z = createZstdDecompress();
      req.raw.on('error', (err) => z.destroy(err));
      return incoming.receive(req.params.id, req.params.part, req.raw.pipe(z), opts);
    },
  );
  app.put(
    '/v1/incoming/:id/range',
    { config: ITS_SOURCE, schema: { params: IdParams, querystring: RangeQuery } },
    async (req) => {
      stallGuard(req.raw);
      const q = req.query;
      return incoming.receiveRange(
        req.params.id,
        { file: q.file, offset: Number(q.offset), length: Number(q.length), total: Number(q.total) },
        req.raw,
        { sparse: q.sparse === '1' },
      );
    },
  );
  app.put('/v1/incoming/:id/blocks', { config: ITS_SOURCE, schema: { params: IdParams } }, async (req) => {
    stallGuard(req.raw);
    return incoming.receiveBlocks(req.params.id, req.raw);
  });
  // a held switchover (decision 11): the hold before the source freezes, the announcement once it is locked
  app.post(
    '/v1/incoming/:id/hold',
    { config: ITS_SOURCE, schema: { params: IdParams } },
    async (req, reply) => {
      await incoming.hold(req.params.id);
      reply.code(204);
    },
  );
  app.post(
    '/v1/incoming/:id/announce',
    { config: ITS_SOURCE, schema: { params: IdParams } },
    async (req, reply) => {
      await incoming.announce(req.params.id);
      reply.code(204);
    },
  );
  app.post(
    '/v1/incoming/:id/restore',
    { config: ITS_SOURCE, schema: { params: IdParams, body: RestoreBody } },
    async (req) => incoming.restore(req.params.id, req.body),
  );
  app.get('/v1/incoming/:id/pages', { config: ITS_SOURCE, schema: { params: IdParams } }, async (req) =>
    incoming.pagesResult(req.params.id),
  );
  app.get('/v1/incoming/:id/status', { config: PEER, schema: { params: IdParams } }, async (req) => ({
    state: await incoming.status(req.params.id),
  }));
  app.post(
    '/v1/incoming/:id/commit',
    { config: ITS_SOURCE, schema: { params: IdParams } },
    async (req, reply) => {
      await incoming.commit(req.params.id);
      reply.code(204);
    },
  );
  // an abort is idempotent (an unknown id is fine): the source's rollback may repeat it
  app.delete('/v1/incoming/:id', { config: ITS_SOURCE, schema: { params: IdParams } }, async (req, reply) => {
    await incoming.abort(req.params.id);
    reply.code(204);
  });

  return app;
}
