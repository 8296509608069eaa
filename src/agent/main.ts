// Starts an agent: wires the real runtime into the host, the engine and the API, then listens.
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { cpus, hostname, totalmem } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { TlsMaterial } from '../api/https-client.ts';
import { ClientPool } from '../api/pool.ts';
import type { CapabilitiesReport, Endpoint } from '../api/types.ts';
import { createLogger, type Logger } from '../core/log.ts';
import { ContainerHost } from '../host/containers.ts';
import { hostPaths } from '../host/paths.ts';
import { IncomingMigrations } from '../migration/destination.ts';
import { MigrationSource } from '../migration/source.ts';
import { Firewall } from '../network/firewall.ts';
import { ContainerNetwork } from '../network/identity.ts';
import { resetConnection } from '../network/reset.ts';
import { Criu } from '../runtime/criu.ts';
import { criuConfigText } from '../runtime/criu-config.ts';
import { ProcessRunner } from '../runtime/exec.ts';
import { stageKdat } from '../runtime/kdat.ts';
import { isTmpfs, mountTmpfs } from '../runtime/mounts.ts';
import { Runc } from '../runtime/runc.ts';
import type { AgentConfig } from './config.ts';
import { capabilitiesOnce, gatherFacts } from './facts.ts';
import { Heartbeat } from './heartbeat.ts';
import { HttpDestinationPeer } from './peer.ts';
import { buildAgentApp } from './server.ts';

export { loadAgentConfig } from './config.ts';

export const VERSION = '0.2.0';

export interface RunningAgent {
  app: FastifyInstance;
  close(): Promise<void>;
}

export async function startAgent(
  cfg: AgentConfig,
  log: Logger = createLogger({ name: `agent-${cfg.host}`, level: cfg.logLevel }),
): Promise<RunningAgent> {
  const runner = new ProcessRunner();
  const paths = hostPaths(cfg.stateDir, cfg.imagesDir);
  const runc = new Runc(runner, { root: paths.runcRoot, runcPath: cfg.runcPath, criuPath: cfg.criuPath });
  const criu = new Criu(runner, cfg.criuPath);
  const network = new ContainerNetwork(runner, cfg.network);
  const host = new ContainerHost({
    hostName: cfg.host,
    paths,
    runc,
    cgroupParent: cfg.cgroupParent,
    network,
    log,
    criuConfig: join(paths.stateDir, 'criu.conf'),
  });
  await host.init();
  await writeFile(join(paths.stateDir, 'criu.conf'), criuConfigText(cfg.criu));
  // staged before any migration: every CRIU run in a freeze then skips its kernel probe
  const kdat = await stageKdat(runner, cfg.criuPath ?? 'criu', paths.stateDir).catch((err: Error) => ({
    state: 'absent' as const,
    message: err.message,
  }));
  log.info(kdat, 'CRIU kernel-feature cache');
  if (!(await isTmpfs(paths.imagesDir))) await mountTmpfs(runner, paths.imagesDir);
  const incoming = new IncomingMigrations(host, log, {
    faults: cfg.faults,
    lazyPages: (o) => criu.lazyPages(o),
  });
  const aborted = await incoming.recover();
  if (aborted.length) log.warn({ aborted }, 'aborted incoming migrations left by a previous run');
  const capabilities = capabilitiesOnce(() => gatherFacts(cfg.host, criu, runc));
  const tls: TlsMaterial = {
    key: readFileSync(cfg.tls.key),
    cert: readFileSync(cfg.tls.cert),
    ca: readFileSync(cfg.tls.ca),
  };
  const fw = new Firewall(runner);
  const source = new MigrationSource({
    host,
    log,
    capabilities,
    postcopy: {
      pageServerAddress: cfg.listen.address,
      fence: {
        open: (port, allow) => fw.fencePort(port, allow),
        close: (port, allow) => fw.unfencePort(port, allow),
      },
      failPageServer: (port) => resetConnection('127.0.0.1', port),
    },
  });
  // one keep-alive pool for every destination and the controller: a migration to a destination reuses the
  // connections of the last one
  const clients = new ClientPool(tls);
  const peerFor = (ep: Endpoint) => new HttpDestinationPeer(clients.agent(ep, { timeoutMs: 30_000 }));
  const app = buildAgentApp(
    { host, incoming, source, capabilities, peerFor, log, version: VERSION },
    { https: { ...tls, requestCert: true, rejectUnauthorized: true } },
  );
  await app.listen({ host: cfg.listen.address, port: cfg.listen.port });
  let heartbeat: Heartbeat | undefined;
  if (cfg.controller) {
    heartbeat = new Heartbeat({
      host,
      client: clients.controller(cfg.controller, { timeoutMs: 5000 }),
      cfg: { ...cfg.heartbeat, capacity: cfg.capacity ?? { cores: cpus().length, memoryBytes: totalmem() } },
      self: { name: cfg.host, address: cfg.listen.address, port: cfg.listen.port },
      log,
    });
    heartbeat.start();
  }
  log.info({ host: cfg.host, listen: cfg.listen }, 'agent listening');
  void capabilities().catch(() => {});
  return {
    app,
    async close() {
      heartbeat?.stop();
      clients.close();
      await app.close();
    },
  };
}

/**
 * What this host can do, gathered as an agent would (`ferry check` without --host): CRIU and runc found on the
 * PATH, runc's default state root.
 */
export async function localCapabilities(): Promise<CapabilitiesReport> {
  const runner = new ProcessRunner();
  return capabilitiesOnce(() =>
    gatherFacts(hostname(), new Criu(runner), new Runc(runner, { root: '/run/runc' })),
  )();
}
