import { FerryError } from './errors.ts';

export const NAME_PATTERN = '^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$';
const NAME_RE = new RegExp(NAME_PATTERN);

/** Container and host names: never a path, never `..`. */
export function isValidName(name: unknown): name is string {
  return typeof name === 'string' && NAME_RE.test(name) && !name.includes('..');
}

export function checkName(name: unknown, what = 'container'): string {
  if (!isValidName(name)) {
    throw new FerryError(
      'FERRY_E_INPUT_NAME',
      `invalid ${what} name ${JSON.stringify(name)}: use 1-64 characters [a-zA-Z0-9_.-], starting with a letter or digit, no '/' or '..'`,
      { phase: 'input' },
    );
  }
  return name;
}
