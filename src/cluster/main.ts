// Starts a controller: its store, the agent pool, the decision loop and the API.
import { readFileSync } from 'node:fs';
import { followRevocations } from '../api/http-server.ts';
import { registerMetricsRoute } from '../api/metrics-route.ts';
import { FerryError } from '../core/errors.ts';
import { createLogger } from '../core/log.ts';
import { VERSION } from '../core/version.ts';
import { ProcessRunner } from '../runtime/exec.ts';
import {
  checkOwnCertificate,
  checkOwnNotRevoked,
  tlsClientOptions,
  tlsServerOptions,
} from '../runtime/pki.ts';
import { installUnit, Systemd } from '../runtime/systemd.ts';
import { HttpAgentPool } from './agents.ts';
import { CONTROLLER_CONFIG_PATH, type ControllerFileConfig, etcdEndpoints } from './config.ts';
import { Controller, type ControllerEvent } from './controller.ts';
import { startDashboard } from './dashboard/index.ts';
import { ControllerMetrics } from './metrics.ts';
import { buildControllerApp } from './server.ts';
import type { ClusterStore, LeaderElection } from './store.ts';
import { CONTROLLER_UNIT, controllerUnitText } from './unit.ts';

export { CONTROLLER_CONFIG_PATH, loadControllerConfig } from './config.ts';

/** Installs the controller's systemd unit under `root` (`ferry install --controller`); returns its path. */
export async function installControllerUnit(o: { root: string; ferry: string }): Promise<string> {
  return installUnit(new Systemd(new ProcessRunner()), {
    root: o.root,
    name: CONTROLLER_UNIT,
    text: controllerUnitText({ ferry: o.ferry, config: CONTROLLER_CONFIG_PATH }),
  });
}

/** A file the config names (a certificate, a password): FERRY_E_INPUT_ARGS naming the field when unreadable. */
function readConfigured(file: string, field: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new FerryError(
      'FERRY_E_INPUT_ARGS',
      `controller config ${field}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      { phase: 'input', cause: err },
    );
  }
}

export async function openStore(
  cfg: ControllerFileConfig,
): Promise<{ store: ClusterStore; election?: LeaderElection }> {
  if (cfg.store.kind === 'sqlite') {
    const { SqliteStore } = await import('./store-sqlite.ts');
    return { store: new SqliteStore(cfg.store.path) };
  }
  const { EtcdStore } = await import('./etcd/store.ts');
  const { EtcdLeaderElection } = await import('./etcd/leader.ts');
  const s = cfg.store;
  const client = {
    endpoints: etcdEndpoints(s),
    ...(s.tls
      ? {
          tls: {
            ca: readConfigured(s.tls.ca, '/store/tls/ca'),
            ...(s.tls.cert ? { cert: readConfigured(s.tls.cert, '/store/tls/cert') } : {}),
            ...(s.tls.key ? { key: readConfigured(s.tls.key, '/store/tls/key') } : {}),
          },
        }
      : {}),
    ...(s.auth
      ? {
          auth: {
            user: s.auth.user,
            // the file's one line, without its newline
            password: readConfigured(s.auth.passwordFile, '/store/auth/passwordFile')
              .toString('utf8')
              .replace(/\r?\n$/, ''),
          },
        }
      : {}),
  };
  return {
    store: new EtcdStore({ ...client, prefix: s.prefix }),
    election: new EtcdLeaderElection({
      ...client,
      prefix: s.prefix,
      ...(s.leaderTtlSeconds ? { ttlSeconds: s.leaderTtlSeconds } : {}),
    }),
  };
}

export async function startController(cfg: ControllerFileConfig): Promise<{ close(): Promise<void> }> {
  const log = createLogger({ name: `controller-${cfg.name}`, level: cfg.logLevel });
  const own = checkOwnCertificate(cfg.tls, { role: 'controller' });
  await checkOwnNotRevoked(cfg.tls);
  log.info({ certificate: cfg.tls.cert, notAfter: own.notAfter.toISOString() }, 'controller certificate');
  const { store, election } = await openStore(cfg);
  const tls = tlsClientOptions(cfg.tls);
  const agents = new HttpAgentPool(tls);
  const controller = new Controller({ store, agents, cfg, log });
  const app = buildControllerApp(controller, log, { https: tlsServerOptions(cfg.tls) });
  const metrics = new ControllerMetrics({
    name: cfg.name,
    version: VERSION,
    summary: () => controller.summary(),
    isLeader: () => controller.isLeader(),
  });
  controller.on('event', (e: ControllerEvent) => {
    if (e.type === 'migration') metrics.observe(e.migration);
  });
  registerMetricsRoute(app, metrics.registry);
  const dashboard = await startDashboard({ cfg, api: app, controller, agents, tls, log });
  await app.listen({ host: cfg.listen.address, port: cfg.listen.port });
  const unfollow = followRevocations(app.server, cfg.tls, log, (m) => agents.reload(m));
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
      unfollow();
      await dashboard?.close();
      await app.close();
      agents.close();
      await election?.resign().catch(() => {});
      await store.close();
    },
  };
}
