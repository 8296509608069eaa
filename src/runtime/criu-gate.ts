// A dump whose runc starts before the freeze and whose CRIU starts at its release. runc's own work around a dump,
// about 50 ms on this project's test machine, is its start, reading its state and a first CRIU that only asks
// CRIU's version (runc asks on every run, before anything else); only then does it write the dump's
// `descriptors.json` into the image directory and start the dump's CRIU. Staged, all of that is behind it when the
// container freezes.
//
// runc runs a gate as its CRIU: a short bash script named `criu` in a private directory put first in runc's PATH
// (runtime/criu-path.ts: runc 1.1 to 1.4 all find CRIU there; none is given `--criu`). A CRIU started before
// `descriptors.json` exists (the version check) runs the real CRIU, by the absolute path resolved at agent start,
// at once; the first started after waits for a word (one character) in a FIFO beside the script. So no dump's CRIU starts
// before the release for any runc that writes `descriptors.json` before starting the dump's CRIU, as runc 1.1 to
// 1.4 do; a runc that found the file already there could not be told apart, which is why a gate is refused then.
// The same script, not holding, is the test-only fault `criu-fail:dump`: the version check passes, the dump's CRIU
// fails, as a real CRIU error would end it.
//
// A restore is staged the same way (the destination's runc starts before the freeze). Its mark is not
// `descriptors.json`, which runc restore reads before it starts the restore's CRIU, but the directory `criu-root` in
// the container's state directory: runc 1.1 to 1.4 make it after the version check and before the restore's CRIU
// (they bind-mount the root file system there for CRIU), and remove it when the restore ends.
import { constants, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FerryError } from '../core/errors.ts';
import { sweepAgentDirs } from './criu-path.ts';
import type { RunControl, Runner } from './exec.ts';

/** A dump staged ahead of the freeze. */
export interface StagedCheckpoint {
  /**
   * The freeze has begun: CRIU dumps now. Resolves or fails as the dump does; `ms` counts from the release.
   * `timeoutMs`: the dump's deadline, counted from now (what is left of the freeze ceiling), not from the staging.
   */
  go(timeoutMs?: number): Promise<{ ms: number }>;
  /**
   * Not needed after all (the migration stopped before its dump): runc ends without its CRIU having dumped, and has
   * ended when this resolves (past CANCEL_WAIT_MS its process group is killed), so nothing of it writes on.
   */
  cancel(): Promise<void>;
}

/** How long a cancelled staged runc gets to end by itself before its process group is killed. */
export const CANCEL_WAIT_MS = 5000;

/**
 * The gate's words, one character each, written several times over. The script reads with a timeout (to notice the
 * agent's end), and bash's `read -t` reads a FIFO a byte at a time against the time left:
 * - a word of several characters that arrived as the time ran out was split (the first character read, then the
 *   timeout), the next read took the rest for the word, and the gate ended runc's dump with nothing dumped: runc
 *   failed with "read unixpacket: connection reset by peer" inside the freeze, now and then under load;
 * - a character read as the time ran out is reported as a timeout (it is kept in the variable, which the script
 *   therefore looks at): ignored, it was lost, and the gate waited until the freeze ceiling (7 of 400 gates under
 *   `stress-ng --cpu 2` with a single character and `until read`; none of 300 with either remedy).
 * One character cannot be split; the script takes what a timed-out read kept; and a lost one has copies behind it.
 */
export const GO = 'g';
const STOP = 's';
/** Copies of a word written at once (the gate reads one; the rest go with the FIFO). */
const COPIES = 8;

/** A gate's directory: the prefix, then the pid of the agent that made it. */
const GATE_PREFIX = 'ferry-gate-';

/** A gate made for one runc: start it with `dir` first in its PATH (criu-path.ts `withCriuDir`). */
export interface Gate {
  readonly dir: string;
  /** The dump's CRIU may start; fails once runc has ended (`close`). */
  release(): Promise<void>;
  /** It may not: the gate ends runc's dump, now or once runc gets there. */
  stop(): Promise<void>;
  /** runc has ended: the FIFO and the directory go. */
  close(): void;
}

/**
 * A gate for a dump (or a restore) whose CRIU is the first started once `mark` exists (`descriptors.json` in the
 * dump's image directory; `criu-root` in a restore's state directory): its runc's other CRIUs run `criu`, that one
 * runs `dump` (default `criu`;
 * both absolute paths). `hold` (default): the dump's CRIU waits for `release()`; otherwise it starts at once.
 * Undefined, and nothing made, when the image directory already holds `descriptors.json` (a gate could not tell
 * the dump's CRIU from the version check), a path is not absolute or would need quoting in the script, there is no
 * bash, or the FIFO cannot be made.
 */
export async function openGate(
  runner: Runner,
  o: { mark: string; criu: string; dump?: string; hold?: boolean; library?: GateLibrary },
): Promise<Gate | undefined> {
  const dir = writeGate({ ...o, hold: o.hold ?? true });
  if (!dir) return undefined;
  let fifo: FileHandle;
  try {
    await runner.run(['mkfifo', '-m', '600', join(dir, 'go')], { label: 'mkfifo' });
    // read and write: this open does not wait for the gate, and a word written before the gate reads it stays
    fifo = await open(join(dir, 'go'), constants.O_RDWR | constants.O_NONBLOCK);
  } catch {
    rmSync(dir, { recursive: true, force: true });
    return undefined;
  }
  let closed = false;
  return {
    dir,
    release: async () => {
      if (closed) throw new FerryError('FERRY_E_CHECKPOINT_FAILED', 'the dump ended before its release');
      await fifo.write(GO.repeat(COPIES));
    },
    stop: async () => {
      if (!closed) await fifo.write(STOP.repeat(COPIES)).catch(() => {});
    },
    close: () => {
      if (closed) return;
      closed = true;
      void fifo.close().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The library that holds the run's CRIU inside CRIU instead of in the script (native/criu-gate.c): CRIU then starts
 * before the freeze and waits where it would first touch the container (a dump) or read the images (a restore).
 */
export interface GateLibrary {
  /** Its absolute path (criu-preload.ts). */
  path: string;
  at: 'dump' | 'restore';
}

/** The gate's directory with its script (see `openGate`), or undefined. */
function writeGate(o: {
  mark: string;
  criu: string;
  dump?: string;
  hold: boolean;
  library?: GateLibrary;
}): string | undefined {
  const dump = o.dump ?? o.criu;
  if (existsSync(o.mark) || !existsSync('/bin/bash')) return undefined;
  if (![o.mark, o.criu, dump].every((p) => p.startsWith('/'))) return undefined;
  if ([o.mark, o.criu, dump, tmpdir(), o.library?.path ?? ''].some((p) => p.includes("'"))) return undefined;
  sweepAgentDirs(GATE_PREFIX);
  const dir = mkdtempSync(join(tmpdir(), `${GATE_PREFIX}${process.pid}-`));
  try {
    const script = gateScript({ ...o, dir, dump, agentPid: process.pid });
    writeFileSync(join(dir, 'criu'), script, { mode: 0o700 });
    return dir;
  } catch {
    rmSync(dir, { recursive: true, force: true });
    return undefined;
  }
}

/**
 * The test-only fault `criu-fail:dump`: a gate that does not hold, whose version check runs `criu` and whose dump's
 * CRIU is /bin/false, so runc fails where a real CRIU error ends it (inside the freeze). `close()` once runc ended.
 */
export function dumpFailingCriu(o: {
  imagePath: string;
  criu: string;
}): { dir: string; close(): void } | undefined {
  const dir = writeGate({ mark: dumpMark(o.imagePath), criu: o.criu, dump: '/bin/false', hold: false });
  return dir ? { dir, close: () => rmSync(dir, { recursive: true, force: true }) } : undefined;
}

/** A dump's mark: runc writes `descriptors.json` into the image directory right before it starts the dump's CRIU. */
export function dumpMark(imagePath: string): string {
  return join(imagePath, 'descriptors.json');
}

/** A restore's mark: runc makes `criu-root` in the container's state directory right before the restore's CRIU. */
export function restoreMark(runcRoot: string, id: string): string {
  return join(runcRoot, id, 'criu-root');
}

/**
 * Starts `start(dir, control)` (runc, with the gate's `dir` first in its PATH and its run's `control` handed over)
 * and returns its release; see `openGate`. The run's deadline is re-armed at `go(timeoutMs)`. `restore`: a staged
 * restore (its errors name that phase).
 */
export async function stageGated(
  runner: Runner,
  o: {
    id: string;
    mark: string;
    criu: string;
    dump?: string;
    restore?: boolean;
    library?: GateLibrary;
    /** The run's deadline from its release when `go()` names none (runc waits under STAGED_WAIT_MS until then). */
    timeoutMs: number;
  },
  start: (dir: string, control: (c: RunControl) => void) => Promise<{ ms: number }>,
): Promise<StagedCheckpoint | undefined> {
  const gate = await openGate(runner, o);
  if (!gate) return undefined;
  let control: RunControl | undefined;
  const running = start(gate.dir, (c) => {
    control = c;
  });
  let ended = false;
  // the FIFO stays open until runc has ended
  const settled = running
    .then(
      () => {},
      () => {},
    )
    .then(() => {
      ended = true;
      gate.close();
    });
  // failed before the freeze (its CRIU's version check, say): that error, and nothing was dumped; a runc that ended
  // well before its release would have dumped past the gate, which the gate rules out: refused
  const endedEarly = async (): Promise<never> => {
    await running;
    if (o.restore)
      throw new FerryError('FERRY_E_RESTORE_FAILED', `runc restored ${o.id} before its release`, {
        phase: 'restore',
      });
    throw new FerryError('FERRY_E_CHECKPOINT_FAILED', `runc dumped ${o.id} before the freeze`, {
      phase: 'checkpoint',
    });
  };
  return {
    go: async (timeoutMs) => {
      const at = performance.now();
      if (ended) return endedEarly();
      control?.rearm(timeoutMs ?? o.timeoutMs);
      // runc may end between the look above and the release: its own error then, not the closed FIFO's
      await gate.release().catch(endedEarly);
      await running;
      return { ms: Math.round(performance.now() - at) };
    },
    cancel: async () => {
      await gate.stop();
      await untilOrKill(settled, () => control?.kill());
    },
  };
}

/** Waits for `ended`; past CANCEL_WAIT_MS calls `kill` (which ends it) and waits on. */
export async function untilOrKill(ended: Promise<unknown>, kill: () => void): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((r) => {
    timer = setTimeout(() => r(true), CANCEL_WAIT_MS);
  });
  const wasLate = await Promise.race([ended.then(() => false), late]);
  clearTimeout(timer);
  if (!wasLate) return;
  kill();
  await ended;
}

/**
 * The gate: every CRIU before the dump's runs `criu` at once; the dump's (or restore's), the first started once
 * `mark` exists, runs `dump`, and with `hold` first waits for the word GO in the
 * FIFO `go` beside the script; anything else (STOP), or the agent `agentPid` gone (looked at every 200 ms while
 * it waits), ends it with nothing dumped. Later CRIUs of this runc run `criu` at once. Built-in commands only, and
 * all of it before the freeze but the `exec`. The programs are absolute paths: the script is itself `criu` in PATH.
 * With `library` the script does not wait: it starts `dump` at once with the library preloaded and told the gate,
 * and the library waits for the same word, with the same rules, inside CRIU (native/criu-gate.c).
 */
export function gateScript(o: {
  dir: string;
  mark: string;
  criu: string;
  dump: string;
  hold: boolean;
  agentPid: number;
  library?: GateLibrary;
}): string {
  // held inside CRIU by the library, else by the script itself
  const library = o.hold ? o.library : undefined;
  return [
    '#!/bin/bash',
    `if [[ ! -e '${o.dir}/open' && -e '${o.mark}' ]]; then`,
    ...(library
      ? [
          `  export FERRY_CRIU_GATE='${o.dir}' FERRY_CRIU_GATE_AT=${library.at} FERRY_CRIU_GATE_AGENT=${o.agentPid}`,
          // (an installed library's path has no quote, space or colon: criu-preload.ts)
          `  export LD_PRELOAD="${library.path}\${LD_PRELOAD:+ $LD_PRELOAD}"`,
        ]
      : []),
    ...(o.hold && !library
      ? [
          // (a read that timed out as the character came keeps it in `word`: taken, not dropped)
          `  while :; do read -r -N 1 -t 0.2 word <> '${o.dir}/go'; [[ -n "$word" ]] && break; [[ -e /proc/${o.agentPid} ]] || exit 1; done`,
          `  [[ "$word" == ${GO} ]] || exit 1`,
        ]
      : []),
    `  : > '${o.dir}/open'`,
    `  exec '${o.dump}' "$@"`,
    'fi',
    `exec '${o.criu}' "$@"`,
    '',
  ].join('\n');
}
