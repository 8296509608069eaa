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
          /** One client URL; `endpoints` lists several (each tried in turn). */
          endpoint: Type.Optional(Type.String({ minLength: 1 })),
          endpoints: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1, maxItems: 64 })),
          prefix: Type.String({ minLength: 1 }),
          /** How long a crashed leader blocks the others at most (seconds). */
          leaderTtlSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 600 })),
          /** https endpoints: etcd's CA, and the client certificate and key the controller presents. */
          tls: Type.Optional(
            Type.Object(
              {
                ca: Type.String({ minLength: 1 }),
                cert: Type.Optional(Type.String({ minLength: 1 })),
                key: Type.Optional(Type.String({ minLength: 1 })),
              },
              STRICT,
            ),
          ),
          /** etcd's authentication: the user, and a file (0600) holding its password. */
          auth: Type.Optional(
            Type.Object(
              { user: Type.String({ minLength: 1 }), passwordFile: Type.String({ minLength: 1 }) },
              STRICT,
            ),
          ),
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
    /** The dashboard's own HTTPS port (server certificate only; browsers log in with `ferry dashboard`). */
    dashboard: Type.Optional(
      Type.Object(
        {
          port: Type.Integer({ minimum: 1, maximum: 65535 }),
          /** Where it listens; the API's address when not given. */
          address: Type.Optional(Type.String({ minLength: 1 })),
        },
        STRICT,
      ),
    ),
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
  const cfg = merged as ControllerFileConfig;
  if (cfg.store.kind === 'etcd') {
    const eps = etcdEndpoints(cfg.store);
    if (!eps.length) throw invalid('/store: etcd needs endpoint or endpoints');
    const bad = eps.find((e) => !/^https?:\/\/[^/]+$/.test(e));
    if (bad) throw invalid(`/store/endpoints ${bad} is not http(s)://host:port`);
    if (cfg.store.tls && eps.some((e) => e.startsWith('http://')))
      throw invalid('/store/tls is given but an endpoint is http://');
    if (!cfg.store.tls && eps.some((e) => e.startsWith('https://')))
      throw invalid("/store/tls is missing: https endpoints need etcd's CA");
    if (Boolean(cfg.store.tls?.cert) !== Boolean(cfg.store.tls?.key))
      throw invalid('/store/tls: give both cert and key, or neither');
  }
  return cfg;
}

/** The etcd client URLs of an etcd store: `endpoint` and `endpoints` together. */
export function etcdEndpoints(store: { endpoint?: string; endpoints?: string[] }): string[] {
  return [...(store.endpoint ? [store.endpoint] : []), ...(store.endpoints ?? [])];
}

export async function loadControllerConfig(path: string): Promise<ControllerFileConfig> {
  return parseControllerConfig(await readConfigFile(path, 'controller'), path);
}
