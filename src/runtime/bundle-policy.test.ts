import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FerryError } from '../core/errors.ts';
import type { OciConfig } from './bundle.ts';
import {
  type BundlePolicy,
  bundlePolicyViolations,
  checkBundlePolicy,
  DEFAULT_BUNDLE_POLICY,
  type PolicyContext,
} from './bundle-policy.ts';

let root = '';
let bundleDir = '';
let stateDir = '';
/** The config.json `runc spec` writes (generated for real when runc is installed). */
let spec: OciConfig;

function hasRunc(): boolean {
  try {
    execFileSync('runc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

before(() => {
  root = mkdtempSync(join(tmpdir(), 'ferry-policy-'));
  stateDir = join(root, 'state');
  bundleDir = join(stateDir, 'containers', 'c1', 'bundle');
  mkdirSync(join(bundleDir, 'rootfs'), { recursive: true });
  mkdirSync(join(bundleDir, 'data'));
  symlinkSync('/etc', join(bundleDir, 'etc-link'));
  symlinkSync('/', join(bundleDir, 'root-link'));
  if (hasRunc()) {
    const dir = join(root, 'spec');
    mkdirSync(dir);
    execFileSync('runc', ['spec'], { cwd: dir });
    spec = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  }
});

after(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

function ctx(over: Partial<PolicyContext> = {}): PolicyContext {
  return { bundleDir, protectedPaths: [stateDir], hostNetwork: false, ...over };
}

function policy(over: Partial<BundlePolicy> = {}): BundlePolicy {
  return { ...DEFAULT_BUNDLE_POLICY, ...over };
}

/** runc spec's config with a change applied. */
function specWith(change: (c: OciConfig) => void): OciConfig {
  const c = structuredClone(spec);
  change(c);
  return c;
}

/** The policy refuses `config`, naming `field` and `value` in the message. */
async function refuses(
  config: OciConfig,
  field: string,
  value: string,
  p = policy(),
  c = ctx(),
): Promise<void> {
  await assert.rejects(checkBundlePolicy(config, p, c), (e: unknown) => {
    assert.ok(e instanceof FerryError);
    assert.equal(e.code, 'FERRY_E_BUNDLE_POLICY');
    assert.equal(e.phase, 'input');
    assert.equal(e.status, 400);
    assert.ok(e.message.includes(`${field} ${value}`), `"${field} ${value}" in: ${e.message}`);
    return true;
  });
}

async function passes(config: OciConfig, p = policy(), c = ctx()): Promise<void> {
  assert.deepEqual(await bundlePolicyViolations(config, p, c), []);
}

describe('bundle policy', { skip: !hasRunc() && 'runc is not installed' }, () => {
  it('passes a `runc spec` bundle unchanged', async () => {
    const before = structuredClone(spec);
    await passes(spec);
    assert.deepEqual(spec, before);
  });

  it('passes binds of the bundle own files and tmpfs mounts', async () => {
    await passes(
      specWith((c) => {
        c.mounts.push({ destination: '/data', type: 'bind', source: 'data', options: ['rbind', 'rw'] });
        c.mounts.push({ destination: '/data2', source: join(bundleDir, 'data'), options: ['bind'] });
        c.mounts.push({ destination: '/scratch', type: 'tmpfs', source: 'tmpfs', options: ['size=1m'] });
      }),
    );
  });

  describe('refuses', () => {
    for (const kind of [
      'prestart',
      'createRuntime',
      'createContainer',
      'startContainer',
      'poststart',
      'poststop',
    ])
      it(`hooks.${kind}`, () =>
        refuses(
          specWith((c) => {
            c.hooks = { [kind]: [{ path: '/bin/sh', args: ['sh', '-c', 'id'] }] };
          }),
          `hooks.${kind}[0].path`,
          '/bin/sh',
        ));

    it('the org.criu.config annotation (CRIU action scripts)', () =>
      refuses(
        specWith((c) => {
          c.annotations = { 'org.criu.config': '/tmp/evil.conf', 'com.example.fine': 'yes' };
        }),
        'annotations.org.criu.config',
        '/tmp/evil.conf',
      ));

    it('a root.path that is a symlink out of the bundle', () =>
      refuses(
        specWith((c) => {
          c.root.path = 'root-link';
        }),
        'root.path',
        'root-link',
      ));

    it("a bind of the host's /", () =>
      refuses(
        specWith((c) =>
          c.mounts.push({ destination: '/host', type: 'bind', source: '/', options: ['rbind'] }),
        ),
        'mounts[7].source',
        '/',
      ));

    for (const src of [
      '/etc',
      '/etc/ssl',
      '/root/.ssh',
      '/proc/1',
      '/sys/kernel',
      '/dev/sda',
      '/var/lib/ferry/agent',
      '/run/docker.sock',
      '/var/run/docker.sock',
      '/run/containerd/containerd.sock',
      '/run',
    ])
      it(`a bind of the sensitive host path ${src}`, () =>
        refuses(
          specWith((c) =>
            c.mounts.push({ destination: '/x', type: 'bind', source: src, options: ['rbind'] }),
          ),
          'mounts[7].source',
          src,
          policy({ allowMounts: ['/'] }),
        ));

    it('a bind of a directory that contains a sensitive path, even when allowMounts covers it', () =>
      refuses(
        specWith((c) => c.mounts.push({ destination: '/x', source: '/var', options: ['rbind'] })),
        'mounts[7].source',
        '/var',
        policy({ allowMounts: ['/var'] }),
      ));

    it("a bind of the agent's own state directory", () =>
      refuses(
        specWith((c) =>
          c.mounts.push({ destination: '/x', type: 'bind', source: stateDir, options: ['bind'] }),
        ),
        'mounts[7].source',
        stateDir,
        policy({ allowMounts: [root] }),
      ));

    it('a bind through a symlink in the bundle, or a relative path out of it', async () => {
      await refuses(
        specWith((c) =>
          c.mounts.push({ destination: '/x', type: 'bind', source: 'etc-link', options: ['bind'] }),
        ),
        'mounts[7].source',
        'etc-link',
      );
      await refuses(
        specWith((c) =>
          c.mounts.push({
            destination: '/x',
            type: 'bind',
            source: '../../../../../../../etc',
            options: ['bind'],
          }),
        ),
        'mounts[7].source',
        '../../../../../../../etc',
      );
    });

    it('a bind of a host path not in allowMounts', () =>
      refuses(
        specWith((c) =>
          c.mounts.push({ destination: '/x', type: 'bind', source: '/srv/data', options: ['bind'] }),
        ),
        'mounts[7].source',
        '/srv/data',
      ));

    it('a mount of a host filesystem (not a kernel virtual one)', () =>
      refuses(
        specWith((c) => c.mounts.push({ destination: '/x', type: 'ext4', source: '/dev/sdb1' })),
        'mounts[7].type',
        'ext4',
      ));

    for (const set of ['bounding', 'effective', 'inheritable', 'permitted', 'ambient'])
      it(`process.capabilities.${set} beyond the default set`, () =>
        refuses(
          specWith((c) => {
            c.process.capabilities[set] = [...(c.process.capabilities[set] ?? []), 'CAP_SYS_ADMIN'];
          }),
          `process.capabilities.${set}`,
          'CAP_SYS_ADMIN',
        ));

    it('linux.devices', () =>
      refuses(
        specWith((c) => {
          c.linux.devices = [{ path: '/dev/sda', type: 'b', major: 8, minor: 0 }];
        }),
        'linux.devices[0]',
        '/dev/sda b 8:0',
      ));

    it('device cgroup allow rules beyond the defaults', async () => {
      await refuses(
        specWith((c) => {
          c.linux.resources.devices.push({ allow: true, access: 'rwm' });
        }),
        'linux.resources.devices[1]',
        'allow a *:*',
      );
      await refuses(
        specWith((c) => {
          c.linux.resources.devices.push({ allow: true, type: 'b', major: 8, minor: 0, access: 'rw' });
        }),
        'linux.resources.devices[1]',
        'allow b 8:0',
      );
    });

    it('joining a namespace by path', () =>
      refuses(
        specWith((c) => {
          c.linux.namespaces[0] = { type: 'pid', path: '/proc/1/ns/pid' };
        }),
        'linux.namespaces[0].path',
        '/proc/1/ns/pid',
      ));

    it("sharing the host's ipc or uts namespace", async () => {
      for (const type of ['ipc', 'uts'])
        await refuses(
          specWith((c) => {
            c.linux.namespaces = c.linux.namespaces.filter((n: { type: string }) => n.type !== type);
          }),
          'linux.namespaces',
          type,
        );
    });

    it('host-wide sysctls, and net.* ones with the host network', async () => {
      await refuses(
        specWith((c) => {
          c.linux.sysctl = { 'kernel.panic': '1' };
        }),
        'linux.sysctl.kernel.panic',
        '1',
      );
      await refuses(
        specWith((c) => {
          c.linux.sysctl = { 'vm.overcommit_memory': '1' };
        }),
        'linux.sysctl.vm.overcommit_memory',
        '1',
      );
      const net = specWith((c) => {
        c.linux.sysctl = {
          'net.ipv4.ip_forward': '1',
          'kernel.shmmax': '1000000',
          'fs.mqueue.msg_max': '20',
        };
      });
      await passes(net);
      await refuses(net, 'linux.sysctl.net.ipv4.ip_forward', '1', policy(), ctx({ hostNetwork: true }));
    });

    it('emptied or shortened maskedPaths and readonlyPaths', async () => {
      await refuses(
        specWith((c) => {
          c.linux.maskedPaths = [];
        }),
        'linux.maskedPaths',
        '/proc/acpi /proc/asound',
      );
      await refuses(
        specWith((c) => {
          c.linux.readonlyPaths = c.linux.readonlyPaths.filter((p: string) => p !== '/proc/sys');
        }),
        'linux.readonlyPaths',
        '/proc/sys',
      );
      await refuses(
        specWith((c) => {
          delete c.linux.maskedPaths;
        }),
        'linux.maskedPaths',
        '/proc/acpi',
      );
    });

    it('names every offending field at once', async () => {
      const v = await bundlePolicyViolations(
        specWith((c) => {
          c.hooks = { prestart: [{ path: '/bin/a' }] };
          c.process.capabilities.bounding.push('CAP_NET_ADMIN');
          c.linux.maskedPaths = [];
        }),
        policy(),
        ctx(),
      );
      assert.deepEqual(
        v.map((x) => x.field),
        ['hooks.prestart[0].path', 'process.capabilities.bounding', 'linux.maskedPaths'],
      );
    });
  });

  describe('allows by agent config', () => {
    it('hooks (and the CRIU annotation) with allowHooks', () =>
      passes(
        specWith((c) => {
          c.hooks = { prestart: [{ path: '/bin/true' }] };
          c.annotations = { 'org.criu.config': '/etc/criu.conf' };
        }),
        policy({ allowHooks: true }),
      ));

    it('binds at or under an allowMounts entry', async () => {
      const bind = (src: string) =>
        specWith((c) =>
          c.mounts.push({ destination: '/x', type: 'bind', source: src, options: ['rbind', 'ro'] }),
        );
      await passes(bind('/srv/data'), policy({ allowMounts: ['/srv/data'] }));
      await passes(bind('/srv/data/sub'), policy({ allowMounts: ['/srv/data'] }));
      await refuses(
        bind('/srv/database'),
        'mounts[7].source',
        '/srv/database',
        policy({ allowMounts: ['/srv/data'] }),
      );
      // a sensitive path opens only to an entry that names it
      await passes(bind('/etc/ssl/certs'), policy({ allowMounts: ['/etc/ssl/certs'] }));
      await refuses(
        bind('/etc/ssl/certs'),
        'mounts[7].source',
        '/etc/ssl/certs',
        policy({ allowMounts: ['/'] }),
      );
    });

    it('a host filesystem whose source is in allowMounts', () =>
      passes(
        specWith((c) =>
          c.mounts.push({ destination: '/x', type: 'ext4', source: '/dev/disk/by-label/data' }),
        ),
        policy({ allowMounts: ['/dev/disk/by-label/data'] }),
      ));

    it('capabilities listed in allowCapabilities', () =>
      passes(
        specWith((c) => {
          for (const set of ['bounding', 'effective', 'permitted'])
            c.process.capabilities[set].push('CAP_NET_ADMIN');
        }),
        policy({ allowCapabilities: ['CAP_NET_ADMIN'] }),
      ));

    it('devices and device rules with allowDevices', () =>
      passes(
        specWith((c) => {
          c.linux.devices = [{ path: '/dev/fuse', type: 'c', major: 10, minor: 229 }];
          c.linux.resources.devices.push({ allow: true, type: 'c', major: 10, minor: 229, access: 'rwm' });
        }),
        policy({ allowDevices: true }),
      ));

    it('the standard devices without allowDevices', () =>
      passes(
        specWith((c) => {
          c.linux.devices = [{ path: '/dev/null', type: 'c', major: 1, minor: 3 }];
          c.linux.resources.devices.push({ allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' });
          c.linux.resources.devices.push({ allow: true, type: 'c', major: 136, access: 'rwm' });
        }),
      ));

    it('noNewPrivileges false and no seccomp profile (decided: not refused)', () =>
      passes(
        specWith((c) => {
          c.process.noNewPrivileges = false;
          delete c.linux.seccomp;
        }),
      ));
  });
});
