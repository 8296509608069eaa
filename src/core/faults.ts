// Test-only fault injection, read once at agent start from the agent config's `faults` (or FERRY_FAULTS, comma-
// separated). For tests only: nothing in a production config should name one. Each entry may end in `@NAME`: it
// then applies to the migrations (or the runs of runc) of container NAME only, so one agent can carry the faults
// of many test cases at once. Three kinds:
// - a named behaviour a module checks with has() (`invalid-bundle`: the destination breaks a received bundle;
//   `criu-fail:dump`, `criu-fail:restore`: runc is handed a CRIU that fails, as a CRIU error would end it (a dump's
//   passes runc's version check and fails the dump itself, inside the freeze);
//   `criu-hang:dump`: the dump goes without the ptrace-only seize a stopped task needs (runtime/stopped-tasks.ts),
//   so a container with a SIGSTOPped task hangs CRIU until the freeze ceiling, as any stuck dump would);
// - `kill-at:POINT`: the agent SIGKILLs itself when it reaches POINT, the way a crash or an OOM kill would end it at
//   that moment (children such as runc and CRIU are not killed, as with a real crash);
// - `hold-at:POINT`: the agent stops at POINT until a test has done its harm (killed an agent, cut the link, filled a
//   disk). It writes `<holdDir>/<POINT>@<NAME>.held` (':' as '_') and waits until that file is gone.
// The points are listed in FAULT_POINTS.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Where `kill-at:` and `hold-at:` can stop an agent. */
export const FAULT_POINTS = [
  /** Source: the plan phase starts (nothing asked of the destination yet). */
  'source:plan',
  /** Source: the destination accepted the prepare (it holds a reservation), the bundle not yet sent. */
  'source:prepare',
  /** Source: pre-copy's rounds are about to start (the bundle is staged on the destination). */
  'source:rounds',
  /** Source: the container is frozen and locked, the final dump about to start (with kill-at: 100 ms into it). */
  'source:checkpoint',
  /** Source: the dump is done, the transfer about to start. */
  'source:transfer',
  /** Source: the restore was asked of the destination (the request is on its way). */
  'source:restore',
  /** Source: the destination reported the container, the commit not yet sent. */
  'source:confirm',
  /** Source: post-copy after the commit, the remaining pages being served. */
  'source:pages',
  /** Destination: the restore was asked, runc restore about to start (with kill-at: 100 ms into it). */
  'dest:restoring',
  /** Destination: the restored copy runs, the restore not yet answered. */
  'dest:restored',
] as const;

export type FaultPoint = (typeof FAULT_POINTS)[number];

/** How long a hold waits for its release at most: a forgotten hold must not stop a migration for good. */
const HOLD_MAX_MS = 120_000;

export class Faults {
  private readonly names: ReadonlySet<string>;
  private readonly die: () => void;
  private readonly holdDir: string | undefined;

  constructor(list: readonly string[] = [], opts: { die?: () => void; holdDir?: string } = {}) {
    this.names = new Set(list);
    this.die = opts.die ?? (() => process.kill(process.pid, 'SIGKILL'));
    this.holdDir = opts.holdDir;
  }

  static none(): Faults {
    return new Faults();
  }

  /** Whether the config names this fault, for every container or for `container`. */
  has(name: string, container?: string): boolean {
    return this.names.has(name) || (container !== undefined && this.names.has(`${name}@${container}`));
  }

  /**
   * Ends the process here when the config asks for `kill-at:point` (after `afterMs`), and waits here while a test
   * holds `hold-at:point` for this container.
   */
  async reach(point: FaultPoint, container?: string, afterMs = 0): Promise<void> {
    if (this.has(`kill-at:${point}`, container)) {
      if (afterMs > 0) setTimeout(this.die, afterMs);
      else this.die();
    }
    if (this.holdDir && this.has(`hold-at:${point}`, container)) {
      mkdirSync(this.holdDir, { recursive: true });
      const file = join(this.holdDir, holdFileName(point, container));
      writeFileSync(file, `${process.pid}\n`);
      const until = Date.now() + HOLD_MAX_MS;
      while (existsSync(file) && Date.now() < until) await new Promise((r) => setTimeout(r, 25));
    }
  }
}

/** The file a hold at `point` for `container` writes (and a test removes to release it). */
export function holdFileName(point: FaultPoint, container?: string): string {
  return `${point.replace(':', '_')}@${container ?? ''}.held`;
}
