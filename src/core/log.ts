import { type Logger, pino } from 'pino';

export type { Logger };

/** pino's levels, as the agent's and the controller's `logLevel` take them. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** JSON lines on the given fd (stderr by default); silent unless asked for in the CLI. */
export function createLogger(opts: { level?: string; name?: string; fd?: number } = {}): Logger {
  return pino(
    { level: opts.level ?? 'info', base: opts.name ? { name: opts.name } : {} },
    pino.destination({ fd: opts.fd ?? 2, sync: true }),
  );
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
