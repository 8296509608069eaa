// The one thin child-process layer: every spawn in ferry goes through a Runner.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { type ErrorCode, FerryError, type Phase } from '../core/errors.ts';
import { traceLine } from '../core/trace.ts';

export interface ExecOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string;
  timeoutMs?: number;
  /**
   * The child gets a process group of its own, and past `timeoutMs` the whole group is killed and waited for: runc
   * checkpoint's CRIU is runc's child, and killing runc alone leaves it holding (ptrace-seizing) the tasks.
   */
  group?: boolean;
  /** Resolve even on a non-zero exit (the caller inspects `code`). */
  allowFail?: boolean;
  /** 'null' gives the child /dev/null for stdout/stderr: needed when the child hands its stdio to a container. */
  stdio?: 'pipe' | 'null';
  /** How the command is named in errors (default: the program and its first argument). */
  label?: string;
  /** Error code and phase used when the command fails. */
  errorCode?: ErrorCode;
  phase?: Phase;
  /** Extra context for the error message (e.g. the CRIU log's first error). */
  onFailure?: (r: ExecResult) => Promise<string | undefined> | string | undefined;
  /** Handed the run's controls once it has started: for a run started ahead of its work (runtime/criu-gate.ts). */
  control?: (c: RunControl) => void;
}

/** A started run, steered from outside (ExecOptions.control). */
export interface RunControl {
  /** Its deadline is now `ms` from now (it started before its work did). */
  rearm(ms: number): void;
  /** Ends it now as its deadline would: killed (its whole group with `group`) and waited for. */
  kill(): void;
}

export interface ExecResult {
  argv: string[];
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** Killed because it ran past `timeoutMs`. */
  timedOut?: boolean;
}

export interface Runner {
  run(argv: string[], opts?: ExecOptions): Promise<ExecResult>;
}

export function tail(text: string, lines = 5): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** FERRY_TRACE=FILE appends one JSON line per finished child (core/trace.ts): where a freeze's milliseconds go. */
function trace(argv: string[], started: number, ms: number, code: number | null): void {
  traceLine({ code, argv: argv.slice(0, 6) }, started, ms);
}

export class ProcessRunner implements Runner {
  async run(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const started = performance.now();
    const [cmd, ...args] = argv;
    if (!cmd) throw new FerryError('FERRY_E_INTERNAL', 'empty command');
    const nullOut = opts.stdio === 'null';
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [
        opts.input === undefined ? 'ignore' : 'pipe',
        nullOut ? 'ignore' : 'pipe',
        nullOut ? 'ignore' : 'pipe',
      ],
      detached: opts.group === true,
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    let timeoutMs = opts.timeoutMs ?? 0;
    const result = await new Promise<ExecResult>((resolve, reject) => {
      child.on('error', (err) => {
        reject(
          new FerryError(opts.errorCode ?? 'FERRY_E_EXEC', `cannot run ${cmd}: ${err.message}`, {
            ...(opts.phase ? { phase: opts.phase } : {}),
            cause: err,
            details: { argv },
          }),
        );
      });
      // The output is complete at 'close' (all pipes drained), not at 'exit': reading a child's JSON at 'exit'
      // can cut it short. A child that hands its pipes on to something long-lived (runc run -d with pipes) would
      // hold 'close' back forever, so after 'exit' it gets at most 2 s.
      let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
      let done = false;
      const finish = () => {
        if (done || !exited) return;
        done = true;
        resolve({
          argv,
          code: exited.code,
          signal: exited.signal,
          stdout,
          stderr,
          ms: Math.round(performance.now() - started),
        });
      };
      child.on('exit', (code, signal) => {
        exited = { code, signal };
        if (nullOut) setImmediate(finish);
        else setTimeout(finish, 2000).unref();
      });
      child.on('close', (code, signal) => {
        exited ??= { code, signal };
        finish();
      });
      const expire = () => {
        timedOut = true;
        if (opts.group && child.pid !== undefined) killGroup(child.pid);
        else child.kill('SIGKILL');
      };
      if (opts.timeoutMs) timer = setTimeout(expire, timeoutMs);
      opts.control?.({
        rearm: (ms) => {
          if (done) return;
          clearTimeout(timer);
          timeoutMs = ms;
          timer = setTimeout(expire, ms);
        },
        kill: () => {
          if (!done) expire();
        },
      });
    }).finally(() => clearTimeout(timer));
    if (timedOut) {
      result.timedOut = true;
      // what the child started may still be dying (a CRIU leaves its ptrace seize only as it exits)
      if (opts.group && child.pid !== undefined) await groupGone(child.pid);
    }
    trace(argv, started, result.ms, result.code);
    if (result.code !== 0 && !opts.allowFail) {
      const extra = opts.onFailure ? await opts.onFailure(result) : undefined;
      const why = timedOut
        ? `killed after its ${Math.round(timeoutMs)} ms deadline`
        : result.signal
          ? `killed by ${result.signal}`
          : `exit status ${result.code}`;
      const errText = extra ?? (tail(result.stderr, 3) || tail(result.stdout, 3));
      throw new FerryError(
        opts.errorCode ?? 'FERRY_E_EXEC',
        `${opts.label ?? argv.slice(0, 2).join(' ')} failed (${why})${errText ? `: ${errText}` : ''}`,
        {
          ...(opts.phase ? { phase: opts.phase } : {}),
          details: {
            argv,
            code: result.code,
            signal: result.signal,
            ms: result.ms,
            stderr: tail(result.stderr, 10),
          },
        },
      );
    }
    return result;
  }
}

/** SIGKILLs every process of the group `pgid` (gone already: nothing to do). */
function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // the group is gone
  }
}

/** Whether a process other than a zombie is left in the group `pgid` (a zombie holds no ptrace seize). */
export function groupAlive(pgid: number): boolean {
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const [state, , group] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(group) === pgid && state !== 'Z') return true;
    } catch {
      // exited meanwhile
    }
  }
  return false;
}

/** Waits until no live process is left in the group `pgid` (at most `maxMs`, killing it again meanwhile). */
async function groupGone(pgid: number, maxMs = 10_000): Promise<void> {
  const until = performance.now() + maxMs;
  while (groupAlive(pgid) && performance.now() < until) {
    killGroup(pgid);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface BackgroundProcess {
  /** Sends a signal and resolves with what the process printed once it exits. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; stdout: string; stderr: string }>;
}

/** What a child printed, as it arrives (read it after 'close'). */
function collectOutput(child: ChildProcess): { stdout: string; stderr: string } {
  const out = { stdout: '', stderr: '' };
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    out.stdout += d;
  });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    out.stderr += d;
  });
  return out;
}

/** A child that runs alongside (a probe client): stdout and stderr collected, stopped by a signal. */
export function startBackground(argv: string[], env: NodeJS.ProcessEnv = process.env): BackgroundProcess {
  const [cmd, ...args] = argv;
  if (!cmd) throw new FerryError('FERRY_E_INTERNAL', 'empty command');
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = collectOutput(child);
  const exited = new Promise<number | null>((resolve) => {
    child.on('close', (code) => resolve(code));
    child.on('error', () => resolve(null));
  });
  return {
    async stop(signal = 'SIGINT') {
      child.kill(signal);
      const code = await exited;
      return { code, stdout: out.stdout, stderr: out.stderr };
    },
  };
}

export interface StartedProcess {
  /** Resolves when the child writes its first byte to fd 3 (runc's `--status-fd 3`); rejects if it exits first. */
  status: Promise<void>;
  /** Resolves when the child exits (never rejects; look at code/signal). */
  done: Promise<ExecResult>;
  kill(signal?: NodeJS.Signals): void;
  readonly pid: number | undefined;
}

/**
 * A long-running helper (CRIU's page server or lazy-pages daemon) started in the background. With `statusFile`,
 * the child's fd 3 is that file opened for writing (runc wants a writable --status-fd; a pipe end is not).
 */
export function startProcess(
  argv: string[],
  opts: { statusFile?: string; env?: NodeJS.ProcessEnv; group?: boolean } = {},
): StartedProcess {
  const [cmd, ...args] = argv;
  if (!cmd) throw new FerryError('FERRY_E_INTERNAL', 'empty command');
  const started = performance.now();
  const statusFd = opts.statusFile ? openSync(opts.statusFile, 'w') : undefined;
  const child = spawn(cmd, args, {
    env: opts.env ?? process.env,
    stdio: statusFd !== undefined ? ['ignore', 'ignore', 'pipe', statusFd] : ['ignore', 'ignore', 'pipe'],
    // its own process group: kill() then reaches what it started too (runc's CRIU)
    detached: opts.group === true,
  });
  if (statusFd !== undefined) closeSync(statusFd);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const done = new Promise<ExecResult>((resolve) => {
    child.on('error', (err) =>
      resolve({ argv, code: -1, signal: null, stdout: '', stderr: err.message, ms: 0 }),
    );
    child.on('exit', (code, signal) =>
      resolve({ argv, code, signal, stdout: '', stderr, ms: Math.round(performance.now() - started) }),
    );
  });
  const status = new Promise<void>((resolve, reject) => {
    const file = opts.statusFile;
    if (!file) {
      resolve();
      return;
    }
    let settled = false;
    const poll = () => {
      if (settled) return;
      try {
        if (statSync(file).size > 0) {
          settled = true;
          resolve();
          return;
        }
      } catch {
        // not written yet
      }
      setTimeout(poll, 2);
    };
    poll();
    void done.then((r) => {
      // a process that wrote its status and exited between two polls was ready: look once more
      poll();
      if (settled) return;
      settled = true;
      reject(
        new FerryError(
          'FERRY_E_EXEC',
          `${argv.slice(0, 2).join(' ')} exited (${r.signal ?? r.code}) before it was ready: ${tail(r.stderr, 3)}`,
        ),
      );
    });
  });
  status.catch(() => {});
  return {
    status,
    done,
    kill: (signal: NodeJS.Signals = 'SIGTERM') => {
      if (opts.group && child.pid) {
        // runc's CRIU runs in a session of its own: kill the descendants first, then the group
        for (const pid of descendants(child.pid)) {
          try {
            process.kill(pid, signal);
          } catch {
            // gone
          }
        }
        try {
          process.kill(-child.pid, signal);
        } catch {
          // the whole group is gone
        }
      } else if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    get pid() {
      return child.pid;
    },
  };
}

export interface CommandSession {
  /** Writes the last commands and closes stdin; resolves once the process has run them and exited. */
  finish(commands: string): Promise<ExecResult>;
  kill(): void;
}

/**
 * A command interpreter started ahead of time that waits on its stdin (`nft -i`): commands given later take
 * effect within a millisecond instead of costing a process start. Its output is collected; nothing else.
 */
export function startSession(argv: string[]): CommandSession {
  const [cmd, ...args] = argv;
  if (!cmd) throw new FerryError('FERRY_E_INTERNAL', 'empty command');
  const started = performance.now();
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const out = collectOutput(child);
  child.stdin.on('error', () => {}); // a session that died: finish() reports its exit
  const done = new Promise<ExecResult>((resolve) => {
    child.on('error', (err) =>
      resolve({ argv, code: -1, signal: null, stdout: out.stdout, stderr: err.message, ms: 0 }),
    );
    child.on('close', (code, signal) =>
      resolve({ argv, code, signal, ...out, ms: Math.round(performance.now() - started) }),
    );
  });
  return {
    async finish(commands: string) {
      child.stdin.end(commands);
      const r = await done;
      trace(argv, started, r.ms, r.code);
      return r;
    },
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

/** Every process below `root` (by parent pid, from /proc). */
export function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      parent.set(Number(e), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // exited meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [pid, pp] of parent) {
      if (pp === p) {
        out.push(pid);
        walk(pid);
      }
    }
  };
  walk(root);
  return out;
}
