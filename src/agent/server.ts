// The agent's HTTP API (fastify). Thin: validates, calls the host and the migration engine, maps errors.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createZstdDecompress } from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import { buildApiServer, type HttpsServerOptions } from '../api/http-server.ts';
import {
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
import { FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { ContainerHost } from '../host/containers.ts';
import type { IncomingMigrations } from '../migration/destination.ts';
import type { MigrationSource } from '../migration/source.ts';
import type { DestinationPeer } from '../migration/types.ts';
import { decodeTree } from '../transport/image-stream/index.ts';

export interface AgentDeps {
  host: ContainerHost;
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
    const dir = join(host.paths.stateDir, 'uploads', req.params.name);
    await rm(dir, { recursive: true, force: true });
    try {
      // a bundle's rootfs may hold device nodes; the uploader holds a client certificate of this cluster
      const stats = await decodeTree(req.raw, dir, { maxBytes: 8 * 1024 * 1024 * 1024, allowDevices: true });
      return { bytes: stats.bytes, files: stats.files };
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  });

  app.post('/v1/containers', { schema: { body: CreateBody } }, async (req, reply) => {
    const b = req.body;
    const upload = b.upload ? join(host.paths.stateDir, 'uploads', b.name) : undefined;
    try {
      const info = await host.create({
        name: b.name,
        ...(b.command ? { command: b.command } : {}),
        ...(upload ? { uploadedBundle: upload } : {}),
        ...(b.net ? { net: b.net } : {}),
        ...(b.ip ? { ip: b.ip } : {}),
      });
      reply.code(201);
      return info;
    } finally {
      if (upload) await rm(upload, { recursive: true, force: true });
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
