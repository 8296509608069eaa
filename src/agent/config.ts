// The agent's configuration: one schema, one defaults object, validated once at start.
import { readFile } from 'node:fs/promises';
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { FerryError } from '../core/errors.ts';
import { NAME_PATTERN } from '../core/names.ts';

export const AgentConfigSchema = Type.Object({
  host: Type.String({ pattern: NAME_PATTERN }),
  listen: Type.Object({ address: Type.String(), port: Type.Integer({ minimum: 1, maximum: 65535 }) }),
  stateDir: Type.String({ minLength: 1 }),
  imagesDir: Type.String({ minLength: 1 }),
  cgroupParent: Type.String({ pattern: '^/[a-zA-Z0-9_.-]+$' }),
  network: Type.Object({
    bridge: Type.String({ pattern: '^[a-zA-Z0-9_.-]{1,15}$' }),
    netnsPrefix: Type.String({ pattern: '^[a-zA-Z0-9_.-]{1,64}$' }),
    prefixLen: Type.Integer({ minimum: 8, maximum: 32 }),
  }),
  tls: Type.Object({ cert: Type.String(), key: Type.String(), ca: Type.String() }),
  criuPath: Type.String(),
  runcPath: Type.String(),
  logLevel: Type.String(),
  faults: Type.Array(Type.String()),
  /** The controller to report to, if any. */
  controller: Type.Optional(
    Type.Object({
      name: Type.String({ pattern: NAME_PATTERN }),
      address: Type.String(),
      port: Type.Integer({ minimum: 1, maximum: 65535 }),
    }),
  ),
  heartbeat: Type.Object({
    intervalMs: Type.Integer({ minimum: 100, maximum: 600_000 }),
    fullEvery: Type.Integer({ minimum: 1, maximum: 1000 }),
    cpuDeltaPercent: Type.Number({ minimum: 0 }),
    memoryDeltaBytes: Type.Integer({ minimum: 0 }),
  }),
  /** CRIU options written into the file runc hands CRIU (runtime/criu-config.ts); each defaults to on / 64 MiB. */
  criu: Type.Optional(
    Type.Object(
      {
        linkRemap: Type.Optional(Type.Boolean()),
        extUnixSk: Type.Optional(Type.Boolean()),
        ghostLimitMiB: Type.Optional(Type.Integer({ minimum: 0, maximum: 65_536 })),
      },
      { additionalProperties: false },
    ),
  ),
  /** What this host offers the scheduler; declared, so that simulated hosts on one machine have capacities. */
  capacity: Type.Optional(
    Type.Object({ cores: Type.Number({ exclusiveMinimum: 0 }), memoryBytes: Type.Integer({ minimum: 1 }) }),
  ),
});

export type AgentConfig = Static<typeof AgentConfigSchema>;

export const AGENT_DEFAULTS = {
  listen: { address: '0.0.0.0', port: 7470 },
  stateDir: '/var/lib/ferry/agent',
  imagesDir: '/run/ferry/images',
  cgroupParent: '/ferry',
  network: { bridge: 'br0', netnsPrefix: 'ferry', prefixLen: 24 },
  criuPath: 'criu',
  runcPath: 'runc',
  logLevel: 'info',
  faults: [] as string[],
  heartbeat: { intervalMs: 3000, fullEvery: 10, cpuDeltaPercent: 5, memoryDeltaBytes: 16 << 20 },
};

export function parseAgentConfig(raw: unknown, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  const merged = { ...AGENT_DEFAULTS, ...(raw as object) } as Record<string, unknown>;
  if (env['FERRY_CRIU_PATH']) merged['criuPath'] = env['FERRY_CRIU_PATH'];
  if (env['FERRY_FAULTS']) merged['faults'] = env['FERRY_FAULTS'].split(',').filter(Boolean);
  if (!Value.Check(AgentConfigSchema, merged)) {
    const first = [...Value.Errors(AgentConfigSchema, merged)][0];
    throw new FerryError(
      'FERRY_E_INPUT_ARGS',
      `invalid agent config: ${first?.path ?? ''} ${first?.message ?? ''}`.trim(),
    );
  }
  return merged as AgentConfig;
}

export async function loadAgentConfig(
  path: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<AgentConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new FerryError('FERRY_E_INPUT_ARGS', `cannot read agent config ${path}`, { cause: err });
  }
  return parseAgentConfig(JSON.parse(text), env);
}
