// A host reached with the system's OpenSSH client (`ssh://[user@]host[:port]`), so that ~/.ssh/config, agents,
// jump hosts and known_hosts work as they do for the user. ferry never weakens host key checking: an unknown or
// changed key is refused with the way to accept it. ssh's own failures (exit status 255) become typed errors.
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { FerryError, type Phase } from '../core/errors.ts';
import { type ExecResult, type Runner, tail } from './exec.ts';

export interface SshTarget {
  user?: string;
  host: string;
  port?: number;
  /** As the user wrote it, for messages. */
  text: string;
}

const HOST_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})|\[[0-9A-Fa-f:.]+\])$/;
const USER_RE = /^[a-z_][a-z0-9_.-]{0,31}$/i;

export function isSshTarget(text: string): boolean {
  return text.startsWith('ssh://');
}

/** Parses `ssh://[user@]host[:port]`; anything else is refused before ssh is ever started. */
export function parseSshTarget(text: string): SshTarget {
  const bad = (why: string) =>
    new FerryError('FERRY_E_INPUT_ARGS', `${JSON.stringify(text)} is not a usable ssh:// host: ${why}`, {
      phase: 'input',
      hint: 'write ssh://host, ssh://user@host or ssh://user@host:2222 (a Host alias of ~/.ssh/config works too)',
    });
  if (!isSshTarget(text)) throw bad('it does not start with ssh://');
  const m = /^ssh:\/\/(?:([^@/]*)@)?(\[[^\]]*\]|[^:/@]*)(?::([^/]*))?\/?$/.exec(text);
  if (!m) throw bad('expected ssh://[user@]host[:port] and nothing after it');
  const [, user, host = '', port] = m;
  if (user !== undefined && !USER_RE.test(user)) throw bad(`invalid user name ${JSON.stringify(user)}`);
  if (!HOST_RE.test(host) || host.startsWith('-')) throw bad(`invalid host ${JSON.stringify(host)}`);
  const out: SshTarget = { host: host.replace(/^\[(.*)\]$/, '$1'), text };
  if (user !== undefined) out.user = user;
  if (port !== undefined) {
    const n = /^\d{1,5}$/.test(port) ? Number(port) : Number.NaN;
    if (!(n >= 1 && n <= 65535)) throw bad(`invalid port ${JSON.stringify(port)}`);
    out.port = n;
  }
  return out;
}

/**
 * What went wrong, from ssh's stderr when ssh itself failed (status 255): the host key, the authentication, or
 * the connection. Undefined when ssh worked and the remote command failed.
 */
export function sshFailure(
  t: SshTarget,
  r: Pick<ExecResult, 'code' | 'stderr'>,
  phase: Phase,
): FerryError | undefined {
  if (r.code !== 255) return undefined;
  const err = r.stderr;
  const last = tail(err, 2).replace(/\s+/g, ' ');
  const where = `ssh ${t.text}`;
  const dest = `${t.port ? `-p ${t.port} ` : ''}${t.user ? `${t.user}@` : ''}${t.host}`;
  if (/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed/i.test(err))
    return new FerryError(
      'FERRY_E_SSH_HOST_KEY',
      `${where}: the host key has CHANGED since it was accepted; refused`,
      {
        phase,
        hint:
          'a reinstalled host, or someone in between: check the new key out of band, then remove the old one with ' +
          `ssh-keygen -R ${t.port ? `'[${t.host}]:${t.port}'` : t.host} and connect once with ssh ${dest}`,
      },
    );
  if (/Host key verification failed|No \S+ host key is known|host key is not known/i.test(err))
    return new FerryError('FERRY_E_SSH_HOST_KEY', `${where}: the host key is not known; refused`, {
      phase,
      hint: `connect once with ssh ${dest} and accept the key after checking its fingerprint (or add it to known_hosts)`,
    });
  if (/Permission denied|Too many authentication failures|no mutual signature/i.test(err))
    return new FerryError('FERRY_E_SSH_AUTH', `${where}: authentication refused (${last})`, {
      phase,
      hint: `ssh ${dest} must log in without a password prompt: a key in ssh-agent or IdentityFile in ~/.ssh/config`,
    });
  return new FerryError('FERRY_E_SSH_UNREACHABLE', `${where}: ${last || 'the connection failed'}`, {
    phase,
    hint: `is the host up and its sshd reachable? try ssh ${dest}`,
  });
}

export interface SshOptions {
  /** An ssh_config to use instead of ~/.ssh/config (ssh -F). */
  configFile?: string;
  env?: NodeJS.ProcessEnv;
}

/** One remote host over the system's ssh client; every command is its own ssh run (ControlMaster is the user's). */
export class SshHost {
  readonly target: SshTarget;
  private readonly runner: Runner;
  private readonly opts: SshOptions;

  get env(): NodeJS.ProcessEnv | undefined {
    return this.opts.env;
  }

  constructor(target: SshTarget, runner: Runner, opts: SshOptions = {}) {
    this.target = target;
    this.runner = runner;
    this.opts = opts;
  }

  /** argv of `ssh` running `command` (one shell command line) on the host; BatchMode: never a prompt. */
  argv(command: string, extra: string[] = []): string[] {
    const t = this.target;
    return [
      'ssh',
      ...(this.opts.configFile ? ['-F', this.opts.configFile] : []),
      '-o',
      'BatchMode=yes',
      ...(t.port ? ['-p', String(t.port)] : []),
      ...(t.user ? ['-l', t.user] : []),
      ...extra,
      '--',
      t.host,
      command,
    ];
  }

  /** Runs `command` remotely; ssh's own failures are typed, a remote failure is FERRY_E_EXEC with its stderr. */
  async run(
    command: string,
    o: { phase: Phase; label: string; timeoutMs?: number; allowFail?: boolean },
  ): Promise<ExecResult> {
    const r = await this.runner.run(this.argv(command), {
      allowFail: true,
      timeoutMs: o.timeoutMs ?? 60_000,
      ...(this.opts.env ? { env: this.opts.env } : {}),
    });
    const failure = sshFailure(this.target, r, o.phase);
    if (failure) throw failure;
    if (r.code !== 0 && !o.allowFail)
      throw new FerryError(
        'FERRY_E_EXEC',
        `${o.label} on ${this.target.text} failed (exit status ${r.code}): ${tail(r.stderr, 3) || tail(r.stdout, 3)}`,
        { phase: o.phase },
      );
    return r;
  }

  /**
   * Runs `command` with the contents of the local file `path` on its standard input (an upload without scp or
   * sftp: only a shell is needed on the other end). A spawn of its own because the runner's input is a string.
   */
  async runWithFile(command: string, path: string, o: { phase: Phase; label: string }): Promise<ExecResult> {
    const argv = this.argv(command);
    const started = performance.now();
    const child = spawn(argv[0]!, argv.slice(1), {
      env: this.opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.stdin.on('error', () => {}); // a remote that stops reading: ssh's status says why
    createReadStream(path).pipe(child.stdin);
    const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
      (resolve, reject) => {
        child.on('error', (err) =>
          reject(
            new FerryError('FERRY_E_EXEC', `cannot run ssh: ${err.message}`, { phase: o.phase, cause: err }),
          ),
        );
        child.on('close', (c, s) => resolve({ code: c, signal: s }));
      },
    );
    const r: ExecResult = { argv, code, signal, stdout, stderr, ms: Math.round(performance.now() - started) };
    const failure = sshFailure(this.target, r, o.phase);
    if (failure) throw failure;
    if (code !== 0)
      throw new FerryError(
        'FERRY_E_EXEC',
        `${o.label} on ${this.target.text} failed (exit status ${code}): ${tail(stderr, 3) || tail(stdout, 3)}`,
        { phase: o.phase },
      );
    return r;
  }
}

/** A long-lived ssh session: a remote command that runs as long as ssh does, with the ports it forwards. */
export interface SshSession {
  /** The local ssh client's pid (a test's fault kills it to drop the connection). */
  pid: number | undefined;
  /** Resolves with the remote command's first line that starts with the ready word (its rest); rejects if ssh ends. */
  ready: Promise<string>;
  /** ssh's end, with its exit status and stderr. */
  closed: Promise<ExecResult>;
  /** Whether ssh has ended. */
  ended(): boolean;
  /** Closes the remote command's standard input: its dead-man switch. */
  end(): void;
  kill(): void;
}

export interface SessionOptions {
  phase: Phase;
  label: string;
  /** The first line written to the remote command's standard input (kept open afterwards). */
  input: string;
  /** The word that starts the line the remote command prints once it is ready. */
  readyWord: string;
  /** `-L`/`-R` specifications, each `[bind:]port:host:hostport`. */
  local?: string[];
  remote?: string[];
  readyTimeoutMs?: number;
}

/** ssh's own checks of a long session: a forward it cannot open fails the start, a dead peer ends it. */
const SESSION_OPTIONS = [
  '-o',
  'ExitOnForwardFailure=yes',
  '-o',
  'ServerAliveInterval=5',
  '-o',
  'ServerAliveCountMax=3',
];

/** Starts `command` on `host` with its standard input kept open; see SshSession. */
export function startSession(host: SshHost, command: string, o: SessionOptions): SshSession {
  const extra = [
    ...SESSION_OPTIONS,
    ...(o.local ?? []).flatMap((f) => ['-L', f]),
    ...(o.remote ?? []).flatMap((f) => ['-R', f]),
  ];
  const argv = host.argv(command, extra);
  const started = performance.now();
  const child = spawn(argv[0]!, argv.slice(1), {
    env: host.env ?? process.env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let done = false;
  let onReady: (rest: string) => void = () => {};
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    const m = new RegExp(`^${o.readyWord} ?(.*)$`, 'm').exec(stdout);
    if (m) onReady(m[1] ?? '');
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  child.stdin.on('error', () => {}); // ssh gone: its status says why
  child.stdin.write(o.input);
  const closed = new Promise<ExecResult>((resolve) => {
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      done = true;
      resolve({ argv, code, signal, stdout, stderr, ms: Math.round(performance.now() - started) });
    };
    child.on('error', (err) => {
      stderr += `cannot run ssh: ${err.message}`;
      finish(127, null);
    });
    child.on('close', finish);
  });
  const ready = new Promise<string>((resolve, reject) => {
    onReady = resolve;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new FerryError(
          'FERRY_E_EXEC',
          `${o.label} on ${host.target.text} did not start within ${o.readyTimeoutMs ?? 60_000} ms`,
          {
            phase: o.phase,
          },
        ),
      );
    }, o.readyTimeoutMs ?? 60_000);
    void closed.then((r) => {
      clearTimeout(timer);
      reject(
        sshFailure(host.target, r, o.phase) ??
          new FerryError(
            'FERRY_E_EXEC',
            `${o.label} on ${host.target.text} ended (exit status ${r.code ?? r.signal}): ${tail(r.stderr, 3) || tail(r.stdout, 3)}`,
            { phase: o.phase },
          ),
      );
    });
    // (once resolved, the rejection above is a no-op)
    const resolveOnce = onReady;
    onReady = (rest) => {
      clearTimeout(timer);
      resolveOnce(rest);
    };
  });
  return {
    pid: child.pid,
    ready,
    closed,
    ended: () => done,
    end: () => child.stdin.end(),
    kill: () => child.kill('SIGKILL'),
  };
}
