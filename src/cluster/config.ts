// The controller's configuration: one schema, one defaults object, validated at start (docs/configuration.md
// documents every field; a test holds the page to the schema). Unknown fields are refused, not ignored.
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { StrategyChoice } from '../api/schemas.ts';
import { readConfigFile, schemaProblem } from '../core/config-file.ts';
import { FerryError } from '../core/errors.ts';
import { LOG_LEVELS } from '../core/log.ts';
import { NAME_PATTERN } from '../core/names.ts';
import { CONTROLLER_DEFAULTS } from './controller.ts';

const STRICT = { additionalProperties: false } as const;

export const ControllerConfigSchema = Type.Object(
  {
    name: Type.String({ pattern: NAME_PATTERN }),
    listen: Type.Object(
      { address: Type.String({ minLength: 1 }), port: Type.Integer({ minimum: 1, maximum: 65535 }) },
      STRICT,
    ),
    tls: Type.Object(
      {
        cert: Type.String({ minLength: 1 }),
        key: Type.String({ minLength: 1 }),
        ca: Type.String({ minLength: 1 }),
      },
      STRICT,
    ),
    store: Type.Union([
      Type.Object({ kind: Type.Literal('sqlite'), path: Type.String({ minLength: 1 }) }, STRICT),
      Type.Object(
        {
          kind: Type.Literal('etcd'),
          endpoint: Type.String({ minLength: 1 }),
          prefix: Type.String({ minLength: 1 }),
          /** How long a crashed leader blocks the others at most (seconds). */
          leaderTtlSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 600 })),
        },
        STRICT,
      ),
    ]),
    heartbeatTimeoutMs: Type.Integer({ minimum: 100 }),
    rebalanceIntervalMs: Type.Integer({ minimum: 0 }),
    targetPercent: Type.Number({ minimum: 1, maximum: 100 }),
    cooldownMs: Type.Integer({ minimum: 0 }),
    batchLimit: Type.Integer({ minimum: 1, maximum: 1000 }),
    concurrency: Type.Integer({ minimum: 1, maximum: 64 }),
    strategy: StrategyChoice,
    logLevel: Type.Union(LOG_LEVELS.map((l) => Type.Literal(l))),
  },
  STRICT,
);

export type ControllerFileConfig = Static<typeof ControllerConfigSchema>;

/** The controller config file when none is named (`ferry install --controller` writes it). */
export const CONTROLLER_CONFIG_PATH = '/etc/ferry/controller.json';

/** Every default of the controller's file: the policy's (controller.ts), the listen port, the store, the log. */
export const CONTROLLER_FILE_DEFAULTS = {
  ...CONTROLLER_DEFAULTS,
  listen: { address: '0.0.0.0', port: 7480 },
  store: { kind: 'sqlite' as const, path: '/var/lib/ferry/controller/state.db' },
  logLevel: 'info' as const,
};

export function parseControllerConfig(raw: unknown, source = 'controller config'): ControllerFileConfig {
  const invalid = (what: string) =>
    new FerryError('FERRY_E_INPUT_ARGS', `${source}: ${what}`, { phase: 'input' });
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw invalid('not a JSON object');
  const merged = { ...CONTROLLER_FILE_DEFAULTS, ...(raw as object) };
  if (!Value.Check(ControllerConfigSchema, merged))
    throw invalid(schemaProblem(ControllerConfigSchema, merged));
  return merged as ControllerFileConfig;
}

export async function loadControllerConfig(path: string): Promise<ControllerFileConfig> {
  return parseControllerConfig(await readConfigFile(path, 'controller'), path);
}
