// Starts a controller: its store, the agent pool, the decision loop and the API.
import { readFileSync } from 'node:fs';
import { createLogger } from '../core/log.ts';
import { checkOwnCertificate, tlsServerOptions } from '../runtime/pki.ts';
import { HttpAgentPool } from './agents.ts';
import type { ControllerFileConfig } from './config.ts';
import { Controller } from './controller.ts';
import { startDashboard } from './dashboard/index.ts';
import { buildControllerApp } from './server.ts';
import type { ClusterStore, LeaderElection } from './store.ts';

export { loadControllerConfig } from './config.ts';

export async function openStore(
  cfg: ControllerFileConfig,
): Promise<{ store: ClusterStore; election?: LeaderElection }> {
  if (cfg.store.kind === 'sqlite') {
    const { SqliteStore } = await import('./store-sqlite.ts');
    return { store: new SqliteStore(cfg.store.path) };
  }
  const { EtcdStore } = await import('./etcd/store.ts');
  const { EtcdLeaderElection } = await import('./etcd/leader.ts');
  return {
    store: new EtcdStore({ endpoints: [cfg.store.endpoint], prefix: cfg.store.prefix }),
    election: new EtcdLeaderElection({
      endpoints: [cfg.store.endpoint],
      prefix: cfg.store.prefix,
      ...(cfg.store.leaderTtlSeconds ? { ttlSeconds: cfg.store.leaderTtlSeconds } : {}),
    }),
  };
}

export async function startController(cfg: ControllerFileConfig): Promise<{ close(): Promise<void> }> {
  const log = createLogger({ name: `controller-${cfg.name}`, level: cfg.logLevel });
  const own = checkOwnCertificate(cfg.tls, { role: 'controller' });
  log.info({ certificate: cfg.tls.cert, notAfter: own.notAfter.toISOString() }, 'controller certificate');
  const { store, election } = await openStore(cfg);
  const tls = {
    key: readFileSync(cfg.tls.key),
    cert: readFileSync(cfg.tls.cert),
    ca: readFileSync(cfg.tls.ca),
  };
  const agents = new HttpAgentPool(tls);
  const controller = new Controller({ store, agents, cfg, log });
  const app = buildControllerApp(controller, log, { https: tlsServerOptions(cfg.tls) });
  const dashboard = await startDashboard({ cfg, api: app, controller, agents, tls, log });
  await app.listen({ host: cfg.listen.address, port: cfg.listen.port });
  if (election) {
    controller.setLeader(false);
    election.onLost(() => {
      log.warn('lost leadership');
      controller.setLeader(false);
      void election.campaign(cfg.name).then(() => controller.setLeader(true));
    });
    void election.campaign(cfg.name).then(async () => {
      log.info('leader');
      controller.setLeader(true);
      await controller.recover();
    });
  } else {
    await controller.recover();
  }
  controller.start();
  log.info({ listen: cfg.listen, store: cfg.store.kind }, 'controller listening');
  return {
    async close() {
      controller.stop();
      await dashboard?.close();
      await app.close();
      agents.close();
      await election?.resign().catch(() => {});
      await store.close();
    },
  };
}
