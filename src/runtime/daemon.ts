// Long-running child processes (agents, controllers): started detached, tracked by pid files.
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';

export function startDaemon(argv: string[], logFile: string, env: NodeJS.ProcessEnv = process.env): number {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('empty command');
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', fd, fd], env });
    child.unref();
    if (!child.pid) throw new Error(`could not start ${cmd}`);
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

/**
 * Whether the process still runs. A zombie does not: it has exited, and only its parent's wait keeps its pid. A
 * daemon's parent is init once its starter is gone, and an init that reaps late (some container and VM inits take a
 * second or two) would otherwise make every stop wait out its grace period for a process long gone.
 */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the state follows the command name, which is in parentheses and may hold anything
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch (err) {
    // gone since the signal; any other failure to read says nothing, and the signal said it runs
    const code = (err as NodeJS.ErrnoException).code;
    return code !== 'ENOENT' && code !== 'ESRCH';
  }
}

export async function readPid(file: string): Promise<number | undefined> {
  try {
    const n = Number.parseInt(await readFile(file, 'utf8'), 10);
    return Number.isFinite(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

export async function writePid(file: string, pid: number): Promise<void> {
  await writeFile(file, `${pid}\n`);
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
export async function stopProcess(pid: number, graceMs = 3000): Promise<void> {
  if (!alive(pid)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (alive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
    while (alive(pid)) await new Promise((r) => setTimeout(r, 20));
  }
}
