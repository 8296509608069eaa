// A suite's cleanup that runs once, whether the suite ends or the bench is interrupted (Ctrl-C, or the SIGTERM of a
// test's timeout). Without it an interrupted run leaves what it holds: a testbed with its agents, tap devices,
// files in /dev/shm, a probe client. The next run of the same suite takes its own testbed down first, but nothing
// else would remove the rest.
import { constants } from 'node:os';

export interface Cleanup {
  /** Runs the cleanup (once: a second call waits for the first) and stops listening for signals. */
  run(): Promise<void>;
}

/**
 * Runs `cleanup` on SIGINT or SIGTERM, then exits with 128 + the signal's number, as the shell reports a process
 * killed by it. A second signal during the cleanup ends the process at once (the handler listens once).
 */
export function cleanupOnInterrupt(log: (message: string) => void, cleanup: () => Promise<void>): Cleanup {
  let running: Promise<void> | undefined;
  const once = () => {
    running ??= cleanup();
    return running;
  };
  const onSignal = (signal: NodeJS.Signals) => {
    log(`${signal}: cleaning up before exiting`);
    once()
      .catch((err: Error) => log(`cleanup failed: ${err.message}`))
      .finally(() => process.exit(128 + constants.signals[signal]));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return {
    run() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      return once();
    },
  };
}
