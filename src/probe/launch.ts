// Where and how a probe runs: inside the testbed's client namespace (the probe must see what a client on the LAN
// sees), in the background of a demo or a benchmark (a `ferry probe` process stopped with SIGINT), and after the
// server it probes has started.
import { waitForPort } from '../network/port.ts';
import { startBackground } from '../runtime/exec.ts';
import { runInNetns } from '../runtime/netns-exec.ts';
import type { ProbeSummary } from './cli.ts';

/** Runs `argv` (ferry probe again) inside a network namespace, signals and stdio passed through; its exit code. */
export function runInClientNetns(netns: string, argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return runInNetns(netns, argv, env);
}

/** Waits until the probed server accepts connections. */
export function waitForServer(address: string, port: number, timeoutMs?: number): Promise<void> {
  return waitForPort(address, port, timeoutMs);
}

export interface BackgroundProbe {
  /** Stops the probe (SIGINT) and reads its summary. */
  stop(): Promise<ProbeSummary>;
}

/** `ferry probe KIND TARGET --json` in the background, as a user runs it (it enters the client namespace itself). */
export function startProbeProcess(
  ferryArgv: string[],
  clusterFile: string,
  kind: string,
  target: string,
  opts: { intervalMs?: number; replyTimeoutMs?: number } = {},
): BackgroundProbe {
  const p = startBackground([
    ...ferryArgv,
    '--cluster',
    clusterFile,
    'probe',
    kind,
    target,
    ...(opts.intervalMs !== undefined ? ['--interval', String(opts.intervalMs)] : []),
    ...(opts.replyTimeoutMs !== undefined ? ['--reply-timeout', String(opts.replyTimeoutMs)] : []),
    '--json',
  ]);
  return {
    async stop() {
      const out = await p.stop('SIGINT');
      try {
        return JSON.parse(out.stdout.trim().split('\n').pop() ?? '') as ProbeSummary;
      } catch {
        throw new Error(`probe printed no result: ${out.stderr.trim()}`);
      }
    },
  };
}
