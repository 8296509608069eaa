// What an uploaded OCI bundle may ask of the host. runc does what config.json says, as root: hooks run on the
// host, a bind mount can hand the container the host's `/`, capabilities, devices and namespace paths can undo
// the isolation. This policy refuses all of that unless the agent's operator allows it (`bundlePolicy` in the
// agent config); a bundle as `runc spec` makes it passes unchanged. docs/bundle-policy.md is the user's view.
import { realpath } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, normalize } from 'node:path';
import { FerryError } from '../core/errors.ts';
import type { OciConfig } from './bundle.ts';

export interface BundlePolicy {
  /** Let `hooks` (and the `org.criu.config` annotation, whose CRIU config can run action scripts) through. */
  allowHooks: boolean;
  /** Host paths (absolute) a bind mount may come from, with everything under them. */
  allowMounts: string[];
  /** Capabilities allowed beyond the default set (`CAP_` names). */
  allowCapabilities: string[];
  /** Let `linux.devices` and device cgroup allow rules beyond the defaults through. */
  allowDevices: boolean;
}

export const DEFAULT_BUNDLE_POLICY: BundlePolicy = Object.freeze({
  allowHooks: false,
  allowMounts: [],
  allowCapabilities: [],
  allowDevices: false,
}) as BundlePolicy;

/** The capabilities `runc spec` gives a container. */
export const DEFAULT_BUNDLE_CAPABILITIES = ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'];

/**
 * Host paths no bind mount may expose: not at or under them, and not from a directory that contains one (a bind
 * of `/var` hands over `/var/lib/ferry`). An `allowMounts` entry opens one only if it names that path or a path
 * under it; a broader entry (`/`, `/var`) does not.
 */
export const SENSITIVE_HOST_PATHS = [
  '/etc',
  '/root',
  '/proc',
  '/sys',
  '/dev',
  '/boot',
  '/run', // runtime sockets and secrets: docker, containerd, systemd, the netns files
  '/var/run',
  '/var/lib/ferry',
  '/var/lib/docker',
  '/var/lib/containerd',
  '/var/run/docker.sock',
  '/run/docker.sock',
  '/run/containerd/containerd.sock',
];

/** Mount types for kernel filesystems private to the container, as `runc spec` makes them; no host data. */
const VIRTUAL_MOUNT_TYPES = new Set(['proc', 'sysfs', 'devpts', 'mqueue', 'tmpfs', 'cgroup', 'cgroup2']);

/** `runc spec`'s masked and read-only paths: a bundle may add to them, never drop one. */
const DEFAULT_MASKED_PATHS = [
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
];
const DEFAULT_READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/**
 * Devices runc creates in every container anyway (and allows in the device cgroup): listing them is harmless.
 * type, major, minor; minor undefined means any (the pseudo-terminals).
 */
const DEFAULT_DEVICES: { path?: string; type: string; major: number; minor?: number }[] = [
  { path: '/dev/null', type: 'c', major: 1, minor: 3 },
  { path: '/dev/zero', type: 'c', major: 1, minor: 5 },
  { path: '/dev/full', type: 'c', major: 1, minor: 7 },
  { path: '/dev/random', type: 'c', major: 1, minor: 8 },
  { path: '/dev/urandom', type: 'c', major: 1, minor: 9 },
  { path: '/dev/tty', type: 'c', major: 5, minor: 0 },
  { path: '/dev/console', type: 'c', major: 5, minor: 1 },
  { path: '/dev/ptmx', type: 'c', major: 5, minor: 2 },
  { type: 'c', major: 136 }, // /dev/pts/*
];

/** sysctls that live in the container's own namespaces (what runc itself would accept). */
function namespacedSysctl(key: string, hostNetwork: boolean): boolean {
  if (/^kernel\.(shm[a-z_]+|msg[a-z_]+|sem)$/.test(key) || key.startsWith('fs.mqueue.')) return true;
  // in the host's network namespace a net.* sysctl is the host's
  return key.startsWith('net.') && !hostNetwork;
}

export interface PolicyContext {
  /** The bundle's directory on this host (relative mount sources and root.path resolve against it). */
  bundleDir: string;
  /** The agent's own directories (state, images, runc root, TLS material): never mountable. */
  protectedPaths: string[];
  /** The container shares the host's network namespace (`--net host`). */
  hostNetwork: boolean;
}

export interface PolicyViolation {
  field: string;
  value: unknown;
  reason: string;
}

function under(path: string, base: string): boolean {
  return path === base || path.startsWith(base === '/' ? '/' : `${base}/`);
}

/** realpath of a path that may not exist (yet): the longest existing prefix resolved, the rest appended. */
async function resolvePath(path: string): Promise<string> {
  const p = normalize(path);
  try {
    return await realpath(p);
  } catch {
    const parent = dirname(p);
    if (parent === p) return p;
    return join(await resolvePath(parent), basename(p));
  }
}

function isBind(m: { type?: unknown; options?: unknown }): boolean {
  const opts = Array.isArray(m.options) ? m.options : [];
  return m.type === 'bind' || m.type === 'rbind' || opts.includes('bind') || opts.includes('rbind');
}

function show(v: unknown): string {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** Everything in `config` the policy refuses (empty: the bundle may run). */
export async function bundlePolicyViolations(
  config: OciConfig,
  policy: BundlePolicy,
  ctx: PolicyContext,
): Promise<PolicyViolation[]> {
  const out: PolicyViolation[] = [];
  const refuse = (field: string, value: unknown, reason: string) => out.push({ field, value, reason });
  const only = (key: string) => ` (only bundlePolicy.${key} in the agent config allows it)`;
  const bundle = await resolvePath(ctx.bundleDir);

  // --- hooks: run as root on the host, outside every namespace
  const hooks = config.hooks;
  if (hooks !== undefined && hooks !== null && !policy.allowHooks) {
    if (typeof hooks !== 'object' || Array.isArray(hooks)) refuse('hooks', hooks, 'hooks must be an object');
    else
      for (const [kind, list] of Object.entries(hooks)) {
        if (!Array.isArray(list)) {
          refuse(`hooks.${kind}`, list, `hooks run as root on the host${only('allowHooks')}`);
          continue;
        }
        list.forEach((h: { path?: unknown }, i: number) => {
          refuse(`hooks.${kind}[${i}].path`, h?.path, `hooks run as root on the host${only('allowHooks')}`);
        });
      }
  }
  const criuConfig = config.annotations?.['org.criu.config'];
  if (criuConfig !== undefined && !policy.allowHooks)
    refuse(
      'annotations.org.criu.config',
      criuConfig,
      `a CRIU configuration can run action scripts as root on the host${only('allowHooks')}`,
    );

  // --- root filesystem: lexically inside the bundle (validateConfig), and no symlink out of it
  if (typeof config.root?.path === 'string') {
    const root = await resolvePath(join(ctx.bundleDir, config.root.path));
    if (!under(root, bundle))
      refuse('root.path', config.root.path, `resolves to ${root} on the host, outside the bundle`);
  }

  // --- mounts
  const sensitive = [
    ...SENSITIVE_HOST_PATHS,
    ...(await Promise.all(ctx.protectedPaths.flatMap((p) => [normalize(p), resolvePath(p)]))),
  ];
  const allowed = await Promise.all(policy.allowMounts.map((p) => resolvePath(p)));
  const mounts: unknown[] = Array.isArray(config.mounts) ? config.mounts : [];
  for (const [i, raw] of mounts.entries()) {
    const m = (raw ?? {}) as { type?: unknown; source?: unknown; destination?: unknown; options?: unknown };
    const field = `mounts[${i}]`;
    if (!isBind(m)) {
      if (typeof m.type === 'string' && VIRTUAL_MOUNT_TYPES.has(m.type)) continue;
      const src =
        typeof m.source === 'string' && isAbsolute(m.source) ? await resolvePath(m.source) : undefined;
      if (src && allowed.some((a) => under(src, a))) continue;
      refuse(
        `${field}.type`,
        m.type,
        `only binds and the kernel filesystems ${[...VIRTUAL_MOUNT_TYPES].join(', ')} may be mounted ` +
          `(source ${show(m.source)})${only('allowMounts')}`,
      );
      continue;
    }
    if (typeof m.source !== 'string' || m.source === '') {
      refuse(`${field}.source`, m.source, 'a bind mount needs a source path');
      continue;
    }
    // runc takes a relative bind source as relative to the bundle
    const src = await resolvePath(isAbsolute(m.source) ? m.source : join(ctx.bundleDir, m.source));
    if (under(src, bundle)) continue; // the bundle's own files
    const at = src === m.source ? '' : ` (resolves to ${src})`;
    if (src === '/') {
      refuse(`${field}.source`, m.source, `binds the host's root directory${at}`);
      continue;
    }
    const entry = allowed.find((a) => under(src, a));
    // an allowMounts entry opens a sensitive path only by naming it (or a path under it)
    const hit = sensitive.find((s) => (under(src, s) || under(s, src)) && !(entry && under(entry, s)));
    if (hit && under(src, hit))
      refuse(
        `${field}.source`,
        m.source,
        `is the sensitive host path ${hit}${at} (only an allowMounts entry at or under ${hit} in the agent ` +
          `config allows it)`,
      );
    else if (hit)
      refuse(
        `${field}.source`,
        m.source,
        `contains the sensitive host path ${hit}${at} (never allowed: bind a directory that does not contain it)`,
      );
    else if (!entry) refuse(`${field}.source`, m.source, `binds a host path${at}${only('allowMounts')}`);
  }

  // --- capabilities
  const caps = config.process?.capabilities;
  if (caps !== undefined && caps !== null) {
    const ok = new Set([...DEFAULT_BUNDLE_CAPABILITIES, ...policy.allowCapabilities]);
    for (const set of ['bounding', 'effective', 'inheritable', 'permitted', 'ambient']) {
      const list: unknown = caps[set];
      if (list === undefined) continue;
      if (!Array.isArray(list)) {
        refuse(`process.capabilities.${set}`, list, 'must be a list of capability names');
        continue;
      }
      for (const c of list)
        if (typeof c !== 'string' || !ok.has(c))
          refuse(
            `process.capabilities.${set}`,
            c,
            `beyond the default set ${DEFAULT_BUNDLE_CAPABILITIES.join(', ')}${only('allowCapabilities')}`,
          );
    }
  }

  // --- devices
  if (!policy.allowDevices) {
    const devices: unknown[] = Array.isArray(config.linux?.devices) ? config.linux.devices : [];
    for (const [i, d] of devices.entries()) {
      const dev = (d ?? {}) as { path?: unknown; type?: unknown; major?: unknown; minor?: unknown };
      const std = DEFAULT_DEVICES.some(
        (s) =>
          s.path !== undefined &&
          s.path === dev.path &&
          s.type === dev.type &&
          s.major === dev.major &&
          s.minor === dev.minor,
      );
      if (!std)
        refuse(
          `linux.devices[${i}]`,
          `${show(dev.path)} ${show(dev.type)} ${show(dev.major)}:${show(dev.minor)}`,
          `a host device in the container${only('allowDevices')}`,
        );
    }
    const rules: unknown[] = Array.isArray(config.linux?.resources?.devices)
      ? config.linux.resources.devices
      : [];
    for (const [i, r] of rules.entries()) {
      const rule = (r ?? {}) as { allow?: unknown; type?: unknown; major?: unknown; minor?: unknown };
      if (rule.allow !== true) continue;
      const std = DEFAULT_DEVICES.some(
        (s) =>
          s.type === rule.type &&
          s.major === rule.major &&
          (s.minor === undefined ? rule.minor === undefined || rule.minor === -1 : s.minor === rule.minor),
      );
      if (!std)
        refuse(
          `linux.resources.devices[${i}]`,
          `allow ${show(rule.type ?? 'a')} ${show(rule.major ?? '*')}:${show(rule.minor ?? '*')}`,
          `opens host devices beyond the defaults${only('allowDevices')}`,
        );
    }
  }

  // --- namespaces: the container's own, never the host's
  const namespaces: unknown[] = Array.isArray(config.linux?.namespaces) ? config.linux.namespaces : [];
  for (const [i, n] of namespaces.entries()) {
    const ns = (n ?? {}) as { type?: unknown; path?: unknown };
    if (ns.path !== undefined && ns.path !== '')
      refuse(`linux.namespaces[${i}].path`, ns.path, `joins an existing ${show(ns.type)} namespace`);
  }
  for (const type of ['ipc', 'uts'])
    if (!namespaces.some((n) => (n as { type?: unknown })?.type === type))
      refuse('linux.namespaces', type, `missing: the container would share the host's ${type} namespace`);

  // --- sysctls: only those that live in the container's own namespaces
  const sysctl = config.linux?.sysctl;
  if (sysctl !== undefined && sysctl !== null) {
    for (const [key, value] of Object.entries(sysctl as Record<string, unknown>))
      if (!namespacedSysctl(key, ctx.hostNetwork))
        refuse(`linux.sysctl.${key}`, value, "a host-wide kernel setting, not the container's own");
  }

  // --- masked and read-only paths: runc spec's, at least
  for (const [key, defaults] of [
    ['maskedPaths', DEFAULT_MASKED_PATHS],
    ['readonlyPaths', DEFAULT_READONLY_PATHS],
  ] as const) {
    const list: unknown = config.linux?.[key];
    const have = new Set(Array.isArray(list) ? list : []);
    const missing = defaults.filter((p) => !have.has(p));
    if (missing.length > 0)
      refuse(
        `linux.${key}`,
        missing.join(' '),
        `drops runc's defaults, exposing host information in /proc and /sys`,
      );
  }
  return out;
}

/** Throws FERRY_E_BUNDLE_POLICY (phase input) naming every refused field and value; resolves if none. */
export async function checkBundlePolicy(
  config: OciConfig,
  policy: BundlePolicy,
  ctx: PolicyContext,
): Promise<void> {
  const violations = await bundlePolicyViolations(config, policy, ctx);
  if (violations.length === 0) return;
  const text = violations.map((v) => `${v.field} ${show(v.value)}: ${v.reason}`).join('; ');
  throw new FerryError('FERRY_E_BUNDLE_POLICY', `bundle refused by this host's policy: ${text}`, {
    phase: 'input',
    hint: 'docs/bundle-policy.md lists what a bundle may ask for and how the agent config allows exceptions',
    details: { violations },
  });
}
