// The agent's HTTP API (fastify). Thin: validates, calls the host and the migration engine, maps errors.
import { createZstdDecompress } from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import { buildApiServer, type HttpsServerOptions } from '../api/http-server.ts';
import {
  ClaimBody,
  ClaimParams,
  CreateBody,
  IdParams,
  IncomingBody,
  MigrateBody,
  NameParams,
  PartParams,
  PartQuery,
  RangeQuery,
  RestoreBody,
} from '../api/schemas.ts';
import type { CapabilitiesReport, Endpoint, MigrationEvent, MigrationRequest } from '../api/types.ts';
import { lanAddressProblem } from '../core/addresses.ts';
import { FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { checkName } from '../core/names.ts';
import type { ContainerHost } from '../host/containers.ts';
import type { Uploads } from '../host/uploads.ts';
import type { IncomingMigrations } from '../migration/destination.ts';
import type { MigrationSource } from '../migration/source.ts';
import type { DestinationPeer } from '../migration/types.ts';
import type { Held, Reservations } from './reservations.ts';

export interface AgentDeps {
  host: ContainerHost;
  uploads: Uploads;
  reservations: Reservations;
  /** The LAN a container address must be on (any address of it, this agent's own) and its prefix length. */
  lan?: { member: string; prefixLen: number };
  incoming: IncomingMigrations;
  source: MigrationSource;
  capabilities: () => Promise<CapabilitiesReport>;
  peerFor: (ep: Endpoint) => DestinationPeer;
  log: Logger;
  version: string;
}

export interface ServerOptions {
  https?: HttpsServerOptions;
}

export function buildAgentApp(deps: AgentDeps, opts: ServerOptions = {}): FastifyInstance {
  const app = buildApiServer({ log: deps.log, ...(opts.https ? { https: opts.https } : {}) });
  const { host, incoming } = deps;

  app.get('/v1/health', async () => ({ host: host.hostName, version: deps.version, ok: true }));
  app.get('/v1/capabilities', async () => deps.capabilities());
  // a link measurement for `auto`: the bytes are counted and dropped
  app.put('/v1/bandwidth', async (req) => {
    let bytes = 0;
    for await (const c of req.raw) {
      bytes += (c as Buffer).length;
      if (bytes > 256 << 20) throw new FerryError('FERRY_E_INPUT_REQUEST', 'bandwidth probe too large');
    }
    return { bytes };
  });

  app.get('/v1/containers', async () => host.list());
  app.get('/v1/containers/:name', { schema: { params: NameParams } }, async (req) =>
    host.info(req.params.name),
  );

  app.put('/v1/uploads/:name', { schema: { params: NameParams } }, async (req) => {
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

  app.post('/v1/claims', { schema: { body: ClaimBody } }, async (req, reply) => {
    checkName(req.body.name);
    await deps.reservations.claim(req.body);
    reply.code(201);
    return { token: req.body.token };
  });
  app.delete('/v1/claims/:token', { schema: { params: ClaimParams } }, async (req, reply) => {
    deps.reservations.release(req.params.token);
    reply.code(204);
  });

  app.post('/v1/containers', { schema: { body: CreateBody } }, async (req, reply) => {
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

  app.delete('/v1/containers/:name', { schema: { params: NameParams } }, async (req, reply) => {
    if (incoming.isReserved(req.params.name)) {
      throw new FerryError('FERRY_E_CONTAINER_BUSY', `container ${req.params.name} is arriving by migration`);
    }
    await host.remove(req.params.name);
    reply.code(204);
  });

  app.post(
    '/v1/containers/:name/migrate',
    { schema: { params: NameParams, body: MigrateBody } },
    async (req, reply) => {
      // an unknown container fails before any streaming starts (the engine's plan phase checks the rest, the
      // destination being this host included)
      await host.info(req.params.name);
      if (host.isBusy(req.params.name))
        throw new FerryError(
          'FERRY_E_CONTAINER_BUSY',
          `container ${req.params.name} is busy (a migration or removal is in progress)`,
          {
            phase: 'input',
          },
        );
      const peer = deps.peerFor(req.body.to);
      reply.hijack();
      const raw = reply.raw;
      raw.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
      const emit = (e: MigrationEvent) => {
        if (!raw.destroyed) raw.write(`${JSON.stringify(e)}\n`);
      };
      // the migration goes on even if the caller disconnects: a half-done migration must finish or roll back
      const { to, ...options } = req.body;
      const mreq: MigrationRequest = {
        ...options,
        name: req.params.name,
        to: to.name,
        toAddress: to.address,
      };
      const report = await deps.source.migrate(mreq, peer, emit);
      emit({ type: 'result', report });
      raw.end();
    },
  );

  app.post('/v1/incoming', { schema: { body: IncomingBody } }, async (req, reply) => {
    await incoming.prepare(req.body);
    reply.code(201);
    return { id: req.body.id };
  });
  app.put(
    '/v1/incoming/:id/:part',
    { schema: { params: PartParams, querystring: PartQuery } },
    async (req) => {
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
    { schema: { params: IdParams, querystring: RangeQuery } },
    async (req) => {
      const q = req.query;
      return incoming.receiveRange(
        req.params.id,
        { file: q.file, offset: Number(q.offset), length: Number(q.length), total: Number(q.total) },
        req.raw,
        { sparse: q.sparse === '1' },
      );
    },
  );
  app.put('/v1/incoming/:id/blocks', { schema: { params: IdParams } }, async (req) =>
    incoming.receiveBlocks(req.params.id, req.raw),
  );
  app.post('/v1/incoming/:id/restore', { schema: { params: IdParams, body: RestoreBody } }, async (req) =>
    incoming.restore(req.params.id, req.body),
  );
  app.get('/v1/incoming/:id/pages', { schema: { params: IdParams } }, async (req) =>
    incoming.pagesResult(req.params.id),
  );
  app.post('/v1/incoming/:id/commit', { schema: { params: IdParams } }, async (req, reply) => {
    await incoming.commit(req.params.id);
    reply.code(204);
  });
  app.delete('/v1/incoming/:id', { schema: { params: IdParams } }, async (req, reply) => {
    await incoming.abort(req.params.id);
    reply.code(204);
  });

  return app;
}
