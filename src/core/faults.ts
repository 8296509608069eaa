// Test-only fault injection, read once at agent start from the agent config's `faults` (or FERRY_FAULTS, comma-
// separated). Two kinds:
// - a named behaviour a module checks with has() (e.g. `invalid-bundle`: the destination breaks a received bundle);
// - `kill-at:POINT`: the agent SIGKILLs itself when it reaches POINT, the way a crash or an OOM kill would end it at
//   that moment (children such as runc and CRIU are not killed, as with a real crash). The points are listed in
//   FAULT_POINTS. For tests only: nothing in a production config should name one.

/** Where `kill-at:` can end an agent. */
export const FAULT_POINTS = [
  /** Source: CRIU's final dump is under way (the agent dies 100 ms after it started). */
  'source:checkpoint',
  /** Source: the dump is done, the transfer about to start. */
  'source:transfer',
  /** Source: the restore was asked of the destination (the request is on its way). */
  'source:restore',
  /** Destination: runc restore is running. */
  'dest:restoring',
  /** Destination: the restored copy runs, the restore not yet answered. */
  'dest:restored',
] as const;

export type FaultPoint = (typeof FAULT_POINTS)[number];

export class Faults {
  private readonly names: ReadonlySet<string>;
  private readonly die: () => void;

  constructor(list: readonly string[] = [], die: () => void = () => process.kill(process.pid, 'SIGKILL')) {
    this.names = new Set(list);
    this.die = die;
  }

  static none(): Faults {
    return new Faults();
  }

  has(name: string): boolean {
    return this.names.has(name);
  }

  /** Ends the process here when the config asks for `kill-at:point`. */
  reach(point: FaultPoint, afterMs = 0): void {
    if (!this.names.has(`kill-at:${point}`)) return;
    if (afterMs > 0) setTimeout(this.die, afterMs);
    else this.die();
  }
}
