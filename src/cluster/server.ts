// The controller's HTTP API (fastify, mutual TLS) and its event stream (server-sent events) for dashboards. Agents
// only heartbeat (each for itself); everything else is for the CLI's users (api/http-server.ts checks the roles).
import type { FastifyInstance } from 'fastify';
import {
  type ApiServerOptions,
  buildApiServer,
  type HttpsServerOptions,
  type Role,
} from '../api/http-server.ts';
import {
  BatchParams,
  ClaimBody,
  ClaimParams,
  DrainBody,
  HeartbeatBody,
  PlaceBody,
  RebalanceBody,
} from '../api/schemas.ts';
import type { Logger } from '../core/log.ts';
import type { Controller, ControllerEvent } from './controller.ts';

/** The CLI's users. */
const USER = { roles: ['client'] as Role[] };
/** An agent reporting for itself: the host its body names must be its certificate's. */
const AGENT = {
  roles: ['agent'] as Role[],
  claimedPeer: (req: { body: unknown }) => (req.body as { host?: string }).host,
};

export function buildControllerApp(
  controller: Controller,
  log: Logger,
  opts: { https?: HttpsServerOptions; peerCertificate?: ApiServerOptions['peerCertificate'] } = {},
): FastifyInstance {
  const app = buildApiServer({
    log,
    ...(opts.https ? { https: opts.https } : {}),
    ...(opts.peerCertificate ? { peerCertificate: opts.peerCertificate } : {}),
  });

  app.get('/v1/health', { config: USER }, async () => ({
    ok: true,
    role: 'controller',
    leader: controller.isLeader(),
  }));
  app.post('/v1/heartbeat', { config: AGENT, schema: { body: HeartbeatBody } }, async (req) =>
    controller.heartbeat(req.body),
  );
  app.get('/v1/cluster', { config: USER }, async () => controller.summary());
  app.post('/v1/rebalance', { config: USER, schema: { body: RebalanceBody } }, async (req) =>
    controller.rebalance(req.body),
  );
  app.post('/v1/drain', { config: USER, schema: { body: DrainBody } }, async (req) =>
    controller.drain(req.body.host),
  );
  app.post('/v1/place', { config: USER, schema: { body: PlaceBody } }, async (req) => ({
    host: await controller.place(req.body),
  }));
  app.post('/v1/claims', { config: AGENT, schema: { body: ClaimBody } }, async (req, reply) => {
    await controller.claim(req.body);
    reply.code(201);
    return { token: req.body.token };
  });
  app.delete('/v1/claims/:token', { config: AGENT, schema: { params: ClaimParams } }, async (req, reply) => {
    controller.releaseClaim(req.params.token);
    reply.code(204);
  });
  app.get('/v1/migrations', { config: USER }, async () => controller.history());
  app.get('/v1/batches/:batch', { config: USER, schema: { params: BatchParams } }, async (req) =>
    controller.history({ batch: req.params.batch }),
  );
  app.get('/v1/events', { config: USER }, (req, reply) => {
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
