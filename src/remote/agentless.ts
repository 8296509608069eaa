// `ferry migrate NAME --to ssh://…` run on the source host (decision 0014): the source half is the engine's own
// MigrationSource, in this process, on a container of a local runc root (runc-root.ts); the destination half is a
// temporary ferry agent started over ssh with ferry's copied executable (`ferry agent --stdin`), bound to the
// remote's loopback. The two authenticate with a CA made for this migration alone: its key never leaves this host,
// the remote's certificate and key travel over ssh's standard input. The agent's API is reached through `ssh -L`,
// post-copy's page server (which only the destination dials) through `ssh -R`. The engine's rollback stays as it
// is: a dropped connection fails the transfer and the source thaws; the temporary agent ends with its session.
import { randomInt } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { createServer } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { capabilitiesOnce, gatherFacts } from '../agent/facts.ts';
import { HttpDestinationPeer } from '../agent/peer.ts';
import { READY_LINE } from '../agent/temporary.ts';
import { ClientPool } from '../api/pool.ts';
import type { MigrationEvent, MigrationOptions, MigrationReport } from '../api/types.ts';
import { FerryError } from '../core/errors.ts';
import { Faults } from '../core/faults.ts';
import { createLogger } from '../core/log.ts';
import { ContainerHost } from '../host/containers.ts';
import { bundleDir, hostPaths } from '../host/paths.ts';
import { DEFAULT_DEADLINES, PAGE_SERVER_PORT_BASE, PAGE_SERVER_PORT_SPAN } from '../migration/defaults.ts';
import { MigrationSource } from '../migration/source.ts';
import { Firewall } from '../network/firewall.ts';
import { ContainerNetwork } from '../network/identity.ts';
import { resetConnection } from '../network/reset.ts';
import { Criu } from '../runtime/criu.ts';
import { installedPreloads } from '../runtime/criu-preload.ts';
import { ProcessRunner } from '../runtime/exec.ts';
import { ClusterCA } from '../runtime/pki.ts';
import { Runc } from '../runtime/runc.ts';
import { parseSshTarget, type SshSession, startSession } from '../runtime/ssh.ts';
import { remoteFerry } from './remote-host.ts';
import { adoptRuncContainer, ipInspector, receivedContainerDir } from './runc-root.ts';

export interface AgentlessRequest {
  name: string;
  /** ssh://[user@]host[:port] */
  to: string;
  options: MigrationOptions;
  runcRoot: string;
  sshConfig?: string;
  onEvent: (e: MigrationEvent) => void;
  env?: NodeJS.ProcessEnv;
}

/** Where this side keeps the migration's own files (the one-time CA, the images): removed at the end. */
const LOCAL_RUN_DIR = '/run/ferry';

/** A name the certificates and the report can carry: the host's, reduced to what a ferry name allows. */
export function peerName(text: string, fallback: string): string {
  const n = text
    .replace(/[^a-zA-Z0-9_.-]/g, '-')
    .replace(/^[^a-zA-Z0-9]+/, '')
    .slice(0, 64);
  return n || fallback;
}

function freeLocalPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

/** A container of this host's runc root, adopted for the engine: its cgroup is wherever runc put it. */
class AdoptedHost extends ContainerHost {
  private readonly cgroups = new Map<string, string>();

  adopt(name: string, cgroup: string | undefined): void {
    if (cgroup) this.cgroups.set(name, cgroup);
  }

  override cgroupsPath(name: string): string {
    return this.cgroups.get(name) ?? super.cgroupsPath(name);
  }
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** Runs one agentless migration; the report is the engine's, as an agent would give it. */
export async function agentlessMigration(r: AgentlessRequest): Promise<MigrationReport> {
  // this process is the source half: it must not die halfway (a frozen source would wait for no one). Ctrl-C, a
  // hangup or a closed output are noted; the migration ends on its own, committed or rolled back.
  const hold = (sig: string) => {
    try {
      process.stderr.write(
        `ferry: ${sig} ignored: the migration ends on its own (committed or rolled back)\n`,
      );
    } catch {
      // no terminal left
    }
  };
  const quiet = () => {};
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const s of signals) process.on(s, hold);
  process.stdout.on('error', quiet);
  process.stderr.on('error', quiet);
  try {
    return await migrateAgentless(r);
  } finally {
    for (const s of signals) process.off(s, hold);
  }
}

async function migrateAgentless(r: AgentlessRequest): Promise<MigrationReport> {
  const env = r.env ?? process.env;
  const target = parseSshTarget(r.to);
  const runner = new ProcessRunner();
  const faults = new Faults(env['FERRY_FAULTS']?.split(',').filter(Boolean) ?? [], {
    ...(env['FERRY_FAULT_HOLD_DIR'] ? { holdDir: env['FERRY_FAULT_HOLD_DIR'] } : {}),
  });
  const runc = new Runc(runner, { root: r.runcRoot, faults, preload: installedPreloads() });
  // refused here, before anything is copied or started
  const naming = new ContainerNetwork(runner, { bridge: 'br0', netnsPrefix: 'ferry', prefixLen: 24 });
  const adopted = await adoptRuncContainer(runc, r.name, r.runcRoot, {
    net: ipInspector(runner),
    hostVeth: (n) => naming.hostVeth(n),
  });
  const from = peerName(hostname(), 'source');
  const to = peerName(target.host, 'destination');
  if (from === to)
    throw new FerryError('FERRY_E_HOST_SAME', `${r.to} names this host (${from})`, {
      phase: 'input',
      hint: 'migrate to another host',
    });
  // this host's facts (CRIU's checks take a while) are gathered while the remote side starts
  const capabilities = capabilitiesOnce(() => gatherFacts(from, new Criu(runner), runc));
  void capabilities().catch(() => {});
  const { ssh, ferry } = await remoteFerry(r.to, r.sshConfig ? { sshConfig: r.sshConfig } : {}, 'plan');
  await mkdir(LOCAL_RUN_DIR, { recursive: true, mode: 0o700 });
  const local = await mkdtemp(join(LOCAL_RUN_DIR, 'agentless-'));
  let session: SshSession | undefined;
  let pool: ClientPool | undefined;
  let closing = false;
  // the images stay when they are the only copy left (a rollback that could not thaw): the error names them
  let keep = false;
  try {
    const ca = new ClusterCA(join(local, 'ca'));
    await ca.ensure();
    const mine = await ca.issue(from, { role: 'agent', ips: ['127.0.0.1'], days: 2 });
    const theirs = await ca.issue(to, { role: 'agent', ips: ['127.0.0.1'], days: 2 });
    const apiPort = await freeLocalPort();
    const remoteApiPort = 20_000 + randomInt(7000);
    const pagePort = PAGE_SERVER_PORT_BASE + randomInt(PAGE_SERVER_PORT_SPAN);
    const input = {
      config: {
        host: to,
        listen: { address: '127.0.0.1', port: remoteApiPort },
        advertise: '127.0.0.1',
        peers: [{ name: from, address: '127.0.0.1', port: 1 }],
        logLevel: 'warn',
      },
      tls: {
        key: await readFile(theirs.key, 'utf8'),
        cert: await readFile(theirs.cert, 'utf8'),
        ca: await readFile(theirs.ca, 'utf8'),
      },
    };
    session = startSession(ssh, `exec ${quote(ferry.path)} agent --stdin`, {
      phase: 'plan',
      label: 'the temporary ferry agent',
      input: `${JSON.stringify(input)}\n`,
      readyWord: READY_LINE,
      // the remote user's login shell runs its rc files first, and a loaded host starts slowly
      readyTimeoutMs: 120_000,
      local: [`127.0.0.1:${apiPort}:127.0.0.1:${remoteApiPort}`],
      remote: [`127.0.0.1:${pagePort}:127.0.0.1:${pagePort}`],
    });
    const asked = performance.now();
    await session.ready;
    r.onEvent({
      type: 'info',
      message:
        `temporary agent on ${r.to} ready in ${((performance.now() - asked) / 1000).toFixed(1)} s ` +
        `(ferry's executable ${ferry.copied ? 'copied there now' : 'found there'})`,
    });
    const open = session;
    void open.closed.then((res) => {
      if (!closing)
        r.onEvent({
          type: 'info',
          message: `ssh session to ${r.to} ended (exit status ${res.code ?? res.signal}): ${res.stderr.trim().split('\n').slice(-1)[0] ?? ''}`,
        });
    });

    const paths = { ...hostPaths(join(local, 'state'), join(local, 'images')), runcRoot: r.runcRoot };
    const log = createLogger({ name: 'ferry-migrate', level: env['FERRY_LOG_LEVEL'] ?? 'warn' });
    const host = new AdoptedHost({
      hostName: from,
      paths,
      runc,
      cgroupParent: '/ferry',
      // (the bridge is the destination's business: here the container's link only goes down and up)
      network: new ContainerNetwork(runner, {
        bridge: 'br0',
        netnsPrefix: adopted.network?.netnsPrefix ?? 'ferry',
        prefixLen: adopted.network?.prefixLen ?? 24,
      }),
      log,
    });
    await host.init();
    host.adopt(r.name, adopted.cgroup);
    await host.writeRecord(adopted.record);
    // the engine reads the bundle where ferry keeps its own: there, a link to the user's
    await symlink(adopted.bundle, bundleDir(paths, r.name));
    const fw = new Firewall(runner);
    const source = new MigrationSource({
      host,
      log,
      capabilities,
      faults,
      postcopy: {
        pageServerAddress: '127.0.0.1',
        port: () => pagePort,
        // the page server listens on this host's loopback, where ssh's forward reaches it as root: no one else may
        fence: { open: (port) => fw.fenceLoopback(port), close: (port) => fw.unfenceLoopback(port) },
        failPageServer: (port) => resetConnection('127.0.0.1', port),
      },
    });
    pool = new ClientPool({
      key: await readFile(mine.key),
      cert: await readFile(mine.cert),
      ca: await readFile(mine.ca),
    });
    const peer = new HttpDestinationPeer(
      pool.agent({ name: to, address: '127.0.0.1', port: apiPort }, { stallMs: DEFAULT_DEADLINES.stallMs }),
    );
    const report = await source.migrate(
      { ...r.options, name: r.name, to, toAddress: '127.0.0.1' },
      peer,
      r.onEvent,
    );
    // a connection that dropped is the cause the engine could only see as a peer gone: ssh's last words say more
    if (!report.ok && report.error && open.ended()) {
      const res = await open.closed;
      const why = res.stderr.trim().split('\n').slice(-1)[0] || `exit status ${res.code ?? res.signal}`;
      report.error.message += ` (the ssh session to ${r.to} had ended: ${why})`;
    }
    keep = report.rollback !== undefined && !report.rollback.sourceRunning;
    const received = receivedContainerDir(r.runcRoot, r.name, adopted.bundle);
    if (report.ok && received) await rm(received, { recursive: true, force: true });
    return report;
  } finally {
    closing = true;
    pool?.close();
    if (session) {
      session.end();
      const ended = await Promise.race([
        session.closed.then(() => true),
        new Promise<boolean>((res) => setTimeout(() => res(false), 30_000).unref()),
      ]);
      if (!ended) session.kill();
    }
    // (the bundle is linked, never followed: the user's directory stays)
    if (!keep) await rm(local, { recursive: true, force: true });
  }
}
