// The controller's HTTP API (fastify, mutual TLS) and its event stream (server-sent events) for dashboards.
import type { Static } from '@sinclair/typebox';
import { Type } from '@sinclair/typebox';
import Fastify, { type FastifyInstance } from 'fastify';
import { asFerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { NAME_PATTERN } from '../core/names.ts';
import type { Controller, ControllerEvent } from './controller.ts';

const Name = Type.String({ pattern: NAME_PATTERN, maxLength: 64 });
const Stat = Type.Object(
  {
    name: Name,
    cpuPercent: Type.Number({ minimum: 0 }),
    memoryBytes: Type.Integer({ minimum: 0 }),
    memoryLimit: Type.Optional(Type.Integer({ minimum: 0 })),
    status: Type.String({ maxLength: 32 }),
    ip: Type.Optional(Type.String({ format: 'ipv4' })),
  },
  { additionalProperties: false },
);
const HeartbeatBody = Type.Object(
  {
    host: Name,
    address: Type.String({ format: 'ipv4' }),
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
    capacity: Type.Object(
      { cores: Type.Number({ exclusiveMinimum: 0 }), memoryBytes: Type.Integer({ minimum: 1 }) },
      { additionalProperties: false },
    ),
    seq: Type.Integer({ minimum: 0 }),
    full: Type.Boolean(),
    containers: Type.Array(Stat, { maxItems: 10_000 }),
    removed: Type.Array(Name, { maxItems: 10_000 }),
  },
  { additionalProperties: false },
);
const RebalanceBody = Type.Object(
  {
    dryRun: Type.Optional(Type.Boolean()),
    targetPercent: Type.Optional(Type.Number({ minimum: 1, maximum: 100 })),
  },
  { additionalProperties: false },
);
const DrainBody = Type.Object({ host: Name }, { additionalProperties: false });
const PlaceBody = Type.Object(
  {
    name: Name,
    cpuPercent: Type.Optional(Type.Number({ minimum: 0 })),
    memoryBytes: Type.Optional(Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);
const BatchParams = Type.Object(
  { batch: Type.String({ pattern: '^(rebalance|drain)-[0-9a-f]{8}$' }) },
  { additionalProperties: false },
);

export function buildControllerApp(
  controller: Controller,
  log: Logger,
  opts: {
    https?: { key: Buffer; cert: Buffer; ca: Buffer; requestCert: true; rejectUnauthorized: true };
  } = {},
): FastifyInstance {
  const app = Fastify({
    loggerInstance: log,
    disableRequestLogging: true,
    ajv: { customOptions: { allErrors: false, coerceTypes: false, removeAdditional: false } },
    ...(opts.https ? { https: opts.https } : {}),
  }) as unknown as FastifyInstance;

  app.setErrorHandler((err, _req, reply) => {
    const e = err as Error & { validation?: unknown; statusCode?: number };
    if (e.validation) {
      reply
        .code(400)
        .send({ error: { code: 'FERRY_E_INPUT_REQUEST', message: `malformed request: ${e.message}` } });
      return;
    }
    const fe = asFerryError(
      err,
      e.statusCode && e.statusCode < 500 ? 'FERRY_E_INPUT_REQUEST' : 'FERRY_E_INTERNAL',
    );
    reply.code(fe.status).send({ error: fe.toJSON() });
  });
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({
      error: { code: 'FERRY_E_INPUT_REQUEST', message: `no such endpoint: ${req.method} ${req.url}` },
    });
  });

  app.get('/v1/health', async () => ({ ok: true, role: 'controller', leader: controller.isLeader() }));
  app.post<{ Body: Static<typeof HeartbeatBody> }>(
    '/v1/heartbeat',
    { schema: { body: HeartbeatBody } },
    async (req) => controller.heartbeat(req.body),
  );
  app.get('/v1/cluster', async () => controller.summary());
  app.post<{ Body: Static<typeof RebalanceBody> }>(
    '/v1/rebalance',
    { schema: { body: RebalanceBody } },
    async (req) =>
      controller.rebalance({
        ...(req.body.dryRun !== undefined ? { dryRun: req.body.dryRun } : {}),
        ...(req.body.targetPercent !== undefined ? { targetPercent: req.body.targetPercent } : {}),
      }),
  );
  app.post<{ Body: Static<typeof DrainBody> }>('/v1/drain', { schema: { body: DrainBody } }, async (req) =>
    controller.drain(req.body.host),
  );
  app.post<{ Body: Static<typeof PlaceBody> }>('/v1/place', { schema: { body: PlaceBody } }, async (req) => ({
    host: await controller.place(req.body),
  }));
  app.get('/v1/migrations', async () => controller.history());
  app.get<{ Params: Static<typeof BatchParams> }>(
    '/v1/batches/:batch',
    { schema: { params: BatchParams } },
    async (req) => controller.history({ batch: req.params.batch }),
  );
  app.get('/v1/events', (req, reply) => {
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-store',
      connection: 'keep-alive',
    });
    raw.write(': ferry controller events\n\n');
    const send = (e: ControllerEvent) => raw.write(`event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
    controller.on('event', send);
    const ping = setInterval(() => raw.write(': ping\n\n'), 15_000);
    req.raw.on('close', () => {
      clearInterval(ping);
      controller.off('event', send);
    });
  });
  return app;
}
