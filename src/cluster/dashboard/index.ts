// Starts the dashboard beside the controller's API, and adds to that API the route `ferry dashboard` calls for a
// login URL (a client certificate is what proves the user; the URL's token carries that to the browser) and the
// single move the dashboard makes, for the CLI's users too (`ferry demo --dashboard` runs its tour through it,
// so the browser follows every hop).
import type { FastifyInstance } from 'fastify';
import { MoveBody, type MoveRequest, type MoveStarted } from '../../api/dashboard.ts';
import type { Role } from '../../api/http-server.ts';
import type { DashboardLogin } from '../../api/types.ts';
import { FerryError } from '../../core/errors.ts';
import type { Logger } from '../../core/log.ts';
import type { ControllerFileConfig } from '../config.ts';
import type { Controller } from '../controller.ts';
import { DashboardAssets } from './assets.ts';
import type { DashboardAgents } from './plan-move.ts';
import { buildDashboardApp } from './server.ts';
import { DashboardLogins } from './sessions.ts';

export interface RunningDashboard {
  /** https://address:port */
  origin: string;
  close(): Promise<void>;
}

export async function startDashboard(deps: {
  cfg: ControllerFileConfig;
  api: FastifyInstance;
  controller: Controller;
  agents: DashboardAgents;
  tls: { key: Buffer; cert: Buffer };
  log: Logger;
}): Promise<RunningDashboard | undefined> {
  const d = deps.cfg.dashboard;
  const USER = { roles: ['client'] as Role[] };
  // single moves are the controller's whether or not it serves the page
  deps.api.post(
    '/v1/moves',
    { config: USER, schema: { body: MoveBody } },
    async (req, reply): Promise<MoveStarted> => {
      const started = await deps.controller.move(req.body as MoveRequest);
      reply.code(202);
      return started;
    },
  );
  if (!d) {
    // `ferry dashboard` hears why instead of "no such endpoint"
    deps.api.post('/v1/dashboard/login', { config: USER }, async () => {
      throw new FerryError('FERRY_E_CAPABILITY', 'this controller serves no dashboard', {
        hint: 'give it a port: "dashboard": {"port": 7481} in its config',
      });
    });
    return undefined;
  }
  const address = d.address ?? deps.cfg.listen.address;
  const origin = `https://${address.includes(':') ? `[${address}]` : address}:${d.port}`;
  const logins = new DashboardLogins();
  const app = buildDashboardApp(
    {
      controller: deps.controller,
      agents: deps.agents,
      logins,
      assets: new DashboardAssets(),
      log: deps.log,
      // a new picture per heartbeat interval at most
      snapshotEveryMs: 1000,
    },
    { https: deps.tls },
  );
  deps.api.post('/v1/dashboard/login', { config: USER }, async (): Promise<DashboardLogin> => {
    const t = logins.issueToken();
    return { url: `${origin}/login?token=${t.token}`, expiresAt: new Date(t.expiresAt).toISOString() };
  });
  await app.listen({ host: address, port: d.port });
  deps.log.info({ origin }, 'dashboard listening');
  return { origin, close: () => app.close() };
}
