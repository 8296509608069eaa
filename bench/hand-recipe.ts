// The same migration done by hand with runc, CRIU and iproute2 (the recipe and why its order: docs/background.md):
// the baseline ferry is measured against. No agents, no HTTP: commands in the order a careful operator types them.
import { cp, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { announce } from '../src/network/arp.ts';
import { macFor } from '../src/network/identity.ts';
import { IpNet } from '../src/network/ip.ts';
import { NetnsLock } from '../src/network/netns-lock.ts';
import { buildCommandBundle, placeConfig, readConfig, writeConfig } from '../src/runtime/bundle.ts';
import { type Runner, startBackground } from '../src/runtime/exec.ts';
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

/**
 * A namespace on `host`'s bridge with `ip` and its MAC, for a container another runtime starts (Podman's
 * `--network ns:PATH`): the same wiring the recipe's containers get. Removed by handRemoveNetns.
 */
export async function handNetns(runner: Runner, tb: TestbedState, host: string, name: string, ip: string) {
  const { ns } = await wire(runner, tb, host, name, ip, true);
  return `/run/netns/${ns}`;
}

export async function handRemoveNetns(runner: Runner, tb: TestbedState, host: string, name: string) {
  await new IpNet(runner).delNetns(ctrNs(tb, host, name));
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

/** How long the recipe's three steps took, from the start of the dump. */
export interface HandTimings {
  dumpMs: number;
  copyMs: number;
  restoreMs: number;
}

/** The recipe: stage the destination, copy neighbours, dump with TCP, detach, prelock, copy, attach, restore. */
export async function handMigrate(
  runner: Runner,
  tb: TestbedState,
  c: HandContainer,
  to: string,
): Promise<HandTimings> {
  const net = new IpNet(runner);
  const lock = new NetnsLock(runner);
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
  const t0 = performance.now();
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
  const t1 = performance.now();
  // 4. detach the source
  await net.down(`hv${c.name}`.slice(0, 15), hostNs(tb, from));
  // 5. lock the destination before it is attached
  await lock.lock(dstNs);
  // 6. copy the images (tmpfs to tmpfs)
  await cp(images, join(dstDir, 'images'), { recursive: true });
  const t2 = performance.now();
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
  await lock.unlock(dstNs);
  const t3 = performance.now();
  announce(runner, dstNs, 'eth0', c.ip, [50, 150, 300, 500]);
  // source leftovers
  await net.delNetns(srcNs);
  await rm(srcDir, { recursive: true, force: true });
  c.host = to;
  return { dumpMs: t1 - t0, copyMs: t2 - t1, restoreMs: t3 - t2 };
}

export interface DumpRestoreOptions {
  /** Where the images go: tmpfs or a disk-backed directory. */
  images: string;
  /** Pages to CRIU's page server on another host (the rest of the images stay local, merged before the restore). */
  pageServer?: { host: string; port: number };
  /** How long the container stays dumped before it is restored. */
  stoppedMs?: number;
}

/**
 * CRIU by itself, on one host: the container is dumped (it stops; established TCP connections with it), stays
 * stopped for a while, and is restored in place from the same images. What a migration costs before any network.
 */
export async function handDumpRestore(
  runner: Runner,
  tb: TestbedState,
  c: HandContainer,
  o: DumpRestoreOptions,
): Promise<{ dumpMs: number; restoreMs: number }> {
  const runc = runcFor(runner, tb, c.host);
  await rm(o.images, { recursive: true, force: true });
  await mkdir(o.images, { recursive: true });
  let server: { stop: () => Promise<unknown> } | undefined;
  let served: string | undefined;
  const extra: string[] = [];
  if (o.pageServer) {
    served = `${o.images}-served`;
    await rm(served, { recursive: true, force: true });
    await mkdir(served, { recursive: true });
    const host = tb.hosts.find((h) => h.name === o.pageServer!.host)!;
    // one connection, then it exits: started before each dump
    server = startBackground(
      inHost(tb, host.name, [
        'criu',
        'page-server',
        '--images-dir',
        served,
        '--port',
        String(o.pageServer.port),
        '--address',
        host.address,
      ]),
    );
    // a test connection would be the one connection it serves: look for the listening socket instead
    for (let i = 0; ; i++) {
      const ss = await runner.run(inHost(tb, host.name, ['ss', '-ltnH', `sport = :${o.pageServer.port}`]));
      if (ss.stdout.trim()) break;
      if (i > 200) throw new Error(`criu page-server on ${host.name} did not listen`);
      await new Promise((r) => setTimeout(r, 100));
    }
    extra.push('--page-server', `${host.address}:${o.pageServer.port}`);
  }
  const t0 = performance.now();
  await runner.run(
    inHost(tb, c.host, [
      'runc',
      '--root',
      runc.root,
      'checkpoint',
      '--tcp-established',
      ...extra,
      '--image-path',
      o.images,
      '--work-path',
      o.images,
      c.name,
    ]),
  );
  const dumpMs = performance.now() - t0;
  if (server) await server.stop().catch(() => {});
  if (served) {
    await cp(served, o.images, { recursive: true });
    await rm(served, { recursive: true, force: true });
  }
  if (o.stoppedMs) await new Promise((r) => setTimeout(r, o.stoppedMs));
  const t1 = performance.now();
  await runner.run(
    inHost(tb, c.host, [
      'runc',
      '--root',
      runc.root,
      'restore',
      '-d',
      '--tcp-established',
      '--bundle',
      join(work(tb, c.host, c.name), 'bundle'),
      '--image-path',
      o.images,
      '--work-path',
      o.images,
      c.name,
    ]),
    { stdio: 'null' },
  );
  const restoreMs = performance.now() - t1;
  await rm(o.images, { recursive: true, force: true });
  return { dumpMs, restoreMs };
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
  const lock = new NetnsLock(runner);
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
  await lock.lock(dstNs);
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
  await lock.unlock(dstNs);
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
  // its bundle and images, in the hosts' shared tmpfs: a 1 GiB container's pages stayed there, run after run, and
  // the memory they took slowed every later move of that size (cold's 1 GiB freeze grew from 3.8 to 9.9 s)
  await rm(work(tb, c.host, c.name), { recursive: true, force: true });
}

export async function handCleanup(tb: TestbedState): Promise<void> {
  await rm(join('/dev/shm', `ferry-bench-${tb.name}`), { recursive: true, force: true });
}
