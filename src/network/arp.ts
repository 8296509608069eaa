// Gratuitous ARP: tells the LAN (bridges' forwarding tables, neighbours' caches) where an address now lives.
import type { Runner } from '../runtime/exec.ts';

function arping(runner: Runner, ns: string | undefined, dev: string, address: string): void {
  const argv = ['busybox', 'arping', '-U', '-c', '1', '-w', '1', '-I', dev, '-s', address, address];
  const full = ns ? ['nsenter', `--net=/run/netns/${ns}`, '--', ...argv] : argv;
  void runner.run(full, { allowFail: true, timeoutMs: 1500 }).catch(() => {});
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
