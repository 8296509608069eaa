// OCI bundles: build one around a host command, validate one given by a user, adapt one to a host.
import { lstat, mkdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import { isAbsolute, join, normalize } from 'node:path';
import { FerryError } from '../core/errors.ts';

// biome-ignore lint/suspicious/noExplicitAny: OCI config is an open JSON document
export type OciConfig = Record<string, any>;

/** Host directories a `-- CMD` container sees read-only; assumed present on every host (a cluster's base image). */
export const HOST_DIRS = ['/usr', '/etc'];
/** Top-level paths that are directories on split-/usr hosts and symlinks into /usr on merged-/usr hosts. */
export const MAYBE_LINKED = ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'];

const DEFAULT_CAPS = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

export function defaultConfig(args: string[], hostname: string): OciConfig {
  return {
    ociVersion: '1.0.2-dev',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args,
      env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root'],
      cwd: '/',
      capabilities: {
        bounding: DEFAULT_CAPS,
        effective: DEFAULT_CAPS,
        permitted: DEFAULT_CAPS,
      },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: 'rootfs', readonly: false },
    hostname,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      {
        destination: '/dev',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
      },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
      },
      {
        destination: '/dev/shm',
        type: 'tmpfs',
        source: 'shm',
        options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
      },
      {
        destination: '/dev/mqueue',
        type: 'mqueue',
        source: 'mqueue',
        options: ['nosuid', 'noexec', 'nodev'],
      },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      {
        destination: '/tmp',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'nodev', 'mode=1777', 'size=262144k'],
      },
    ],
    linux: {
      resources: { devices: [{ allow: false, access: 'rwm' }] },
      namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      maskedPaths: [
        '/proc/acpi',
        '/proc/asound',
        '/proc/kcore',
        '/proc/keys',
        '/proc/latency_stats',
        '/proc/timer_list',
        '/proc/timer_stats',
        '/proc/sched_debug',
        '/sys/firmware',
        '/proc/scsi',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

async function lstatOrNull(p: string) {
  try {
    return await lstat(p);
  } catch {
    return null;
  }
}

/**
 * Builds a bundle that runs a host command: the rootfs bind-mounts the host's /usr and /etc read-only,
 * mirrors merged-/usr symlinks (/bin -> usr/bin), and is itself writable; /tmp is a tmpfs.
 */
export async function buildCommandBundle(
  dir: string,
  args: string[],
  hostname: string,
  hostRoot = '/',
): Promise<OciConfig> {
  if (args.length === 0)
    throw new FerryError('FERRY_E_INPUT_ARGS', 'no command given after --', { phase: 'input' });
  const rootfs = join(dir, 'rootfs');
  await mkdir(rootfs, { recursive: true });
  const config = defaultConfig(args, hostname);
  for (const d of ['proc', 'dev', 'sys', 'tmp', 'root', 'run', 'var', 'data'])
    await mkdir(join(rootfs, d), { recursive: true });
  for (const d of HOST_DIRS) {
    await mkdir(join(rootfs, d), { recursive: true });
    config.mounts.push({
      destination: d,
      type: 'bind',
      source: d,
      options: ['rbind', 'ro', 'nosuid', 'nodev'],
    });
  }
  for (const d of MAYBE_LINKED) {
    const st = await lstatOrNull(join(hostRoot, d));
    if (!st) continue;
    if (st.isSymbolicLink()) {
      await symlink(await readlink(join(hostRoot, d)), join(rootfs, d));
    } else if (st.isDirectory()) {
      await mkdir(join(rootfs, d), { recursive: true });
      config.mounts.push({
        destination: d,
        type: 'bind',
        source: d,
        options: ['rbind', 'ro', 'nosuid', 'nodev'],
      });
    }
  }
  await writeConfig(dir, config);
  return config;
}

export async function readConfig(dir: string): Promise<OciConfig> {
  let text: string;
  try {
    text = await readFile(join(dir, 'config.json'), 'utf8');
  } catch (err) {
    throw new FerryError('FERRY_E_BUNDLE_INVALID', `bundle ${dir} has no readable config.json`, {
      cause: err,
      phase: 'input',
    });
  }
  try {
    return JSON.parse(text) as OciConfig;
  } catch (err) {
    throw new FerryError(
      'FERRY_E_BUNDLE_INVALID',
      `bundle config.json is not valid JSON: ${(err as Error).message}`,
      {
        cause: err,
        phase: 'input',
      },
    );
  }
}

export async function writeConfig(dir: string, config: OciConfig): Promise<void> {
  await writeFile(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
}

/** Checks what ferry relies on in a user-supplied bundle; throws FERRY_E_BUNDLE_INVALID with the reason. */
export function validateConfig(config: OciConfig): void {
  const bad = (why: string) =>
    new FerryError('FERRY_E_BUNDLE_INVALID', `invalid bundle: ${why}`, { phase: 'input' });
  if (typeof config !== 'object' || config === null || Array.isArray(config))
    throw bad('config.json is not an object');
  const root = config.root?.path;
  if (typeof root !== 'string' || !root) throw bad('root.path is missing');
  if (isAbsolute(root) || normalize(root).startsWith('..'))
    throw bad('root.path must be a path inside the bundle');
  const args = config.process?.args;
  if (!Array.isArray(args) || args.length === 0 || !args.every((a: unknown) => typeof a === 'string')) {
    throw bad('process.args must be a non-empty list of strings');
  }
  if (!Array.isArray(config.mounts ?? [])) throw bad('mounts must be a list');
  if (config.linux !== undefined && (typeof config.linux !== 'object' || config.linux === null))
    throw bad('linux must be an object');
}

export interface HostPlacement {
  cgroupsPath: string;
  /** 'fresh': a new, empty namespace; 'host': the caller's (the host's); or a namespace path to join. */
  net: 'fresh' | 'host' | { netnsPath: string };
  hostname?: string;
}

/** Adapts a config to this host: own PID namespace, this host's cgroup path, its network namespace. */
export function placeConfig(config: OciConfig, p: HostPlacement): OciConfig {
  const c = structuredClone(config);
  // a terminal belongs to whoever started the container and cannot move between hosts: stdio is /dev/null
  c.process.terminal = false;
  c.linux ??= {};
  c.linux.cgroupsPath = p.cgroupsPath;
  // biome-ignore lint/suspicious/noExplicitAny: OCI namespace entries
  const ns: any[] = (c.linux.namespaces ?? []).filter((n: { type: string }) => n.type !== 'network');
  if (!ns.some((n) => n.type === 'pid')) ns.push({ type: 'pid' });
  if (!ns.some((n) => n.type === 'mount')) ns.push({ type: 'mount' });
  if (p.net === 'fresh') ns.push({ type: 'network' });
  else if (p.net !== 'host') ns.push({ type: 'network', path: p.net.netnsPath });
  c.linux.namespaces = ns;
  if (p.hostname && ns.some((n) => n.type === 'uts')) c.hostname = p.hostname;
  return c;
}
