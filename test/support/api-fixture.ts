// In-process agent and controller APIs for bad-input and fuzz tests: the real servers, validation, host records
// and streams, with runc and the network faked (a "running" container is a record and a fake runc state).
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Reservations } from '../../src/agent/reservations.ts';
import { buildAgentApp } from '../../src/agent/server.ts';
import { CONTROLLER_DEFAULTS, Controller } from '../../src/cluster/controller.ts';
import { buildControllerApp } from '../../src/cluster/server.ts';
import { SqliteStore } from '../../src/cluster/store-sqlite.ts';
import { FerryError } from '../../src/core/errors.ts';
import { silentLogger } from '../../src/core/log.ts';
import { ArchiveRestores } from '../../src/host/archive-restore.ts';
import { Checkpoints } from '../../src/host/checkpoints.ts';
import { ContainerHost } from '../../src/host/containers.ts';
import { hostPaths } from '../../src/host/paths.ts';
import { Uploads } from '../../src/host/uploads.ts';
import { assessStrategies, type HostFacts } from '../../src/migration/capabilities.ts';
import { IncomingMigrations } from '../../src/migration/destination.ts';
import { MigrationSource } from '../../src/migration/source.ts';
import type { NetworkLike } from '../../src/network/identity.ts';
import type { RuncContainerState, RuncLike } from '../../src/runtime/runc.ts';

const facts: HostFacts = {
  host: 'a',
  kernel: '6.18',
  criuVersion: '4.2.1',
  runcVersion: '1.1.5',
  criuCheck: { ok: true, message: '' },
  features: {},
  pipeMaxSize: 4 << 20,
  root: true,
};

/** Every method resolves and does nothing, except those given. */
function fake<T extends object>(given: Partial<T>): T {
  return new Proxy(given as T, {
    get(target, key) {
      if (key in target) return (target as Record<string | symbol, unknown>)[key];
      if (key === 'then') return undefined;
      return async () => undefined;
    },
  });
}

export interface AgentFixture {
  app: FastifyInstance;
  dir: string;
  host: ContainerHost;
  /** Every path under the agent's state directory with its size (what "nothing changed" compares). */
  snapshot(): string[];
  close(): Promise<void>;
}

export const AGENT_ADDRESS = '10.0.0.1';

export async function agentFixture(opts: { uploadLimitBytes?: number } = {}): Promise<AgentFixture> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-badinput-'));
  const log = silentLogger();
  const running = new Map<string, RuncContainerState>();
  const runc = fake<RuncLike>({
    root: '/fake',
    run: async (id: string) => {
      running.set(id, { id, pid: 4242, status: 'running', bundle: '/fake' } as RuncContainerState);
    },
    state: async (id: string) => running.get(id),
    list: async () => [...running.values()],
    destroy: async (id: string) => {
      running.delete(id);
    },
  });
  const network = fake<NetworkLike>({
    netnsPath: (n: string) => `/run/netns/${n}`,
    reannounce: () => {},
    neighbours: async () => [],
  });
  const host = new ContainerHost({
    hostName: 'a',
    paths: hostPaths(dir),
    runc,
    cgroupParent: '/t',
    network,
    log,
  });
  await host.init();
  mkdirSync(join(dir, 'uploads'));
  const capabilities = async () => ({ facts, strategies: assessStrategies(facts) });
  const incoming = new IncomingMigrations(host, log);
  const app = buildAgentApp({
    host,
    peers: [{ name: 'b', address: '10.0.0.2', port: 7470 }],
    uploads: new Uploads(host.paths, opts.uploadLimitBytes ? { limitBytes: opts.uploadLimitBytes } : {}),
    reservations: new Reservations({
      host,
      arriving: (n) => incoming.isReserved(n),
      reservedAddresses: [AGENT_ADDRESS, '10.0.0.100'],
      peers: [],
      log,
    }),
    lan: { member: AGENT_ADDRESS, prefixLen: 24 },
    checkpoints: new Checkpoints({
      host,
      log,
      versions: async () => ({ ferry: '0', criu: '4.2.1', runc: '1.1.5', kernel: '6' }),
    }),
    restores: new ArchiveRestores({ host, log, criuVersion: async () => '4.2.1' }),
    incoming,
    source: new MigrationSource({ host, log, capabilities }),
    capabilities,
    peerFor: (ep) => {
      // a destination that answers nothing: a migration that got this far fails in its plan phase
      throw new FerryError('FERRY_E_HOST_UNREACHABLE', `host ${ep.name} unreachable (no peers in this test)`);
    },
    log,
    version: 'test',
  });
  await app.ready();
  return {
    app,
    dir,
    host,
    snapshot: () => listTree(dir),
    async close() {
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function listTree(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) {
        out.push(`${p}/`);
        walk(p);
      } else out.push(`${p} ${e.isFile() ? statSync(p).size : 'l'}`);
    }
  };
  walk(root);
  return out.sort();
}

export interface ControllerFixture {
  app: FastifyInstance;
  controller: Controller;
  close(): Promise<void>;
}

export async function controllerFixture(): Promise<ControllerFixture> {
  const log = silentLogger();
  const store = new SqliteStore(':memory:');
  const controller = new Controller({
    store,
    agents: {
      containers: async () => [],
      migrate: async () => {
        throw new Error('no agents in this test');
      },
      canMigrate: async () => true,
    },
    cfg: { ...CONTROLLER_DEFAULTS, rebalanceIntervalMs: 0 },
    log,
  });
  const app = buildControllerApp(controller, log);
  await app.ready();
  return {
    app,
    controller,
    async close() {
      await app.close();
      await store.close();
    },
  };
}
