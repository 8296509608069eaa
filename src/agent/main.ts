// Starts an agent: wires the real runtime into the host, the engine and the API, then listens.
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, hostname, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { followRevocations } from '../api/http-server.ts';
import type { TlsMaterial } from '../api/https-client.ts';
import { registerMetricsRoute } from '../api/metrics-route.ts';
import { ClientPool } from '../api/pool.ts';
import type { CapabilitiesReport, Endpoint } from '../api/types.ts';
import { FerryError } from '../core/errors.ts';
import { Faults } from '../core/faults.ts';
import { createLogger, type Logger } from '../core/log.ts';
import { VERSION } from '../core/version.ts';
import { ArchiveRestores } from '../host/archive-restore.ts';
import { Checkpoints } from '../host/checkpoints.ts';
import { ContainerHost } from '../host/containers.ts';
import { removeOrphanImages } from '../host/images.ts';
import { hostPaths } from '../host/paths.ts';
import { Uploads } from '../host/uploads.ts';
import { IncomingMigrations } from '../migration/destination.ts';
import { MigrationJournal } from '../migration/journal.ts';
import { MigrationSource } from '../migration/source.ts';
import { SourceRecovery } from '../migration/source-recovery.ts';
import { Firewall } from '../network/firewall.ts';
import { ContainerNetwork } from '../network/identity.ts';
import { resetConnection } from '../network/reset.ts';
import { bytesAckedOnPort } from '../network/tcp-sent.ts';
import { destroyConnections, watchStall } from '../network/tcp-stall.ts';
import { findCgroupYard } from '../runtime/cgroup-yard.ts';
import { Criu, type CriuTls } from '../runtime/criu.ts';
import { criuConfigText } from '../runtime/criu-config.ts';
import { installedPreloads } from '../runtime/criu-preload.ts';
import { armDeadMan } from '../runtime/dead-man.ts';
import { ProcessRunner } from '../runtime/exec.ts';
import { stageKdat } from '../runtime/kdat.ts';
import { settleLeftovers } from '../runtime/leftovers.ts';
import { isTmpfs, mountTmpfs } from '../runtime/mounts.ts';
import { checkOwnCertificate, checkOwnNotRevoked, tlsClientOptions } from '../runtime/pki.ts';
import { crlPath } from '../runtime/revocation.ts';
import { Runc } from '../runtime/runc.ts';
import { installUnit, Systemd } from '../runtime/systemd.ts';
import { AGENT_CONFIG_PATH, type AgentConfig, advertisedAddress } from './config.ts';
import { capabilitiesOnce, gatherFacts } from './facts.ts';
import { Heartbeat } from './heartbeat.ts';
import { AgentMetrics } from './metrics.ts';
import { MigrationStatuses } from './migrations.ts';
import { HttpDestinationPeer } from './peer.ts';
import { Reservations } from './reservations.ts';
import { buildAgentApp } from './server.ts';
import { runTemporaryAgent } from './temporary.ts';
import { AGENT_UNIT, agentUnitText } from './unit.ts';

export { AGENT_CONFIG_PATH, loadAgentConfig } from './config.ts';

/** Installs the agent's systemd unit under `root` (`ferry install --agent`); returns the unit file's path. */
export async function installAgentUnit(o: { root: string; ferry: string }): Promise<string> {
  return installUnit(new Systemd(new ProcessRunner()), {
    root: o.root,
    name: AGENT_UNIT,
    text: agentUnitText({ ferry: o.ferry, config: AGENT_CONFIG_PATH }),
  });
}

export { VERSION };

export interface RunningAgent {
  app: FastifyInstance;
  close(): Promise<void>;
  /** Aborts every incoming migration not committed yet (a temporary agent whose source went away). */
  abortUncommitted(): Promise<string[]>;
}

export async function startAgent(
  cfg: AgentConfig,
  log: Logger = createLogger({ name: `agent-${cfg.host}`, level: cfg.logLevel }),
): Promise<RunningAgent> {
  // a wrong certificate would only show in the peers' handshakes: refuse it before anything starts
  const own = checkOwnCertificate(cfg.tls, { role: 'agent', name: cfg.host });
  await checkOwnNotRevoked(cfg.tls);
  log.info({ certificate: cfg.tls.cert, notAfter: own.notAfter.toISOString() }, 'agent certificate');
  // what peers and the controller dial; the listen address may be 0.0.0.0
  const advertise = advertisedAddress(cfg);
  const runner = new ProcessRunner();
  const paths = hostPaths(cfg.stateDir, cfg.imagesDir);
  const faults = new Faults(cfg.faults, { holdDir: join(paths.stateDir, 'faults') });
  // the libraries preloaded into CRIU that this host has (which CRIU runs get which: runtime/criu-preload.ts)
  const preload = installedPreloads();
  const runc = new Runc(runner, {
    root: paths.runcRoot,
    runcPath: cfg.runcPath,
    criuPath: cfg.criuPath,
    faults,
    preload,
  });
  const criu = new Criu(runner, cfg.criuPath, preload.uncork ? { uncork: preload.uncork } : {});
  const network = new ContainerNetwork(runner, cfg.network);
  const host = new ContainerHost({
    hostName: cfg.host,
    paths,
    runc,
    cgroupParent: cfg.cgroupParent,
    network,
    log,
    criuConfig: join(paths.stateDir, 'criu.conf'),
    bundlePolicy: cfg.bundlePolicy,
    protectedPaths: [cfg.tls.key, cfg.tls.cert, cfg.tls.ca].map((f) => dirname(f)),
  });
  await host.init();
  await writeFile(
    join(paths.stateDir, 'criu.conf'),
    criuConfigText(cfg.criu, { cgroupYard: await findCgroupYard() }),
  );
  // staged before any migration: every CRIU run in a freeze then skips its kernel probe
  const kdat = await stageKdat(runner, cfg.criuPath ?? 'criu', paths.stateDir).catch((err: Error) => ({
    state: 'absent' as const,
    message: err.message,
  }));
  log.info(kdat, 'CRIU kernel-feature cache');
  if (!(await isTmpfs(paths.imagesDir))) await mountTmpfs(runner, paths.imagesDir);
  const fw = new Firewall(runner);
  // CRIU's TLS between a cold dump and the destination's page server: this agent's own certificate and CA
  const criuTls: CriuTls = {
    ca: cfg.tls.ca,
    cert: cfg.tls.cert,
    key: cfg.tls.key,
    ...(existsSync(crlPath(cfg.tls.ca)) ? { crl: crlPath(cfg.tls.ca) } : {}),
  };
  const peerAddress = (from: string): string => {
    const p = cfg.peers.find((q) => q.name === from);
    if (!p) throw new FerryError('FERRY_E_AUTH_PEER', `${from} is not a peer of ${cfg.host}`);
    return p.address;
  };
  const incoming = new IncomingMigrations(host, log, {
    faults,
    lazyPages: (o) => criu.lazyPages(o),
    pageServer: {
      start: (o) => criu.pageServer({ ...o, tls: criuTls }),
      fence: {
        open: (port, from, migration) => fw.fencePort(port, peerAddress(from), { migration }),
        close: (port, from, migration) => fw.unfencePort(port, peerAddress(from), { migration }),
      },
    },
    commitDeadlineMs: cfg.deadlines.commitMs,
    // past the source's deadlines for its prepare and its freeze, with the commit's as a margin
    pageServerLifetimeMs: cfg.deadlines.prepareMs + cfg.deadlines.freezeMs + cfg.deadlines.commitMs,
    keepLogs: cfg.keepLogs,
    deadMan: (name, images, cutOff) =>
      armDeadMan({ runcPath: cfg.runcPath, runcRoot: paths.runcRoot, name, images, cutOff }),
  });
  const aborted = await incoming.recover();
  if (aborted.length) log.warn({ aborted }, 'aborted incoming migrations left by a previous run');
  const fences = await fw.removeStalePageServerFences();
  if (fences) log.warn({ fences }, 'page server fences left by a previous run removed');
  const capabilities = capabilitiesOnce(() => gatherFacts(cfg.host, criu, runc));
  const tls: TlsMaterial = tlsClientOptions(cfg.tls);
  // one keep-alive pool for every destination and the controller: a migration to a destination reuses the
  // connections of the last one
  const clients = new ClientPool(tls);
  const peerFor = (ep: Endpoint) =>
    new HttpDestinationPeer(clients.agent(ep, { stallMs: cfg.deadlines.stallMs }));
  const journalDir = join(paths.stateDir, 'journal');
  await mkdir(journalDir, { recursive: true, mode: 0o700 });
  const journal = new MigrationJournal(journalDir);
  const recovery = new SourceRecovery({
    host,
    log,
    journal,
    peerFor,
    commitDeadlineMs: cfg.deadlines.commitMs,
    freezeCeilingMs: cfg.deadlines.freezeMs,
    leftovers: { settle: settleLeftovers },
    failPageServer: (port) => resetConnection('127.0.0.1', port),
  });
  const metrics = new AgentMetrics({
    host: cfg.host,
    version: VERSION,
    containers: () => host.list(),
    certificateExpires: own.notAfter,
  });
  const source = new MigrationSource({
    host,
    log,
    onReport: (r) => metrics.observe(r),
    capabilities,
    deadlines: cfg.deadlines,
    journal,
    guard: recovery,
    onUnsettled: (e) => void recovery.settle(e).catch((err) => log.error({ err }, 'settling failed')),
    faults,
    cold: {
      tls: criuTls,
      stallMs: cfg.deadlines.stallMs,
      watch: (o, onStall) => watchStall(o, onStall),
      cutDump: (o) => destroyConnections(runner, o.address, o.port),
    },
    postcopy: {
      pageServerAddress: advertise,
      fence: {
        // (failPageServer below reaches it through the loopback)
        open: (port, allow) => fw.fencePort(port, allow, { loopback: true }),
        close: (port, allow) => fw.unfencePort(port, allow, { loopback: true }),
      },
      failPageServer: (port) => resetConnection('127.0.0.1', port),
      pageServerDelivered: (port) => bytesAckedOnPort(runner, port),
    },
  });
  const uploads = new Uploads(paths, cfg.uploads);
  // what a previous run received and no create took is gone; from now on, what waits too long
  const swept = await uploads.sweep();
  if (swept.length) log.warn({ uploads: swept }, 'uploads no create took removed');
  const sweeper = setInterval(
    () => {
      void uploads.sweep().then(
        (names) => names.length && log.warn({ uploads: names }, 'uploads no create took removed'),
        (err: Error) => log.warn({ err: err.message }, 'sweeping uploads failed'),
      );
    },
    Math.min(cfg.uploads.maxAgeMs, 60_000),
  );
  sweeper.unref();
  const orphans = await removeOrphanImages(host);
  if (orphans.length) log.warn({ images: orphans }, 'images of no container and no migration removed');
  const reservations = new Reservations({
    host,
    arriving: (n) => incoming.isReserved(n),
    reservedAddresses: [advertise, ...cfg.reservedAddresses],
    peers: cfg.peers
      .filter((p) => p.name !== cfg.host)
      .map((p) => ({ endpoint: p, client: clients.agent(p, { timeoutMs: 5000 }) })),
    ...(cfg.controller ? { controller: clients.controller(cfg.controller, { timeoutMs: 5000 }) } : {}),
    log,
  });
  const checkpoints = new Checkpoints({
    host,
    log,
    versions: async () => {
      const { facts } = await capabilities();
      return {
        ferry: VERSION,
        criu: facts.criuVersion ?? 'unknown',
        runc: facts.runcVersion ?? 'unknown',
        kernel: facts.kernel,
      };
    },
  });
  const restores = new ArchiveRestores({
    host,
    log,
    criuVersion: async () => (await capabilities()).facts.criuVersion,
  });
  // the migrations a previous run left: their containers are refused to new migrations until settled (in the
  // background: settling may wait for a destination's commit deadline)
  const { done: settled } = await recovery.recoverAll();
  void settled
    .then((settled) => {
      if (settled.length) log.warn({ settled }, 'settled the migrations left by a previous run');
    })
    .catch((err) => log.error({ err }, 'settling the migrations left by a previous run failed'));
  // made once the app listens (below); a removal reports to the controller through it
  let heartbeat: Heartbeat | undefined;
  const app = buildAgentApp(
    {
      host,
      reportChange: async () => heartbeat?.beatNow(),
      peers: cfg.peers,
      uploads,
      reservations,
      lan: { member: advertise, prefixLen: cfg.network.prefixLen },
      checkpoints,
      restores,
      incoming,
      source,
      statuses: new MigrationStatuses(),
      capabilities,
      peerFor,
      log,
      version: VERSION,
      certificateExpires: own.notAfter,
      stallMs: cfg.deadlines.stallMs,
    },
    { https: { ...tls, requestCert: true, rejectUnauthorized: true } },
  );
  registerMetricsRoute(app, metrics.registry);
  await app.listen({ host: cfg.listen.address, port: cfg.listen.port });
  const unfollow = followRevocations(app.server, cfg.tls, log, (m) => clients.reload(m));
  if (cfg.controller) {
    heartbeat = new Heartbeat({
      host,
      client: clients.controller(cfg.controller, { timeoutMs: 5000 }),
      cfg: { ...cfg.heartbeat, capacity: cfg.capacity ?? { cores: cpus().length, memoryBytes: totalmem() } },
      self: { name: cfg.host, address: advertise, port: cfg.listen.port },
      log,
    });
    heartbeat.start();
  }
  log.info({ host: cfg.host, listen: cfg.listen, advertise }, 'agent listening');
  void capabilities().catch(() => {});
  return {
    app,
    abortUncommitted: () => incoming.recover(),
    async close() {
      clearInterval(sweeper);
      unfollow();
      heartbeat?.stop();
      clients.close();
      await app.close();
    },
  };
}

/** `ferry agent --stdin`: the temporary destination agent of an agentless migration (temporary.ts). */
export function runTemporary(input: NodeJS.ReadableStream, output: NodeJS.WritableStream): Promise<void> {
  return runTemporaryAgent(startAgent, input as Readable, output as Writable);
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
