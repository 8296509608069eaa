// Hosts reached over SSH that run no ferry agent (`ssh://[user@]host[:port]`): ferry's own executable is copied
// there when needed (runtime/remote-ferry.ts) and run over the system's ssh client (runtime/ssh.ts).
import { existsSync } from 'node:fs';
import { isSea } from 'node:sea';
import { fileURLToPath } from 'node:url';
import type { CapabilitiesReport } from '../api/types.ts';
import { FerryError, type Phase } from '../core/errors.ts';
import { ProcessRunner } from '../runtime/exec.ts';
import { ensureRemoteFerry, type RemoteFerry } from '../runtime/remote-ferry.ts';
import { parseSshTarget, SshHost } from '../runtime/ssh.ts';

export { isSshTarget, parseSshTarget } from '../runtime/ssh.ts';

/**
 * The executable to copy: this one when ferry runs as the single executable; from the sources, the one `make dist`
 * built (or $FERRY_EXECUTABLE), since a checkout and a Node cannot be copied as one file.
 */
export function localExecutable(env: NodeJS.ProcessEnv = process.env): string {
  if (isSea()) return process.execPath;
  const built =
    env['FERRY_EXECUTABLE'] || fileURLToPath(new URL('../../dist/ferry-linux-x64', import.meta.url));
  if (!existsSync(built))
    throw new FerryError(
      'FERRY_E_INPUT_ARGS',
      `ssh:// hosts need ferry's single executable, and ${built} is missing`,
      {
        phase: 'input',
        hint: 'make dist builds it (or run dist/ferry-linux-x64 itself, or set FERRY_EXECUTABLE)',
      },
    );
  return built;
}

export interface RemoteOptions {
  sshConfig?: string;
}

/** The host, with ferry's executable in place on it. */
export async function remoteFerry(
  text: string,
  o: RemoteOptions,
  phase: Phase,
): Promise<{ ssh: SshHost; ferry: RemoteFerry }> {
  const ssh = new SshHost(parseSshTarget(text), new ProcessRunner(), {
    ...(o.sshConfig ? { configFile: o.sshConfig } : {}),
  });
  const exe = localExecutable();
  return { ssh, ferry: await ensureRemoteFerry(ssh, exe, phase) };
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** `ferry check --host ssh://…`: the same preflight, run on the remote host by its copy of ferry. */
export async function remoteCapabilities(text: string, o: RemoteOptions): Promise<CapabilitiesReport> {
  const { ssh, ferry } = await remoteFerry(text, o, 'check');
  const r = await ssh.run(`${quote(ferry.path)} check --json`, {
    phase: 'check',
    label: 'ferry check',
    timeoutMs: 120_000,
  });
  try {
    return JSON.parse(r.stdout) as CapabilitiesReport;
  } catch (err) {
    throw new FerryError(
      'FERRY_E_EXEC',
      `ferry check on ${text} did not answer in JSON: ${r.stdout.slice(0, 200)}`,
      {
        phase: 'check',
        cause: err,
      },
    );
  }
}
