// A dead-man switch for a container that must not outlive this process uncommitted: a tiny shell, in its own
// session (a crash of the agent does not take it along), reads a pipe from the agent. A line on it disarms it;
// end-of-file without one (the agent died: SIGKILL, OOM, a crash) makes it kill the container, and keep killing
// it while a `runc restore` of the migration's images is still running (a restore outlives its dead parent).
import { spawn } from 'node:child_process';
import type { Writable } from 'node:stream';

export interface DeadManSwitch {
  /** The container is committed or already removed: the switch goes away without touching anything. */
  disarm(): void;
}

export interface DeadManTarget {
  runcPath: string;
  runcRoot: string;
  /** The container (runc id). */
  name: string;
  /** The migration's image directory: names the runc restore still running, if any. */
  images: string;
  /**
   * Commands run first, so that what the dying copy sends never reaches a client (its restored sockets' packets
   * carry CRIU's mark, which the namespace lock lets through): its link down, or a drop of its address.
   */
  cutOff?: string[][];
}

/** Arguments ferry derives from validated names and addresses only; anything else is never put in a shell line. */
const SAFE = /^[A-Za-z0-9_.:/@%+=-]+$/;

const SCRIPT = `
read -r _ && exit 0
eval "$WD_CUT"
i=0
while [ "$i" -lt 200 ]; do
  if "$WD_RUNC" --root "$WD_ROOT" state "$WD_NAME" >/dev/null 2>&1; then
    "$WD_RUNC" --root "$WD_ROOT" kill --all "$WD_NAME" KILL >/dev/null 2>&1
    "$WD_RUNC" --root "$WD_ROOT" delete --force "$WD_NAME" >/dev/null 2>&1
  elif ! pgrep -f -- "restore.*$WD_IMAGES" >/dev/null 2>&1; then
    exit 0
  fi
  i=$((i+1))
  sleep 0.3
done
`;

export function armDeadMan(t: DeadManTarget): DeadManSwitch {
  const child = spawn('/bin/sh', ['-c', SCRIPT], {
    detached: true,
    stdio: ['pipe', 'ignore', 'ignore'],
    env: {
      PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      WD_RUNC: t.runcPath,
      WD_ROOT: t.runcRoot,
      WD_NAME: t.name,
      WD_IMAGES: t.images,
      WD_CUT: (t.cutOff ?? [])
        .filter((argv) => argv.length > 0 && argv.every((a) => SAFE.test(a)))
        .map((argv) => `${argv.join(' ')} >/dev/null 2>&1`)
        .join('\n'),
    },
  });
  child.on('error', () => {});
  child.unref();
  const stdin = child.stdin as Writable & { _handle?: { unref?: () => void } };
  stdin.on('error', () => {});
  // the pipe must not keep the agent alive; it closes when the agent exits, however it exits
  (stdin as unknown as { unref?: () => void }).unref?.();
  stdin._handle?.unref?.();
  let armed = true;
  return {
    disarm() {
      if (!armed) return;
      armed = false;
      stdin.end('disarm\n');
    },
  };
}
