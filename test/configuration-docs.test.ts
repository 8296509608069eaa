// docs/configuration.md against the config schemas: every field of the agent's and the controller's files has a
// row, and every row names a field that exists, so the page cannot drift from what the daemons accept.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import type { TSchema } from '@sinclair/typebox';
import { AgentConfigSchema } from '../src/agent/config.ts';
import { ControllerConfigSchema } from '../src/cluster/config.ts';

/** `listen.address`, `peers[].name`, `store.path` (each member of a union contributes its fields). */
function fieldPaths(schema: TSchema, prefix = ''): string[] {
  const s = schema as TSchema & { properties?: Record<string, TSchema>; anyOf?: TSchema[]; items?: TSchema };
  if (s.anyOf) return [...new Set(s.anyOf.flatMap((m) => fieldPaths(m, prefix)))];
  if (s.type === 'array' && s.items) return fieldPaths(s.items, `${prefix}[]`);
  if (s.type !== 'object' || !s.properties) return [];
  return Object.entries(s.properties).flatMap(([k, v]) => {
    const p = prefix ? `${prefix}.${k}` : k;
    return [p, ...fieldPaths(v, p)];
  });
}

const doc = readFileSync(new URL('../docs/configuration.md', import.meta.url), 'utf8');

/** The first column of the field table under a heading. */
function documented(heading: string): string[] {
  const section = doc.slice(doc.indexOf(heading));
  const table = section.slice(section.indexOf('| field |'));
  const rows: string[] = [];
  for (const line of table.split('\n').slice(2)) {
    const m = /^\| `([^`]+)` \|/.exec(line);
    if (!m) break;
    rows.push(m[1]!);
  }
  return rows;
}

for (const [what, heading, schema] of [
  ['agent', '## The agent', AgentConfigSchema],
  ['controller', '## The controller', ControllerConfigSchema],
] as const) {
  test(`docs/configuration.md documents every field of the ${what} config, and only those`, () => {
    const fields = fieldPaths(schema)
      .map((p) => p.replace(/\[\]$/, ''))
      .filter((p, i, all) => all.indexOf(p) === i);
    // every field that holds a value has its row; an object's own row (a default for the whole) is optional
    const leaves = fields.filter((f) => !fields.some((g) => g.startsWith(`${f}.`) || g.startsWith(`${f}[]`)));
    const rows = documented(heading);
    assert.deepEqual(
      leaves.filter((f) => !rows.includes(f)),
      [],
      'fields without a row',
    );
    assert.deepEqual(
      rows.filter((r) => !fields.includes(r)),
      [],
      'rows of no field',
    );
  });
}
