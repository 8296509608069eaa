// Checks a value against one of the API's schemas where the caller wants the answer before sending (the CLI, so
// that a refused request prints nothing and sends nothing): the same schema the server validates with.
import type { TSchema } from '@sinclair/typebox';
import { FormatRegistry, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { ipv4ToInt } from '../core/addresses.ts';
import { MigrateBody } from './schemas.ts';

// the formats the schemas use, as the server's validator (ajv-formats) reads them
if (!FormatRegistry.Has('ipv4')) FormatRegistry.Set('ipv4', (v) => ipv4ToInt(v) !== undefined);

/** The migration options as MigrateBody takes them, without the destination (the CLI has only its name). */
export const MigrationOptionsSchema = Type.Omit(MigrateBody, ['to']);

/** The first violation: the field (a JSON pointer, e.g. /maxDowntimeMs) and what is wrong; undefined when valid. */
export function firstSchemaError(
  schema: TSchema,
  value: unknown,
): { path: string; message: string } | undefined {
  if (Value.Check(schema, value)) return undefined;
  const e = [...Value.Errors(schema, value)][0];
  return { path: e?.path ?? '', message: e?.message ?? 'invalid' };
}
