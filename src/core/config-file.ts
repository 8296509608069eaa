// Reading the agent's and the controller's config files: the file's JSON, and the first thing wrong with it under
// its schema, each naming the file, so that a daemon refuses to start with one line that says what to fix.
import { readFile } from 'node:fs/promises';
import type { TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { FerryError } from './errors.ts';

/** The first thing wrong with a value under a schema, as `/path: message` (an unknown field named as such). */
export function schemaProblem(schema: TSchema, value: unknown): string {
  const first = [...Value.Errors(schema, value)][0];
  if (!first) return 'invalid';
  const unknown = first.message === 'Unexpected property' || /additional/i.test(first.message);
  return unknown ? `${first.path}: unknown field` : `${first.path || '/'}: ${first.message.toLowerCase()}`;
}

/** A config file's JSON; FERRY_E_INPUT_ARGS naming the file when it cannot be read or is not JSON. */
export async function readConfigFile(path: string, what: 'agent' | 'controller'): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new FerryError(
      'FERRY_E_INPUT_ARGS',
      `cannot read the ${what} config ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      { phase: 'input', cause: err, hint: `ferry install --${what} writes one; docs/configuration.md` },
    );
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new FerryError('FERRY_E_INPUT_ARGS', `${path}: not JSON (${(err as Error).message})`, {
      phase: 'input',
      cause: err,
    });
  }
}
