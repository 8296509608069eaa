// The dashboard's own HTTPS port: the page, its bundle, a JSON API for it and its event stream. Browsers carry no
// client certificate, so this is not the controller's mutual-TLS API: a one-time login token (from
// `ferry dashboard`) becomes a session cookie (HttpOnly, Secure, SameSite=Strict), every request needs that
// session, and every state-changing one also the session's CSRF token and this origin.
import type { ServerResponse } from 'node:http';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import {
  type BatchReply,
  DashboardDrainBody,
  type DashboardEvent,
  DashboardRebalanceBody,
  MoveBody,
  type MoveRequest,
  ProcessParams,
} from '../../api/dashboard.ts';
import type { ClusterSummary } from '../../api/types.ts';
import { asFerryError, FerryError } from '../../core/errors.ts';
import type { Logger } from '../../core/log.ts';
import type { Controller, ControllerEvent } from '../controller.ts';
import { type DashboardAssets, indexHtml, loginNeededHtml } from './assets.ts';
import { type DashboardAgents, hostRecord, planMove } from './plan-move.ts';
import { DashboardLogins, type Session, sessionCookie, sessionIdOf } from './sessions.ts';

export interface DashboardDeps {
  controller: Controller;
  agents: DashboardAgents;
  logins: DashboardLogins;
  assets: DashboardAssets;
  log: Logger;
  /** At most one cluster picture per this many ms on the event stream (heartbeats may come faster). */
  snapshotEveryMs?: number;
}

const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cache-control': 'no-store',
};

const SAFE_METHODS = new Set(['GET', 'HEAD']);

export function buildDashboardApp(
  deps: DashboardDeps,
  opts: { https?: { key: Buffer; cert: Buffer } } = {},
): FastifyInstance {
  const { controller, logins, log } = deps;
  const app = Fastify({
    bodyLimit: 64 * 1024,
    ajv: { customOptions: { allErrors: false, coerceTypes: false, removeAdditional: false } },
    ...(opts.https ? { https: opts.https } : {}),
  }) as unknown as FastifyInstance;
  const sessions = new WeakMap<FastifyRequest, Session>();

  app.addHook('onSend', async (_req, reply) => {
    reply.headers(SECURITY_HEADERS);
  });

  // every request but the login itself needs a session; a state-changing one also its CSRF token and our origin
  app.addHook('onRequest', async (req, reply) => {
    const path = req.url.split('?')[0];
    if (path === '/login') return;
    let s: Session;
    try {
      s = logins.session(sessionIdOf(req.headers.cookie));
    } catch (err) {
      if (path?.startsWith('/api/')) throw err;
      reply
        .code(401)
        .type('text/html; charset=utf-8')
        .send(loginNeededHtml((err as Error).message));
      return reply;
    }
    sessions.set(req, s);
    if (SAFE_METHODS.has(req.method)) return;
    const site = req.headers['sec-fetch-site'];
    const origin = req.headers.origin;
    const own = `https://${req.headers.host ?? ''}`;
    if (
      (site !== undefined && site !== 'same-origin') ||
      (origin !== undefined && origin !== own) ||
      !DashboardLogins.csrfMatches(s, req.headers['x-ferry-csrf'] as string | undefined)
    ) {
      log.warn({ url: req.url, origin, site, from: req.raw.socket.remoteAddress }, 'dashboard: CSRF refused');
      throw new FerryError(
        'FERRY_E_AUTH_CSRF',
        'refused: this request did not come from the dashboard page (no CSRF token, or another origin)',
        { hint: 'reload the dashboard' },
      );
    }
  });

  app.setErrorHandler((err, _req, reply) => {
    const e = err as Error & { validation?: unknown; statusCode?: number };
    if (e.validation) {
      reply
        .code(400)
        .send({ error: { code: 'FERRY_E_INPUT_REQUEST', message: `malformed request: ${e.message}` } });
      return;
    }
    // fastify's own 4xx (bad JSON, a body over the limit, another media type): the code docs/errors.md gives each
    if (!(err instanceof FerryError) && e.statusCode && e.statusCode < 500) {
      const code = e.statusCode === 413 ? 'FERRY_E_INPUT_TOO_LARGE' : 'FERRY_E_INPUT_REQUEST';
      reply.code(e.statusCode).send({ error: { code, message: e.message } });
      return;
    }
    const fe = asFerryError(err);
    if (fe.status >= 500) log.error({ err }, 'dashboard request failed');
    reply.code(fe.status).send({ error: fe.toJSON() });
  });

  app.get('/login', async (req, reply) => {
    const token = (req.query as { token?: unknown }).token;
    let s: Session;
    try {
      s = logins.login(typeof token === 'string' ? token : undefined);
    } catch (err) {
      return reply
        .code(401)
        .type('text/html; charset=utf-8')
        .send(loginNeededHtml((err as Error).message));
    }
    log.info({ from: req.raw.socket.remoteAddress }, 'dashboard: logged in');
    // the token leaves the address bar at once (and the Referer never carries it: no-referrer)
    return reply.code(303).header('set-cookie', sessionCookie(s)).header('location', '/').send();
  });
  app.post('/api/logout', async (req, reply) => {
    const s = sessions.get(req);
    if (s) logins.logout(s.id);
    return reply.code(204).header('set-cookie', sessionCookie(undefined)).send();
  });

  app.get('/', async (req, reply) =>
    reply.type('text/html; charset=utf-8').send(indexHtml(sessions.get(req)?.csrf ?? '')),
  );
  app.get('/assets/:file', async (req, reply) => {
    const a = await deps.assets.get((req.params as { file: string }).file);
    if (!a)
      return reply.code(404).send({ error: { code: 'FERRY_E_INPUT_REQUEST', message: 'no such asset' } });
    return reply.type(a.type).send(a.body);
  });

  app.get('/api/cluster', async () => ({ cluster: await controller.summary(), at: Date.now() }));
  app.get('/api/history', async () => controller.history());
  app.get('/api/processes/:host/:name', { schema: { params: ProcessParams } }, async (req) => {
    const p = req.params as { host: string; name: string };
    return deps.agents.processes(await hostRecord(controller, p.host), p.name);
  });
  app.post('/api/moves/plan', { schema: { body: MoveBody } }, async (req) =>
    planMove(controller, deps.agents, req.body as MoveRequest),
  );
  app.post('/api/moves', { schema: { body: MoveBody } }, async (req, reply) => {
    const b = req.body as MoveRequest;
    const started = await controller.move(b);
    log.info({ container: b.container, to: b.to, strategy: b.strategy, id: started.id }, 'dashboard: move');
    reply.code(202);
    return started;
  });
  app.post(
    '/api/rebalance',
    { schema: { body: DashboardRebalanceBody } },
    async (req): Promise<BatchReply> => {
      const b = req.body as { dryRun?: boolean; targetPercent?: number };
      return controller.rebalance(b);
    },
  );
  app.post('/api/drain', { schema: { body: DashboardDrainBody } }, async (req): Promise<BatchReply> => {
    const b = req.body as { host: string; dryRun?: boolean };
    return controller.drain(b.host, { dryRun: b.dryRun === true });
  });

  const stream = new EventFanOut(controller, deps.snapshotEveryMs ?? 1000, log);
  // before the server stops: an open event stream would keep its close waiting
  app.addHook('preClose', async () => stream.close());
  app.get('/api/events', (req, reply) => {
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, {
      ...SECURITY_HEADERS,
      'content-type': 'text/event-stream',
      connection: 'keep-alive',
    });
    stream.add(raw);
    req.raw.on('close', () => stream.remove(raw));
  });
  return app;
}

/**
 * One listener on the controller for every open event stream. Heartbeats become one cluster picture per
 * interval at most (the page never polls); migrations, their progress and plans pass through as they happen.
 */
class EventFanOut {
  /** Each open stream, with what waits for its opening picture (undefined once that is written). */
  private readonly clients = new Map<ServerResponse, string[] | undefined>();
  private readonly listener: (e: ControllerEvent) => void;
  private readonly ping: NodeJS.Timeout;
  private timer: NodeJS.Timeout | undefined;
  private last = 0;
  private readonly controller: Controller;
  private readonly everyMs: number;
  private readonly log: Logger;

  constructor(controller: Controller, everyMs: number, log: Logger) {
    this.controller = controller;
    this.everyMs = everyMs;
    this.log = log;
    this.listener = (e) => this.onEvent(e);
    controller.on('event', this.listener);
    this.ping = setInterval(() => this.write(': ping\n\n'), 15_000);
    this.ping.unref();
  }

  /**
   * A new stream (a page loading, or its browser reconnecting after the connection dropped) opens with the whole
   * picture: the cluster and every migration record. Until that is written, what happens meanwhile is queued for
   * it, so the page never sees a record older than one it already has: an EventSource reconnects by itself, and a
   * page that missed a migration's end while it did would show it running forever.
   */
  add(raw: ServerResponse): void {
    this.clients.set(raw, []);
    raw.write(': ferry dashboard events\n\n');
    void this.opening().then((events) => {
      const queued = this.clients.get(raw);
      if (!queued || raw.destroyed) return;
      for (const e of events) raw.write(frame(e));
      for (const text of queued) raw.write(text);
      this.clients.set(raw, undefined);
    });
  }

  remove(raw: ServerResponse): void {
    this.clients.delete(raw);
  }

  close(): void {
    this.controller.off('event', this.listener);
    clearInterval(this.ping);
    if (this.timer) clearTimeout(this.timer);
    for (const c of this.clients.keys()) c.end();
    this.clients.clear();
  }

  private onEvent(e: ControllerEvent): void {
    if (this.clients.size === 0) return;
    if (e.type === 'host' || e.type === 'heartbeat') this.scheduleSnapshot();
    else if (e.type === 'progress') this.send({ ...e, at: Date.now() });
    else {
      this.send(e);
      if (e.type === 'migration') this.scheduleSnapshot();
    }
  }

  private scheduleSnapshot(): void {
    if (this.timer) return;
    const wait = Math.max(0, this.last + this.everyMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.last = Date.now();
      void this.snapshot().then((e) => e && this.send(e));
    }, wait);
    this.timer.unref();
  }

  private async snapshot(): Promise<DashboardEvent | undefined> {
    try {
      const cluster: ClusterSummary = await this.controller.summary();
      return { type: 'cluster', cluster, at: Date.now() };
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'dashboard: no cluster picture');
      return undefined;
    }
  }

  /** The opening picture of a new stream: the cluster, then the migration records (each left out if it fails). */
  private async opening(): Promise<DashboardEvent[]> {
    const out: DashboardEvent[] = [];
    const cluster = await this.snapshot();
    if (cluster) out.push(cluster);
    try {
      out.push({ type: 'history', migrations: await this.controller.history(), at: Date.now() });
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'dashboard: no migration history for a new stream');
    }
    return out;
  }

  private send(e: DashboardEvent): void {
    this.write(frame(e));
  }

  private write(text: string): void {
    for (const [c, queued] of this.clients) {
      if (c.destroyed) continue;
      if (queued) queued.push(text);
      else c.write(text);
    }
  }
}

/** One event as a server-sent event's frame. */
function frame(e: DashboardEvent): string {
  return `event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`;
}
