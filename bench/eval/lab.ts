// The bench's testbed as the evaluation suites use it: simulated hosts, the typed clients, the CLI against the
// testbed's cluster, containers that hold memory, a probe client and migrations. Every suite brings one up under
// its own name and always takes it down.
import { ClusterClients } from '../../src/api/cluster-clients.ts';
import type { MigrationOptions, MigrationReport } from '../../src/api/types.ts';
import type { ProbeSummary } from '../../src/probe/cli.ts';
import { type ExecResult, ProcessRunner } from '../../src/runtime/exec.ts';
import { type TestbedState, testbedDown, testbedUp, type UpOptions } from '../../src/testbed/testbed.ts';
import { ballastServerArgs, REDIS_SERVER_ARGS } from '../../src/workloads/servers.ts';
import { probe, probeConnected, probeReplying, sleep, waitForPort } from '../common.ts';
import { handCleanup } from '../hand-recipe.ts';

export const PORT = 7000;

/**
 * The TCP line counter holding `mib` MiB of random bytes (incompressible, no zero pages), filled in 16 MiB steps
 * so that a large ballast never needs twice its size.
 */
export function ballastServer(mib: number): string[] {
  return ballastServerArgs(mib, PORT);
}

/** Redis from the host's package, on the container's own address, no persistence (its memory is the state). */
export const REDIS = [...REDIS_SERVER_ARGS];

export interface Lab {
  tb: TestbedState;
  ctx: ClusterClients;
  runner: ProcessRunner;
  ferryArgv: string[];
  /** A --quick run: the probe's warm-up and wind-down are cut short (probed). */
  quick: boolean;
  /** A fresh container address on the testbed's LAN (never the same twice in one lab). */
  nextIp(): string;
  /** `ferry ARGS` against the testbed's cluster, as a user types it. */
  ferry(args: string[], allowFail?: boolean): Promise<ExecResult>;
  /** A command in the client's namespace (the LAN, outside every host). */
  client(argv: string[], allowFail?: boolean): Promise<ExecResult>;
  down(): Promise<void>;
}

export async function labUp(
  name: string,
  opts: Omit<UpOptions, 'name'>,
  ferryArgv: string[],
  log: (m: string) => void,
  quick = false,
): Promise<Lab> {
  const runner = new ProcessRunner();
  const deps = { runner, ferryArgv, log: (m: string) => log(`testbed: ${m}`) };
  await testbedDown(name, deps).catch(() => {});
  const tb = await testbedUp({ name, ...opts }, deps);
  const ctx = await ClusterClients.load(tb.clusterFile);
  let n = 0;
  return {
    tb,
    ctx,
    runner,
    ferryArgv,
    quick,
    nextIp: () => `${tb.subnet}.${40 + (n++ % 180)}`,
    ferry: (args, allowFail) =>
      runner.run([...ferryArgv, '--cluster', tb.clusterFile, ...args], {
        label: `ferry ${args[0]}`,
        ...(allowFail ? { allowFail } : {}),
      }),
    client: (argv, allowFail) =>
      runner.run(['ip', 'netns', 'exec', tb.client.netns, ...argv], allowFail ? { allowFail } : {}),
    async down() {
      ctx.close();
      await handCleanup(tb);
      await testbedDown(name, deps);
    },
  };
}

/** Starts a container on `host` and waits until it accepts connections on `port`. */
export async function startContainer(
  lab: Lab,
  host: string,
  name: string,
  command: string[],
  port = PORT,
): Promise<string> {
  const ip = lab.nextIp();
  await lab.ctx.client(host).create({ name, command, net: 'own', ip });
  await waitForPort(ip, port, 180_000);
  return ip;
}

export async function removeContainer(lab: Lab, host: string, name: string): Promise<void> {
  await lab.ctx
    .client(host)
    .remove(name)
    .catch(() => {});
}

export function migrate(
  lab: Lab,
  name: string,
  from: string,
  to: string,
  opts: Omit<MigrationOptions, 'strategy'> & { strategy: MigrationOptions['strategy'] },
): Promise<MigrationReport> {
  return lab.ctx.client(from).migrate(name, { to: lab.ctx.host(to), ...opts });
}

/**
 * Runs `during` while a probe client sends a request every 2 ms on one connection to `target`; the downtime is
 * the longest gap between replies. The probe is connected and warm before, and given time after for a client in
 * TCP's retransmission backoff to come back (twice the longest freeze `during` reports, at least 1.5 s). A
 * --quick lab (a smoke run, not a measurement) warms up for a moment only and stops the probe as soon as its
 * connection gets replies again, within that same time.
 */
export async function probed<T>(
  lab: Lab,
  kind: 'tcp' | 'redis',
  target: string,
  during: () => Promise<T>,
  freezeOf: (t: T) => number,
): Promise<{ value: T; probe: ProbeSummary }> {
  const p = probe(lab.ferryArgv, lab.tb.clusterFile, kind, target, 120_000);
  try {
    await probeConnected(lab.tb.client.netns, target);
    await sleep(lab.quick ? 200 : 2000);
  } catch (err) {
    await p.stop().catch(() => {});
    throw err;
  }
  let value: T;
  try {
    value = await during();
  } catch (err) {
    await p.stop().catch(() => {});
    throw err;
  }
  const f = freezeOf(value);
  const settle = Math.max(1500, 2 * (Number.isFinite(f) ? f : 0) + 1500);
  if (lab.quick) await probeReplying(lab.tb.client.netns, target, settle);
  else await sleep(settle);
  return { value, probe: await p.stop() };
}

/** A phase's time in a migration report (0 when the strategy has no such phase). */
export function phaseMs(r: MigrationReport, phase: string): number {
  return r.phases.filter((p) => p.name === phase).reduce((a, p) => a + p.ms, 0);
}

/** Whether the probe saw the connection survive: no reset, no error. */
export const intact = (p: ProbeSummary) => p.resets === 0 && p.errors === 0;
