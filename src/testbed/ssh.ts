// `ferry testbed up --ssh`: a real OpenSSH server in each simulated host's network namespace, on the host's LAN
// address, so that migrations to ssh:// hosts are tested (and can be tried) without real machines. Every key is
// made for the testbed under its directory: one host key per host, one client key for root. The client gets an
// ssh_config whose known_hosts holds exactly those host keys: host keys are checked, never waved through.
// The system's sshd service is not touched; each server runs from its own config and is stopped by `down`.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { FerryError } from '../core/errors.ts';
import { alive, readPid, startDaemon, stopProcess, writePid } from '../runtime/daemon.ts';
import { descendants, type Runner } from '../runtime/exec.ts';
import { HOST_BRIDGE, type HostLayout, type TestbedLayout } from './layout.ts';

export const SSHD = '/usr/sbin/sshd';
export const SSH_PORT = 22;

/** Where the testbed keeps what the SSH client needs. */
export interface TestbedSsh {
  /** `ssh -F <config> <host>` reaches a host as root, its host key checked. */
  config: string;
  knownHosts: string;
  identity: string;
}

export function sshPaths(dir: string): TestbedSsh {
  const d = join(dir, 'ssh');
  return {
    config: join(d, 'ssh_config'),
    knownHosts: join(d, 'known_hosts'),
    identity: join(d, 'id_ed25519'),
  };
}

function hostSshDir(dir: string, h: { name: string }): string {
  return join(dir, 'hosts', h.name, 'ssh');
}

async function keygen(runner: Runner, file: string, comment: string): Promise<string> {
  await runner.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file], {
    errorCode: 'FERRY_E_TESTBED',
    phase: 'testbed',
  });
  return (await readFile(`${file}.pub`, 'utf8')).trim();
}

/** The ssh_config written for the client: one entry per host, keys and known hosts of the testbed only. */
export function clientConfig(tb: Pick<TestbedLayout, 'name' | 'hosts'>, paths: TestbedSsh): string {
  const hosts = tb.hosts.map((h) => `Host ${h.name}\n  HostName ${h.address}\n`).join('');
  return (
    `# ssh -F ${paths.config} HOST: the hosts of testbed ${tb.name} (written by ferry testbed up --ssh)\n` +
    `${hosts}\n` +
    'Host *\n' +
    '  User root\n' +
    `  Port ${SSH_PORT}\n` +
    `  IdentityFile ${paths.identity}\n` +
    '  IdentitiesOnly yes\n' +
    `  UserKnownHostsFile ${paths.knownHosts}\n` +
    '  GlobalKnownHostsFile /dev/null\n' +
    '  StrictHostKeyChecking yes\n' +
    '  BatchMode yes\n' +
    '  ConnectTimeout 10\n'
  );
}

/** One host's sshd_config: keys only, root by key, forwarding allowed (migrations tunnel through it). */
export function serverConfig(
  h: Pick<HostLayout, 'address'>,
  hostDir: string,
  authorizedKeys: string,
): string {
  return (
    `ListenAddress ${h.address}:${SSH_PORT}\n` +
    `HostKey ${join(hostDir, 'ssh_host_ed25519_key')}\n` +
    `PidFile ${join(hostDir, 'sshd.pid')}\n` +
    `AuthorizedKeysFile ${authorizedKeys}\n` +
    'PermitRootLogin prohibit-password\n' +
    'PubkeyAuthentication yes\n' +
    'PasswordAuthentication no\n' +
    'KbdInteractiveAuthentication no\n' +
    'UsePAM no\n' +
    // the testbed's directory may lie under a world-writable one (/tmp): its own files are root's and 0700
    'StrictModes no\n' +
    'AllowTcpForwarding yes\n' +
    'PrintMotd no\n' +
    'Subsystem sftp internal-sftp\n' +
    // the simulated hosts share one filesystem: each keeps what is copied to it (ferry's executable) and what a
    // temporary agent receives (the containers of agentless migrations) apart. Each has a home of its own too, as
    // a host would: a session's shell then reads no startup files of this machine's root (whatever they run, such
    // as a version manager that waits on a lock an earlier, killed session left, would stall every session)
    `SetEnv HOME=${join(hostDir, 'home')} XDG_CACHE_HOME=${join(hostDir, 'cache')} FERRY_AGENTLESS_DIR=${join(hostDir, 'agentless')}\n` +
    'LogLevel VERBOSE\n'
  );
}

/** What a temporary agent (an agentless migration's destination) on a simulated host uses of that host. */
export function temporaryAgentSettings(h: Pick<HostLayout, 'netns' | 'cgroupParent'>) {
  return {
    cgroupParent: `${h.cgroupParent}-l`,
    network: { bridge: HOST_BRIDGE, netnsPrefix: `${h.netns}-l`, prefixLen: 24 },
  };
}

/**
 * Makes the keys and configs and starts one sshd per host in its namespace; returns once every host answers an
 * SSH login with the client's config (which proves keys, known_hosts and the server together).
 */
export async function startTestbedSsh(
  tb: TestbedLayout & { dir: string },
  runner: Runner,
  env: NodeJS.ProcessEnv,
): Promise<TestbedSsh> {
  const paths = sshPaths(tb.dir);
  await mkdir(join(tb.dir, 'ssh'), { recursive: true, mode: 0o700 });
  // sshd refuses to start without its privilege separation directory
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  const clientKey = await keygen(runner, paths.identity, `ferry-testbed-${tb.name}`);
  const authorized = join(tb.dir, 'ssh', 'authorized_keys');
  await writeFile(authorized, `${clientKey}\n`, { mode: 0o600 });
  const known: string[] = [];
  for (const h of tb.hosts) {
    const hd = hostSshDir(tb.dir, h);
    await mkdir(hd, { recursive: true, mode: 0o700 });
    const pub = await keygen(runner, join(hd, 'ssh_host_ed25519_key'), `ferry-testbed-${tb.name}-${h.name}`);
    known.push(`${h.name},${h.address} ${pub.split(' ').slice(0, 2).join(' ')}`);
    await writeFile(join(hd, 'sshd_config'), serverConfig(h, hd, authorized), { mode: 0o600 });
    // its temporary agents' host settings: the names of this simulated host, apart from the other hosts'
    await mkdir(join(hd, 'agentless'), { recursive: true, mode: 0o700 });
    await mkdir(join(hd, 'home'), { recursive: true, mode: 0o700 });
    await writeFile(join(hd, 'agentless', 'agent.json'), JSON.stringify(temporaryAgentSettings(h)), {
      mode: 0o600,
    });
  }
  await writeFile(paths.knownHosts, `${known.join('\n')}\n`, { mode: 0o600 });
  await writeFile(paths.config, clientConfig(tb, paths), { mode: 0o600 });
  await Promise.all(tb.hosts.map((h) => startSshd(tb.dir, h, env)));
  await Promise.all(
    tb.hosts.map((h) =>
      runner.run(['ssh', '-F', paths.config, h.name, 'true'], {
        timeoutMs: 20_000,
        errorCode: 'FERRY_E_TESTBED',
        phase: 'testbed',
        label: `ssh to testbed host ${h.name}`,
      }),
    ),
  );
  return paths;
}

async function startSshd(dir: string, h: HostLayout, env: NodeJS.ProcessEnv): Promise<void> {
  const hd = hostSshDir(dir, h);
  const log = join(hd, 'sshd.log');
  // -D: stays in the foreground (the testbed tracks it); -e: logs to its log file; nsenter: only the network
  const argv = [
    'nsenter',
    `--net=/run/netns/${h.netns}`,
    '--',
    SSHD,
    '-D',
    '-e',
    '-f',
    join(hd, 'sshd_config'),
  ];
  const pid = startDaemon(argv, log, env);
  await writePid(join(hd, 'sshd.pid.own'), pid);
  const deadline = Date.now() + 15_000;
  while (!(await listening(h.address, SSH_PORT))) {
    if (!alive(pid) || Date.now() > deadline) {
      let tail = '';
      try {
        tail = (await readFile(log, 'utf8')).trim().split('\n').slice(-5).join('\n');
      } catch {
        // no log
      }
      throw new FerryError('FERRY_E_TESTBED', `sshd of ${h.name} did not start\n${tail}`, {
        phase: 'testbed',
      });
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

function listening(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host, port, timeout: 1000 });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
  });
}

/** Stops every host's sshd with its sessions (they leave its process group): for `down`, also after a crash. */
export async function stopTestbedSsh(dir: string, hostNames: string[]): Promise<void> {
  for (const name of hostNames) {
    const pid = await readPid(join(hostSshDir(dir, { name }), 'sshd.pid.own'));
    if (!pid || !alive(pid)) continue;
    const sessions = descendants(pid);
    await stopProcess(pid, 2000);
    for (const p of sessions) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
}
