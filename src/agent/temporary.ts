// The temporary destination agent of an agentless migration (`ferry migrate NAME --to ssh://…`), started over ssh
// by the source's CLI with ferry's copied executable: `ferry agent --stdin`. Its configuration and TLS material
// (a certificate of the one-time CA made for this migration, and its key) arrive as one JSON line on standard
// input, so no secret ever lies on the remote's command line or in a file another user could read. It listens on
// the remote's loopback only (the source reaches it through `ssh -L`) and lives as long as its standard input:
// when the ssh session ends (the migration is over, or the connection dropped), whatever has not been committed
// is aborted, its private files are removed and it exits. A restored copy not committed yet is also killed by the
// dead-man switch should this process die first.
import { once } from 'node:events';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { createLogger } from '../core/log.ts';
import { ProcessRunner } from '../runtime/exec.ts';
import { umount } from '../runtime/mounts.ts';
import { type AgentConfig, parseAgentConfig } from './config.ts';

/** What starting an agent gives back, as this module needs it (agent/main.ts passes its startAgent in). */
export type StartAgent = (
  cfg: AgentConfig,
  log: Logger,
) => Promise<{ close(): Promise<void>; abortUncommitted(): Promise<string[]> }>;

/** Where a temporary agent keeps the containers it received: they stay there after it exits. */
export const TEMPORARY_STATE_DIR = '/var/lib/ferry/agentless';
/** Its private, short-lived files (TLS material, incoming images): removed when it exits. */
const RUN_DIR = '/run/ferry';
/** The line that tells the source the API listens. */
export const READY_LINE = 'ferry-agent-ready';

export interface TemporaryAgentInput {
  /** Agent config fields (docs/configuration.md) but stateDir, imagesDir and tls, which are chosen here. */
  config: Record<string, unknown>;
  tls: { key: string; cert: string; ca: string };
}

/** The first line of `input`; the stream stays open (its end is the agent's end), whatever follows is unread. */
function readFirstLine(input: Readable, limit = 1 << 20): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const fail = () =>
      reject(
        new FerryError('FERRY_E_INPUT_ARGS', 'agent --stdin: no configuration line on standard input', {
          phase: 'input',
        }),
      );
    const onData = (chunk: Buffer | string) => {
      text += String(chunk);
      const nl = text.indexOf('\n');
      if (nl < 0 && text.length <= limit) return;
      input.off('data', onData);
      input.off('end', fail);
      input.pause();
      if (nl < 0) fail();
      else resolve(text.slice(0, nl));
    };
    input.on('data', onData);
    input.once('end', fail);
  });
}

/**
 * This host's own settings for its temporary agents, if any: `agent.json` in the state directory, with the agent
 * config's fields that describe the host (network: its LAN bridge and namespace prefix, cgroupParent, criu, ...).
 * What the session decides (name, listen address, peers, TLS) comes from the source and wins.
 */
async function localSettings(stateDir: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(join(stateDir, 'agent.json'), 'utf8');
  } catch {
    return {};
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // refused below
  }
  throw new FerryError('FERRY_E_INPUT_ARGS', `${join(stateDir, 'agent.json')} is not a JSON object`, {
    phase: 'input',
  });
}

/** Runs until `input` ends; resolves once everything uncommitted is aborted and the private files are gone. */
export async function runTemporaryAgent(
  startAgent: StartAgent,
  input: Readable,
  output: Writable,
  env: NodeJS.ProcessEnv = process.env,
): Promise<void> {
  const line = await readFirstLine(input);
  let doc: TemporaryAgentInput;
  try {
    doc = JSON.parse(line) as TemporaryAgentInput;
  } catch {
    throw new FerryError('FERRY_E_INPUT_ARGS', 'agent --stdin: the configuration line is not JSON', {
      phase: 'input',
    });
  }
  if (!doc?.tls?.key || !doc.tls.cert || !doc.tls.ca || typeof doc.config !== 'object')
    throw new FerryError('FERRY_E_INPUT_ARGS', 'agent --stdin: expected {config, tls: {key, cert, ca}}', {
      phase: 'input',
    });
  // (the testbed's simulated hosts share one filesystem: each one's sshd names a directory of its own)
  const stateDir = env['FERRY_AGENTLESS_DIR'] || TEMPORARY_STATE_DIR;
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  await mkdir(RUN_DIR, { recursive: true, mode: 0o700 });
  const run = await mkdtemp(join(RUN_DIR, 'agentless-'));
  const imagesDir = join(run, 'images');
  let agent: Awaited<ReturnType<StartAgent>> | undefined;
  try {
    const tls = { key: join(run, 'agent.key'), cert: join(run, 'agent.crt'), ca: join(run, 'ca.crt') };
    await writeFile(tls.key, doc.tls.key, { mode: 0o600 });
    await writeFile(tls.cert, doc.tls.cert, { mode: 0o600 });
    await writeFile(tls.ca, doc.tls.ca, { mode: 0o600 });
    const cfg = parseAgentConfig(
      { ...(await localSettings(stateDir)), ...doc.config, stateDir, imagesDir, tls },
      env,
      'agent --stdin',
    );
    agent = await startAgent(cfg, createLogger({ name: `agent-${cfg.host}`, level: cfg.logLevel }));
    output.write(`${READY_LINE} ${cfg.listen.port}\n`);
    // the dead-man switch of the whole agent: the ssh session's end closes standard input
    if (!input.readableEnded) {
      const ended = once(input, 'end').catch(() => {});
      input.resume();
      await ended;
    }
  } finally {
    await agent?.close().catch(() => {});
    await agent?.abortUncommitted().catch(() => {});
    // the agent mounts a tmpfs for the images where there is none
    await umount(new ProcessRunner(), imagesDir).catch(() => {});
    await rm(run, { recursive: true, force: true });
  }
}
