// Test cases derived from the API's typebox schemas (JSON Schema underneath): fast-check arbitraries of values a
// schema accepts, and for every field of it the values it must refuse (wrong type, out of range, too long, off
// pattern, unknown field, missing field). The schema-driven fuzz tests send both to every endpoint.
import type { TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import fc from 'fast-check';
// registers the schemas' formats with typebox
import '../../src/api/validate.ts';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

interface S {
  type?: string;
  const?: Json;
  anyOf?: S[];
  properties?: Record<string, S>;
  required?: string[];
  additionalProperties?: boolean;
  items?: S;
  minItems?: number;
  maxItems?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  format?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
}

/** Values the schema accepts (checked with typebox: a generator bug shows as a failed precondition). */
export function validValues(schema: TSchema): fc.Arbitrary<unknown> {
  return arb(schema as unknown as S).filter((v) => Value.Check(schema, v));
}

function arb(s: S): fc.Arbitrary<Json> {
  if (s.const !== undefined) return fc.constant(s.const);
  if (s.anyOf) return fc.oneof(...s.anyOf.map(arb));
  switch (s.type) {
    case 'string': {
      if (s.format === 'ipv4') return fc.ipV4();
      const max = Math.min(s.maxLength ?? 64, 64);
      if (s.pattern)
        return fc.stringMatching(new RegExp(s.pattern)).filter((x) => x.length <= (s.maxLength ?? 1e9));
      return fc.string({ minLength: s.minLength ?? 0, maxLength: max });
    }
    case 'integer':
      return fc.integer({
        min: Math.max(s.minimum ?? -1e6, s.exclusiveMinimum !== undefined ? s.exclusiveMinimum + 1 : -1e9),
        max: Math.min(s.maximum ?? 1e9, 2 ** 31 - 1),
      });
    case 'number':
      return fc.double({
        min: s.exclusiveMinimum !== undefined ? s.exclusiveMinimum + 0.001 : (s.minimum ?? -1e6),
        max: s.maximum ?? 1e6,
        noNaN: true,
        noDefaultInfinity: true,
      });
    case 'boolean':
      return fc.boolean();
    case 'array':
      return fc.array(arb(s.items ?? {}), {
        minLength: s.minItems ?? 0,
        maxLength: Math.min(s.maxItems ?? 4, Math.max(s.minItems ?? 0, 4)),
      });
    case 'object': {
      const props = s.properties ?? {};
      const model: Record<string, fc.Arbitrary<Json>> = {};
      for (const [k, v] of Object.entries(props)) model[k] = arb(v);
      return fc.record(model, { requiredKeys: s.required ?? [] }) as fc.Arbitrary<Json>;
    }
    default:
      return fc.jsonValue() as fc.Arbitrary<Json>;
  }
}

/** One value the schema must refuse, with what is wrong (the path of the field and how). */
export interface BadCase {
  what: string;
  value: unknown;
}

/**
 * For a valid `base`, values the schema refuses that differ from it in one field each: every field wrong in
 * every way its schema says (type, range, length, pattern, format, literal), every required field missing, an
 * unknown field. Only values typebox confirms invalid are returned.
 */
export function badCases(schema: TSchema, base: unknown): BadCase[] {
  const out: BadCase[] = [];
  walk(schema as unknown as S, base as Json, '', (path, value) => {
    const v = setAt(base as Json, path, value);
    out.push({ what: `${path || '/'} = ${show(value)}`, value: v });
  });
  return out.filter((c) => !Value.Check(schema, c.value));
}

const REMOVE = Symbol('remove');

function walk(
  s: S,
  cur: Json | undefined,
  path: string,
  emit: (path: string, v: Json | typeof REMOVE) => void,
) {
  for (const v of wrongValues(s)) emit(path, v);
  if (s.type === 'object' && cur && typeof cur === 'object' && !Array.isArray(cur)) {
    for (const k of s.required ?? []) emit(`${path}/${k}`, REMOVE);
    if (s.additionalProperties === false) emit(`${path}/zzUnknownField`, 1);
    for (const [k, sub] of Object.entries(s.properties ?? {})) walk(sub, cur[k], `${path}/${k}`, emit);
  }
  if (s.type === 'array' && Array.isArray(cur) && s.items && cur.length > 0) {
    walk(s.items, cur[0], `${path}/0`, emit);
  }
}

/** Values of the wrong kind, or of the right kind just outside the schema's limits. */
function wrongValues(s: S): Json[] {
  if (s.const !== undefined) return [typeof s.const === 'string' ? `${s.const}x` : 'x', null];
  if (s.anyOf) return ['zz-none-of-these', 12345, null];
  switch (s.type) {
    case 'string': {
      const out: Json[] = [7, null, true, ['x'], {}];
      if (s.maxLength !== undefined && s.maxLength < 100_000) out.push('a'.repeat(s.maxLength + 1));
      if ((s.minLength ?? 0) > 0) out.push('');
      if (s.pattern) out.push('', '../etc', 'a/b', ' x', 'x\u0000y', '%2e%2e', '\u00e9t\u00e9');
      if (s.format === 'ipv4') out.push('300.1.1.1', '10.0.0', '::1', 'localhost', '10.0.0.1/24');
      return out;
    }
    case 'integer':
    case 'number': {
      const out: Json[] = ['5', null, true, [], {}];
      if (s.type === 'integer') out.push(1.5);
      if (s.minimum !== undefined) out.push(s.minimum - 1);
      if (s.exclusiveMinimum !== undefined) out.push(s.exclusiveMinimum);
      if (s.maximum !== undefined) out.push(s.maximum + 1, 1e99);
      return out;
    }
    case 'boolean':
      return ['true', 1, null];
    case 'array': {
      const out: Json[] = ['x', {}, null, 3];
      if (s.maxItems !== undefined && s.maxItems <= 20_000)
        out.push(Array.from({ length: s.maxItems + 1 }, () => firstValid(s.items ?? {})));
      if ((s.minItems ?? 0) > 0) out.push([]);
      return out;
    }
    case 'object':
      return [[], 'x', null, 5];
    default:
      return [];
  }
}

/** A simple value the schema accepts, to fill arrays with. */
function firstValid(s: S): Json {
  return fc.sample(arb(s), { numRuns: 1, seed: 1 })[0] as Json;
}

function setAt(base: Json, path: string, value: Json | typeof REMOVE): Json {
  if (path === '') return value === REMOVE ? null : value;
  const copy = structuredClone(base) as Json;
  const keys = path.split('/').slice(1);
  let o = copy as Record<string, Json>;
  for (const k of keys.slice(0, -1)) {
    if (o[k] === undefined || o[k] === null || typeof o[k] !== 'object') o[k] = {};
    o = o[k] as Record<string, Json>;
  }
  const last = keys[keys.length - 1]!;
  if (value === REMOVE) delete o[last];
  else o[last] = value;
  return copy;
}

function show(v: unknown): string {
  if (v === REMOVE) return '(missing)';
  const t = JSON.stringify(v) ?? String(v);
  return t.length > 40 ? `${t.slice(0, 37)}...` : t;
}
