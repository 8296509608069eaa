// The agent's HTTP API (fastify). Thin: validates, calls the host and the migration engine, maps errors.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createZstdDecompress } from 'node:zlib';
import type { Static } from '@sinclair/typebox';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Endpoint as EndpointT } from '../api/client.ts';
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
import { asFerryError, FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { ContainerHost } from '../host/containers.ts';
import type { IncomingMigrations } from '../migration/destination.ts';
import type { MigrationSource } from '../migration/source.ts';
import type { CapabilitiesReport, DestinationPeer, MigrationEvent } from '../migration/types.ts';
import { decodeTree } from '../transport/image-stream/index.ts';

export interface AgentDeps {
  host: ContainerHost;
  incoming: IncomingMigrations;
  source: MigrationSource;
  capabilities: () => Promise<CapabilitiesReport>;
  peerFor: (ep: EndpointT) => DestinationPeer;
  log: Logger;
  version: string;
}

export interface ServerOptions {
  https?: { key: Buffer; cert: Buffer; ca: Buffer; requestCert: true; rejectUnauthorized: true };
}

export function buildAgentApp(deps: AgentDeps, opts: ServerOptions = {}): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.log,
    disableRequestLogging: true,
    ajv: { customOptions: { allErrors: false, coerceTypes: false, removeAdditional: false } },
    ...(opts.https ? { https: opts.https } : {}),
  }) as unknown as FastifyInstance;
  const { host, incoming } = deps;

  // image and bundle streams pass through untouched; handlers read request.raw
  app.addContentTypeParser('application/octet-stream', (_req, _payload, done) => done(null, undefined));

  app.setErrorHandler((err, _req, reply) => {
    const e = err as Error & { validation?: unknown; statusCode?: number; code?: string };
    if (e.validation) {
      reply
        .code(400)
        .send({ error: { code: 'FERRY_E_INPUT_REQUEST', message: `malformed request: ${e.message}` } });
      return;
    }
    if (!(err instanceof FerryError) && e.statusCode && e.statusCode < 500) {
      reply.code(e.statusCode).send({ error: { code: 'FERRY_E_INPUT_REQUEST', message: e.message } });
      return;
    }
    const fe = asFerryError(err);
    if (fe.status >= 500) deps.log.error({ err }, 'request failed');
    reply.code(fe.status).send({ error: fe.toJSON() });
  });
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({
      error: { code: 'FERRY_E_INPUT_REQUEST', message: `no such endpoint: ${req.method} ${req.url}` },
    });
  });

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
  app.get<{ Params: Static<typeof NameParams> }>(
    '/v1/containers/:name',
    { schema: { params: NameParams } },
    async (req) => host.info(req.params.name),
  );

  app.put<{ Params: Static<typeof NameParams> }>(
    '/v1/uploads/:name',
    { schema: { params: NameParams } },
    async (req) => {
      const dir = join(host.paths.stateDir, 'uploads', req.params.name);
      await rm(dir, { recursive: true, force: true });
      try {
        // a bundle's rootfs may hold device nodes; the uploader holds a client certificate of this cluster
        const stats = await decodeTree(req.raw, dir, {
          maxBytes: 8 * 1024 * 1024 * 1024,
          allowDevices: true,
        });
        return { bytes: stats.bytes, files: stats.files };
      } catch (err) {
        await rm(dir, { recursive: true, force: true });
        throw err;
      }
    },
  );

  app.post<{ Body: Static<typeof CreateBody> }>(
    '/v1/containers',
    { schema: { body: CreateBody } },
    async (req, reply) => {
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
    },
  );

  app.delete<{ Params: Static<typeof NameParams> }>(
    '/v1/containers/:name',
    { schema: { params: NameParams } },
    async (req, reply) => {
      if (incoming.isReserved(req.params.name)) {
        throw new FerryError(
          'FERRY_E_CONTAINER_BUSY',
          `container ${req.params.name} is arriving by migration`,
        );
      }
      await host.remove(req.params.name);
      reply.code(204);
    },
  );

  app.post<{ Params: Static<typeof NameParams>; Body: Static<typeof MigrateBody> }>(
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
      const mreq = {
        name: req.params.name,
        to: req.body.to.name,
        toAddress: req.body.to.address,
        strategy: req.body.strategy,
        ...(req.body.maxDowntimeMs !== undefined ? { maxDowntimeMs: req.body.maxDowntimeMs } : {}),
        ...(req.body.thresholdBytes !== undefined ? { thresholdBytes: req.body.thresholdBytes } : {}),
        ...(req.body.maxRounds !== undefined ? { maxRounds: req.body.maxRounds } : {}),
        ...(req.body.compress !== undefined ? { compress: req.body.compress } : {}),
        ...(req.body.streams !== undefined ? { streams: req.body.streams } : {}),
      };
      const report = await deps.source.migrate(mreq, peer, emit);
      emit({ type: 'result', report });
      raw.end();
    },
  );

  app.post<{ Body: Static<typeof IncomingBody> }>(
    '/v1/incoming',
    { schema: { body: IncomingBody } },
    async (req, reply) => {
      const b = req.body;
      await incoming.prepare({
        id: b.id,
        name: b.name,
        from: b.from,
        record: b.record as never,
        ...(b.neighbours ? { neighbours: b.neighbours } : {}),
        ...(b.lazy ? { lazy: b.lazy } : {}),
      });
      reply.code(201);
      return { id: b.id };
    },
  );
  app.put<{ Params: Static<typeof PartParams>; Querystring: Static<typeof PartQuery> }>(
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
  app.put<{ Params: Static<typeof IdParams>; Querystring: Static<typeof RangeQuery> }>(
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
  app.put<{ Params: Static<typeof IdParams> }>(
    '/v1/incoming/:id/blocks',
    { schema: { params: IdParams } },
    async (req) => incoming.receiveBlocks(req.params.id, req.raw),
  );
  app.post<{ Params: Static<typeof IdParams>; Body: Static<typeof RestoreBody> }>(
    '/v1/incoming/:id/restore',
    { schema: { params: IdParams, body: RestoreBody } },
    async (req) =>
      incoming.restore(req.params.id, {
        neighbours: req.body.neighbours,
        ...(req.body.lazy ? { lazy: req.body.lazy } : {}),
      }),
  );
  app.get<{ Params: Static<typeof IdParams> }>(
    '/v1/incoming/:id/pages',
    { schema: { params: IdParams } },
    async (req) => incoming.pagesResult(req.params.id),
  );
  app.post<{ Params: Static<typeof IdParams> }>(
    '/v1/incoming/:id/commit',
    { schema: { params: IdParams } },
    async (req, reply) => {
      await incoming.commit(req.params.id);
      reply.code(204);
    },
  );
  app.delete<{ Params: Static<typeof IdParams> }>(
    '/v1/incoming/:id',
    { schema: { params: IdParams } },
    async (req, reply) => {
      await incoming.abort(req.params.id);
      reply.code(204);
    },
  );

  return app;
}
