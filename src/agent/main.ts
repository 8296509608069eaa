// Starts an agent: wires the real runtime into the host, the engine and the API, then listens.
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { AgentClient, type Endpoint, type TlsMaterial } from '../api/client.ts';
import { createLogger, type Logger } from '../core/log.ts';
import { ContainerHost } from '../host/containers.ts';
import { hostPaths } from '../host/paths.ts';
import { IncomingMigrations } from '../migration/destination.ts';
import { MigrationSource } from '../migration/source.ts';
import { Firewall } from '../network/firewall.ts';
import { ContainerNetwork } from '../network/identity.ts';
import { resetConnection } from '../network/reset.ts';
import { Criu } from '../runtime/criu.ts';
import { ProcessRunner } from '../runtime/exec.ts';
import { stageKdat } from '../runtime/kdat.ts';
import { isTmpfs, mountTmpfs } from '../runtime/mounts.ts';
import { Runc } from '../runtime/runc.ts';
import type { AgentConfig } from './config.ts';
import { capabilitiesOnce, gatherFacts } from './facts.ts';
import { Heartbeat } from './heartbeat.ts';
import { HttpDestinationPeer } from './peer.ts';
import { buildAgentApp } from './server.ts';

export const VERSION = '0.2.0';

/** ferry locks and unlocks container networks itself (network/identity.ts), before and after CRIU runs. */
const CRIU_CONFIG = '# written by the ferry agent\nnetwork-lock skip\n';

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
  await writeFile(join(paths.stateDir, 'criu.conf'), CRIU_CONFIG);
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
  // one client (one keep-alive pool) per destination, for every migration to it
  const clients = new Map<string, AgentClient>();
  const peerFor = (ep: Endpoint) => {
    const key = `${ep.address}:${ep.port}`;
    let c = clients.get(key);
    if (!c) {
      c = new AgentClient(ep, tls, { timeoutMs: 30_000 });
      clients.set(key, c);
    }
    return new HttpDestinationPeer(c);
  };
  const app = buildAgentApp(
    { host, incoming, source, capabilities, peerFor, log, version: VERSION },
    { https: { ...tls, requestCert: true, rejectUnauthorized: true } },
  );
  await app.listen({ host: cfg.listen.address, port: cfg.listen.port });
  let heartbeat: Heartbeat | undefined;
  if (cfg.controller) {
    const controllerClient = new AgentClient(cfg.controller, tls, { timeoutMs: 5000 });
    clients.set('controller', controllerClient);
    heartbeat = new Heartbeat({
      host,
      client: controllerClient,
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
      for (const c of clients.values()) c.close();
      await app.close();
    },
  };
}
