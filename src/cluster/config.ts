// The controller's configuration: one schema, one defaults object, validated at start.
import { readFile } from 'node:fs/promises';
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { StrategyChoice } from '../api/schemas.ts';
import { FerryError } from '../core/errors.ts';
import { NAME_PATTERN } from '../core/names.ts';
import { CONTROLLER_DEFAULTS } from './controller.ts';

export const ControllerConfigSchema = Type.Object({
  name: Type.String({ pattern: NAME_PATTERN }),
  listen: Type.Object({ address: Type.String(), port: Type.Integer({ minimum: 1, maximum: 65535 }) }),
  tls: Type.Object({ cert: Type.String(), key: Type.String(), ca: Type.String() }),
  store: Type.Union([
    Type.Object({ kind: Type.Literal('sqlite'), path: Type.String({ minLength: 1 }) }),
    Type.Object({
      kind: Type.Literal('etcd'),
      endpoint: Type.String({ minLength: 1 }),
      prefix: Type.String({ minLength: 1 }),
      /** How long a crashed leader blocks the others at most (seconds). */
      leaderTtlSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 600 })),
    }),
  ]),
  heartbeatTimeoutMs: Type.Integer({ minimum: 100 }),
  rebalanceIntervalMs: Type.Integer({ minimum: 0 }),
  targetPercent: Type.Number({ minimum: 1, maximum: 100 }),
  cooldownMs: Type.Integer({ minimum: 0 }),
  batchLimit: Type.Integer({ minimum: 1, maximum: 1000 }),
  concurrency: Type.Integer({ minimum: 1, maximum: 64 }),
  strategy: StrategyChoice,
  logLevel: Type.String(),
  /** The dashboard's own HTTPS port (server certificate only; browsers log in with `ferry dashboard`). */
  dashboard: Type.Optional(
    Type.Object({
      port: Type.Integer({ minimum: 1, maximum: 65535 }),
      /** Where it listens; the API's address when not given. */
      address: Type.Optional(Type.String()),
    }),
  ),
});

export type ControllerFileConfig = Static<typeof ControllerConfigSchema>;

export async function loadControllerConfig(path: string): Promise<ControllerFileConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new FerryError('FERRY_E_INPUT_ARGS', `cannot read controller config ${path}`, { cause: err });
  }
  const merged = { ...CONTROLLER_DEFAULTS, logLevel: 'info', ...(raw as object) };
  if (!Value.Check(ControllerConfigSchema, merged)) {
    const first = [...Value.Errors(ControllerConfigSchema, merged)][0];
    throw new FerryError(
      'FERRY_E_INPUT_ARGS',
      `invalid controller config: ${first?.path ?? ''} ${first?.message ?? ''}`.trim(),
    );
  }
  return merged as ControllerFileConfig;
}
