// A dump whose runc starts before the freeze and whose CRIU starts at its release. runc's own work around a dump,
// about 50 ms on this project's test machine, is its start, reading its state and a first CRIU that only asks
// CRIU's version (runc asks on every run, before anything else); only then does it write the dump's
// `descriptors.json` into the image directory and start the dump's CRIU. Staged, all of that is behind it when the
// container freezes.
//
// runc is given a gate as its CRIU (`--criu`): a short bash script in a private directory. A CRIU started before
// `descriptors.json` exists (the version check) runs at once; the first started after waits for the word `go` in a
// FIFO beside the script. Whatever runc's version, no dump starts before the release: a runc that dumped without a
// version check first would find the file and wait too.
import { constants, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FerryError } from '../core/errors.ts';
import type { Runner } from './exec.ts';

/** A dump staged ahead of the freeze. */
export interface StagedCheckpoint {
  /** The freeze has begun: CRIU dumps now. Resolves or fails as the dump does; `ms` counts from the release. */
  go(): Promise<{ ms: number }>;
  /** Not needed after all (the migration stopped before its dump): runc ends without its CRIU having dumped. */
  cancel(): Promise<void>;
}

/** A gate's directory: the prefix, then the pid of the agent that made it. */
const GATE_PREFIX = 'ferry-gate-';

/**
 * Removes the gate directories of agents that are gone (killed while a dump was staged or running: nothing of
 * theirs removes them), whichever agent of this host looks first.
 */
function sweepGates(): void {
  try {
    for (const e of readdirSync(tmpdir())) {
      const pid = Number(/^ferry-gate-(\d+)-/.exec(e)?.[1]);
      if (pid > 0 && !existsSync(`/proc/${pid}`)) rmSync(join(tmpdir(), e), { recursive: true, force: true });
    }
  } catch {
    // best effort: a leftover directory holds a few bytes
  }
}

/** A gate made for one runc (`path`, to pass as its `--criu`). */
export interface Gate {
  readonly path: string;
  /** The dump's CRIU may start. */
  release(): Promise<void>;
  /** It may not: the gate ends runc's dump, now or once runc gets there. */
  stop(): Promise<void>;
  /** runc has ended: the FIFO and the directory go. */
  close(): void;
}

/**
 * A gate for a dump into `imagePath` whose CRIU is `criu`. Undefined, and nothing made, when the image directory
 * already holds `descriptors.json` (a gate could not tell the dump's CRIU from the version check), a path would
 * need quoting in the script, there is no bash, or the FIFO cannot be made.
 */
export async function openGate(
  runner: Runner,
  o: { imagePath: string; criu: string },
): Promise<Gate | undefined> {
  if (existsSync(join(o.imagePath, 'descriptors.json')) || !existsSync('/bin/bash')) return undefined;
  if ([o.imagePath, o.criu, tmpdir()].some((p) => p.includes("'"))) return undefined;
  sweepGates();
  const dir = mkdtempSync(join(tmpdir(), `${GATE_PREFIX}${process.pid}-`));
  const path = join(dir, 'criu');
  let fifo: FileHandle;
  try {
    writeFileSync(path, gateScript(dir, o.imagePath, o.criu, process.pid), { mode: 0o700 });
    await runner.run(['mkfifo', '-m', '600', join(dir, 'go')], { label: 'mkfifo' });
    // read and write: this open does not wait for the gate, and a word written before the gate reads it stays
    fifo = await open(join(dir, 'go'), constants.O_RDWR | constants.O_NONBLOCK);
  } catch {
    rmSync(dir, { recursive: true, force: true });
    return undefined;
  }
  let closed = false;
  return {
    path,
    release: async () => {
      await fifo.write('go\n');
    },
    stop: async () => {
      await fifo.write('stop\n').catch(() => {});
    },
    close: () => {
      if (closed) return;
      closed = true;
      void fifo.close().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Starts `start(gate)` (runc, told to run the gate as its CRIU) and returns its release; see `openGate`. */
export async function stageGated(
  runner: Runner,
  o: { id: string; imagePath: string; criu: string },
  start: (gate: string) => Promise<{ ms: number }>,
): Promise<StagedCheckpoint | undefined> {
  const gate = await openGate(runner, o);
  if (!gate) return undefined;
  const running = start(gate.path);
  let ended = false;
  // the FIFO stays open until runc has ended
  void running
    .then(
      () => {},
      () => {},
    )
    .then(() => {
      ended = true;
      gate.close();
    });
  return {
    go: async () => {
      const at = performance.now();
      if (ended) {
        // failed before the freeze (its CRIU's version check, say): that error, and nothing was dumped; a runc
        // that ended well before its release would have dumped past the gate, which the gate rules out: refused
        await running;
        throw new FerryError('FERRY_E_CHECKPOINT_FAILED', `runc dumped ${o.id} before the freeze`, {
          phase: 'checkpoint',
        });
      }
      await gate.release();
      await running;
      return { ms: Math.round(performance.now() - at) };
    },
    cancel: () => gate.stop(),
  };
}

/**
 * The gate: every CRIU before the dump's runs at once; the dump's, the first started once `descriptors.json` is in
 * the image directory, waits for the word `go` in the FIFO `go` beside the script; anything else (`stop`), or the
 * agent `agentPid` gone (looked at every 200 ms while it waits), ends it with nothing dumped. Once released, later
 * CRIUs of this runc run at once. Built-in commands only, and all of it before the freeze but the `exec`.
 */
export function gateScript(dir: string, imagePath: string, criu: string, agentPid: number): string {
  return [
    '#!/bin/bash',
    `if [[ ! -e '${dir}/open' && -e '${imagePath}/descriptors.json' ]]; then`,
    `  until read -r -t 0.2 word <> '${dir}/go'; do [[ -e /proc/${agentPid} ]] || exit 1; done`,
    '  [[ "$word" == go ]] || exit 1',
    `  : > '${dir}/open'`,
    'fi',
    `exec '${criu}' "$@"`,
    '',
  ].join('\n');
}
