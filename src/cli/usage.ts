// A command line commander refused, as one FerryError: one line on stderr (or JSON under --json) that names the
// problem and the help to read, instead of commander's own output followed by the whole help.
import type { Command, CommanderError } from 'commander';
import { FerryError } from '../core/errors.ts';

/** The command words of argv (`ferry ca issue ...` -> ['ca', 'issue']), as far as the tree knows them. */
export function commandPath(program: Command, args: readonly string[]): string[] {
  const path: string[] = [];
  let at = program;
  for (const word of args) {
    if (word === '--') break;
    if (word.startsWith('-')) continue;
    const sub = at.commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (!sub) break;
    path.push(sub.name());
    at = sub;
  }
  return path;
}

export function usageError(err: CommanderError, path: readonly string[] = []): FerryError {
  const help = `ferry ${[...path, '--help'].join(' ')}`;
  // commander.help: a group (`ferry`, `ferry ca`) was given without one of its commands
  const message =
    err.code === 'commander.help'
      ? `${path.length ? `ferry ${path.join(' ')}` : 'ferry'} needs a command`
      : err.message
          .replace(/^error: /, '')
          .split('\n')
          .map((l) => l.trim())
          .filter(Boolean)
          .join(' ');
  return new FerryError('FERRY_E_INPUT_ARGS', message, { phase: 'input', hint: `see ${help}` });
}
