// The same migration done by hand with runc, CRIU and iproute2 (the recipe and why its order: docs/background.md):
// the baseline ferry is measured against. No agents, no HTTP: commands in the order a careful operator types them.
import { cp, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { announce } from '../src/network/arp.ts';
import { Firewall } from '../src/network/firewall.ts';
import { macFor } from '../src/network/identity.ts';
import { IpNet } from '../src/network/ip.ts';
import { buildCommandBundle, placeConfig, readConfig, writeConfig } from '../src/runtime/bundle.ts';
import type { Runner } from '../src/runtime/exec.ts';
import { Runc } from '../src/runtime/runc.ts';
import type { TestbedState } from '../src/testbed/testbed.ts';

export interface HandContainer {
  name: string;
  ip: string;
  host: string;
}

function hostNs(tb: TestbedState, host: string): string {
  return `${tb.prefix}-${host}`;
}

function ctrNs(tb: TestbedState, host: string, name: string): string {
  return `${tb.prefix}-${host}-h-${name}`;
}

function work(tb: TestbedState, host: string, name: string): string {
  return join('/dev/shm', `ferry-bench-${tb.name}`, host, name);
}

function runcFor(runner: Runner, tb: TestbedState, host: string): Runc {
  return new Runc(runner, { root: join('/dev/shm', `ferry-bench-${tb.name}`, host, 'runc') });
}

/** Runs `argv` in a host's namespace the way an operator would: nsenter --net (never ip netns exec, for runc). */
function inHost(tb: TestbedState, host: string, argv: string[]): string[] {
  return ['nsenter', `--net=/run/netns/${hostNs(tb, host)}`, '--', ...argv];
}

async function wire(
  runner: Runner,
  tb: TestbedState,
  host: string,
  name: string,
  ip: string,
  attached: boolean,
) {
  const net = new IpNet(runner);
  const ns = ctrNs(tb, host, name);
  const veth = `hv${name}`.slice(0, 15);
  await net.delNetns(ns);
  await net.addNetns(ns);
  // create the pair in the host's namespace, move one end into the container's
  await net.addVeth(veth, `${veth}i`, ns, 'eth0', macFor(ip), hostNs(tb, host));
  await net.addAddress('eth0', `${ip}/24`, ns);
  await net.up('eth0', ns);
  await net.setMaster(veth, 'br0', hostNs(tb, host));
  if (attached) await net.up(veth, hostNs(tb, host));
  return { ns, veth };
}

export async function handStart(
  runner: Runner,
  tb: TestbedState,
  host: string,
  name: string,
  ip: string,
  args: string[],
): Promise<HandContainer> {
  const dir = work(tb, host, name);
  await mkdir(dir, { recursive: true });
  const bundle = join(dir, 'bundle');
  await buildCommandBundle(bundle, args, name);
  const { ns } = await wire(runner, tb, host, name, ip, true);
  const cfg = placeConfig(await readConfig(bundle), {
    cgroupsPath: `/${tb.prefix}-${host}/h-${name}`,
    net: { netnsPath: `/run/netns/${ns}` },
  });
  await writeConfig(bundle, cfg);
  const runc = runcFor(runner, tb, host);
  await runner.run(inHost(tb, host, ['runc', '--root', runc.root, 'run', '-d', '--bundle', bundle, name]), {
    stdio: 'null',
  });
  return { name, ip, host };
}

/** The recipe: stage the destination, copy neighbours, dump with TCP, detach, prelock, copy, attach, restore. */
export async function handMigrate(
  runner: Runner,
  tb: TestbedState,
  c: HandContainer,
  to: string,
): Promise<void> {
  const net = new IpNet(runner);
  const fw = new Firewall(runner);
  const from = c.host;
  const srcDir = work(tb, from, c.name);
  const dstDir = work(tb, to, c.name);
  await mkdir(dstDir, { recursive: true });
  // 1. destination namespace with the same IP and MAC, link down; bundle pre-staged
  const { ns: dstNs, veth: dstVeth } = await wire(runner, tb, to, c.name, c.ip, false);
  await cp(join(srcDir, 'bundle'), join(dstDir, 'bundle'), { recursive: true });
  const cfg = placeConfig(await readConfig(join(dstDir, 'bundle')), {
    cgroupsPath: `/${tb.prefix}-${to}/h-${c.name}`,
    net: { netnsPath: `/run/netns/${dstNs}` },
  });
  await writeConfig(join(dstDir, 'bundle'), cfg);
  // 2. neighbours, before the source's carrier goes
  const srcNs = ctrNs(tb, from, c.name);
  const neigh = await net.neighbours('eth0', srcNs);
  for (const n of neigh) await net.setNeighbour('eth0', n, dstNs);
  // 3. dump with established TCP connections (CRIU locks the source namespace)
  const images = join(srcDir, 'images');
  await rm(images, { recursive: true, force: true });
  await mkdir(images, { recursive: true });
  const srcRunc = runcFor(runner, tb, from);
  await runner.run(
    inHost(tb, from, [
      'runc',
      '--root',
      srcRunc.root,
      'checkpoint',
      '--tcp-established',
      '--image-path',
      images,
      '--work-path',
      images,
      c.name,
    ]),
  );
  // 4. detach the source
  await net.down(`hv${c.name}`.slice(0, 15), hostNs(tb, from));
  // 5. lock the destination before it is attached
  await fw.lockNetns(dstNs);
  // 6. copy the images (tmpfs to tmpfs)
  await cp(images, join(dstDir, 'images'), { recursive: true });
  // 7. attach and announce
  await net.up(dstVeth, hostNs(tb, to));
  announce(runner, dstNs, 'eth0', c.ip);
  // 8. restore
  const dstRunc = runcFor(runner, tb, to);
  await runner.run(
    inHost(tb, to, [
      'runc',
      '--root',
      dstRunc.root,
      'restore',
      '-d',
      '--tcp-established',
      '--bundle',
      join(dstDir, 'bundle'),
      '--image-path',
      join(dstDir, 'images'),
      '--work-path',
      join(dstDir, 'images'),
      c.name,
    ]),
    { stdio: 'null' },
  );
  await fw.unlockNetns(dstNs);
  announce(runner, dstNs, 'eth0', c.ip, [50, 150, 300, 500]);
  // source leftovers
  await net.delNetns(srcNs);
  await rm(srcDir, { recursive: true, force: true });
  c.host = to;
}

/**
 * The best recipe by hand, the floor of a switchover: everything the destination needs is staged before the
 * freeze (namespace with the same IP and MAC, link down and locked; bundle; neighbours), the container is paused,
 * CRIU writes its images straight into the destination's directory (one machine: no copy), the source is cut
 * off, the destination attached, restored, unlocked. The freeze runs from the pause to the unlock.
 */
export async function handSwitchover(
  runner: Runner,
  tb: TestbedState,
  c: HandContainer,
  to: string,
): Promise<{ freezeMs: number }> {
  const net = new IpNet(runner);
  const fw = new Firewall(runner);
  const from = c.host;
  const srcDir = work(tb, from, c.name);
  const dstDir = work(tb, to, c.name);
  const images = join(dstDir, 'images');
  await mkdir(images, { recursive: true });
  const { ns: dstNs, veth: dstVeth } = await wire(runner, tb, to, c.name, c.ip, false);
  await cp(join(srcDir, 'bundle'), join(dstDir, 'bundle'), { recursive: true });
  const cfg = placeConfig(await readConfig(join(dstDir, 'bundle')), {
    cgroupsPath: `/${tb.prefix}-${to}/h-${c.name}`,
    net: { netnsPath: `/run/netns/${dstNs}` },
  });
  await writeConfig(join(dstDir, 'bundle'), cfg);
  const srcNs = ctrNs(tb, from, c.name);
  for (const n of await net.neighbours('eth0', srcNs)) await net.setNeighbour('eth0', n, dstNs);
  await fw.lockNetns(dstNs);
  const srcRunc = runcFor(runner, tb, from);
  const dstRunc = runcFor(runner, tb, to);
  const t0 = performance.now();
  await runner.run(inHost(tb, from, ['runc', '--root', srcRunc.root, 'pause', c.name]));
  await runner.run(
    inHost(tb, from, [
      'runc',
      '--root',
      srcRunc.root,
      'checkpoint',
      '--tcp-established',
      '--image-path',
      images,
      '--work-path',
      images,
      c.name,
    ]),
  );
  await net.down(`hv${c.name}`.slice(0, 15), hostNs(tb, from));
  await net.up(dstVeth, hostNs(tb, to));
  announce(runner, dstNs, 'eth0', c.ip);
  await runner.run(
    inHost(tb, to, [
      'runc',
      '--root',
      dstRunc.root,
      'restore',
      '-d',
      '--tcp-established',
      '--bundle',
      join(dstDir, 'bundle'),
      '--image-path',
      images,
      '--work-path',
      images,
      c.name,
    ]),
    { stdio: 'null' },
  );
  await fw.unlockNetns(dstNs);
  const freezeMs = performance.now() - t0;
  announce(runner, dstNs, 'eth0', c.ip, [50, 150, 300, 500]);
  await net.delNetns(srcNs);
  await rm(srcDir, { recursive: true, force: true });
  c.host = to;
  return { freezeMs };
}

export async function handRemove(runner: Runner, tb: TestbedState, c: HandContainer): Promise<void> {
  const runc = runcFor(runner, tb, c.host);
  await runner.run(inHost(tb, c.host, ['runc', '--root', runc.root, 'delete', '-f', c.name]), {
    allowFail: true,
  });
  await new IpNet(runner).delNetns(ctrNs(tb, c.host, c.name));
}

export async function handCleanup(tb: TestbedState): Promise<void> {
  await rm(join('/dev/shm', `ferry-bench-${tb.name}`), { recursive: true, force: true });
}
