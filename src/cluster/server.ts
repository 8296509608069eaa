// The controller's HTTP API (fastify, mutual TLS) and its event stream (server-sent events) for dashboards.
import type { FastifyInstance } from 'fastify';
import { buildApiServer, type HttpsServerOptions } from '../api/http-server.ts';
import { BatchParams, DrainBody, HeartbeatBody, PlaceBody, RebalanceBody } from '../api/schemas.ts';
import type { Logger } from '../core/log.ts';
import type { Controller, ControllerEvent } from './controller.ts';

export function buildControllerApp(
  controller: Controller,
  log: Logger,
  opts: { https?: HttpsServerOptions } = {},
): FastifyInstance {
  const app = buildApiServer({ log, ...(opts.https ? { https: opts.https } : {}) });

  app.get('/v1/health', async () => ({ ok: true, role: 'controller', leader: controller.isLeader() }));
  app.post('/v1/heartbeat', { schema: { body: HeartbeatBody } }, async (req) =>
    controller.heartbeat(req.body),
  );
  app.get('/v1/cluster', async () => controller.summary());
  app.post('/v1/rebalance', { schema: { body: RebalanceBody } }, async (req) =>
    controller.rebalance(req.body),
  );
  app.post('/v1/drain', { schema: { body: DrainBody } }, async (req) => controller.drain(req.body.host));
  app.post('/v1/place', { schema: { body: PlaceBody } }, async (req) => ({
    host: await controller.place(req.body),
  }));
  app.get('/v1/migrations', async () => controller.history());
  app.get('/v1/batches/:batch', { schema: { params: BatchParams } }, async (req) =>
    controller.history({ batch: req.params.batch }),
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
