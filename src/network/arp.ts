// Gratuitous ARP: tells the LAN (bridges' forwarding tables, neighbours' caches) where an address now lives.
import { type Runner, startSession } from '../runtime/exec.ts';

function arpingArgv(dev: string, address: string): string[] {
  return ['busybox', 'arping', '-U', '-c', '1', '-w', '1', '-I', dev, '-s', address, address];
}

function inNetns(ns: string | undefined, argv: string[]): string[] {
  return ns ? ['nsenter', `--net=/run/netns/${ns}`, '--', ...argv] : argv;
}

function arping(runner: Runner, ns: string | undefined, dev: string, address: string): void {
  void runner
    .run(inNetns(ns, arpingArgv(dev, address)), { allowFail: true, timeoutMs: 1500 })
    .catch(() => {});
}

/** Announces now and again after each delay (ms); never waits: an announcement must not slow a restore. */
export function announce(
  runner: Runner,
  ns: string | undefined,
  dev: string,
  address: string,
  repeatsMs: number[] = [],
): void {
  arping(runner, ns, dev, address);
  for (const ms of repeatsMs) setTimeout(() => arping(runner, ns, dev, address), ms).unref();
}

export interface StagedAnnouncement {
  /** Sends it (does not wait for it). */
  fire(): void;
  drop(): void;
}

/**
 * An announcement spawned ahead of time: `fire()` only writes a line to a shell waiting for it, so it goes out
 * within a millisecond (at the start of a held switchover, each millisecond before it can cost a packet).
 */
export function stageAnnouncement(ns: string | undefined, dev: string, address: string): StagedAnnouncement {
  const session = startSession(
    inNetns(ns, ['sh', '-c', 'read x && exec "$@"', 'sh', ...arpingArgv(dev, address)]),
  );
  return {
    fire: () => void session.finish('go\n').catch(() => {}),
    drop: () => session.kill(),
  };
}
