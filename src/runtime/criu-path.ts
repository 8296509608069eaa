// Which CRIU runc runs. runc 1.1 takes `--criu PATH` (default `criu`, looked up in PATH); runc 1.2 and 1.3 ignore
// the flag ("WARNING: --criu ignored (criu binary from $PATH is used)") and runc 1.4 removed it. All of them find
// `criu` through the PATH of their own environment when the flag is not given, so a CRIU of ferry's choosing (a
// configured path, a staged dump's gate, the test-only failing CRIU) is a directory whose `criu` it is, put first in
// the PATH runc is started with. Nothing here passes `--criu`.
import { accessSync, constants, existsSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';

/** The absolute path of the program `name` (a path, or a name looked up in PATH); undefined when there is none. */
export function resolveExecutable(name: string, path = process.env['PATH'] ?? ''): string | undefined {
  const runnable = (p: string) => {
    try {
      accessSync(p, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (name.includes('/')) {
    const p = isAbsolute(name) ? name : resolve(name);
    return runnable(p) ? p : undefined;
  }
  for (const dir of path.split(':')) {
    if (!dir) continue;
    const p = resolve(dir, name);
    if (runnable(p)) return p;
  }
  return undefined;
}

/** `env` (default: the agent's) with `dir` first in PATH: runc started with it runs `dir`/criu. */
export function withCriuDir(dir: string, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const path = env['PATH'];
  return { ...env, PATH: path ? `${dir}:${path}` : dir };
}

/**
 * Removes the directories named `prefix` + pid + `-…` in the temporary directory whose agent (the pid) is gone:
 * killed agents leave theirs, nothing of theirs removes them, and whichever agent of this host looks first does.
 */
export function sweepAgentDirs(prefix: string): void {
  try {
    for (const e of readdirSync(tmpdir())) {
      if (!e.startsWith(prefix)) continue;
      const pid = Number(/^(\d+)-/.exec(e.slice(prefix.length))?.[1]);
      if (pid > 0 && !existsSync(`/proc/${pid}`)) rmSync(join(tmpdir(), e), { recursive: true, force: true });
    }
  } catch {
    // best effort: a leftover directory holds a few bytes
  }
}

/** A directory of this agent whose `criu` is a link to a chosen program: the prefix, the agent's pid, a suffix. */
const DIR_PREFIX = 'ferry-criu-path-';

/**
 * Directories whose `criu` links to a program, one per program, made once and kept for the agent's life (swept
 * once it is gone, see sweepAgentDirs).
 */
export class CriuDirs {
  private readonly made = new Map<string, string>();

  /** The directory whose `criu` is `program` (an absolute path), made now if needed. */
  dirFor(program: string): string {
    const known = this.made.get(program);
    if (known && existsSync(join(known, 'criu'))) return known;
    if (this.made.size === 0) sweepAgentDirs(DIR_PREFIX);
    const dir = mkdtempSync(join(tmpdir(), `${DIR_PREFIX}${process.pid}-`));
    symlinkSync(program, join(dir, 'criu'));
    this.made.set(program, dir);
    return dir;
  }
}
