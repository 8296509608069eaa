// `ferry migrate`: its flags become the API's migration options, checked against the schema the agent validates
// with, and the migration runs through the source agent (commands.ts runMigration) or, to ssh://, in this process.
import type { MigrationEvent, MigrationOptions } from '../api/types.ts';
import { firstSchemaError, MigrationOptionsSchema } from '../api/validate.ts';
import { FerryError } from '../core/errors.ts';
import { checkName } from '../core/names.ts';
import { isSshTarget, parseSshTarget } from '../remote/remote-host.ts';
import { DEFAULT_RUNC_ROOT } from '../remote/runc-root.ts';
import { type Common, runMigration, withCluster } from './commands.ts';
import { exitStatusOfReport, inDoubt } from './exit-status.ts';
import { eventPrinter, reportText } from './render.ts';

/** The migrate command's flags as commander names them (--max-downtime -> maxDowntime). */
export interface MigrateFlags {
  strategy: string;
  compress?: string;
  streams?: number;
  maxDowntime?: number;
  threshold?: number;
  maxRounds?: number;
  skipInFlight?: boolean;
}

/** The one place the CLI's flags become the API's names (api/types.ts: MigrationOptions). */
export function migrationOptions(f: MigrateFlags): MigrationOptions {
  return {
    strategy: f.strategy as MigrationOptions['strategy'],
    ...(f.maxDowntime !== undefined ? { maxDowntimeMs: f.maxDowntime } : {}),
    ...(f.threshold !== undefined ? { thresholdBytes: f.threshold } : {}),
    ...(f.maxRounds !== undefined ? { maxRounds: f.maxRounds } : {}),
    ...(f.compress !== undefined
      ? { compress: f.compress as NonNullable<MigrationOptions['compress']> }
      : {}),
    ...(f.streams !== undefined ? { streams: f.streams } : {}),
    ...(f.skipInFlight ? { skipInFlight: true } : {}),
  };
}

/** The flag each migration option comes from, to name it in an error. */
const OPTION_FLAGS: Record<string, string> = {
  strategy: '--strategy',
  maxDowntimeMs: '--max-downtime',
  thresholdBytes: '--threshold',
  maxRounds: '--max-rounds',
  compress: '--compress',
  streams: '--streams',
  skipInFlight: '--skip-in-flight',
};

/** Refuses options the agent would refuse (the same schema), before anything is printed or sent. */
export function checkMigrationOptions(options: MigrationOptions): void {
  const err = firstSchemaError(MigrationOptionsSchema, options);
  if (!err) return;
  const key = err.path.split('/')[1] ?? '';
  const value = (options as unknown as Record<string, unknown>)[key];
  throw new FerryError(
    'FERRY_E_INPUT_ARGS',
    `${OPTION_FLAGS[key] ?? key} ${String(value)}: ${err.message.toLowerCase()}`,
    { phase: 'input', hint: 'see ferry migrate --help' },
  );
}

export async function migrateCommand(
  name: string,
  o: Common & MigrateFlags & { to: string; events?: boolean; runcRoot?: string; sshConfig?: string },
): Promise<void> {
  checkName(name);
  const agentless = isSshTarget(o.to);
  if (agentless) parseSshTarget(o.to);
  else checkName(o.to, 'host');
  if (!agentless && (o.runcRoot !== undefined || o.sshConfig !== undefined))
    throw new FerryError(
      'FERRY_E_INPUT_ARGS',
      `${o.runcRoot !== undefined ? '--runc-root' : '--ssh-config'} needs --to ssh://HOST (a migration without an agent)`,
      { phase: 'input' },
    );
  if (o.events && !o.json)
    throw new FerryError('FERRY_E_INPUT_ARGS', '--events needs --json (the events are NDJSON lines)', {
      phase: 'input',
    });
  const options = migrationOptions(o);
  checkMigrationOptions(options);
  // --json --events: every event as it comes, one JSON object a line; the report ends the stream
  const printer = eventPrinter(o, { stdout: process.stdout, stderr: process.stderr });
  let started = false;
  const onEvent = (e: MigrationEvent) => {
    if (e.type === 'started') started = true;
    printer.event(e);
  };
  const migrate = agentless
    ? async () =>
        // loaded only here: the source half of an agentless migration is the engine itself, which a migration
        // between agents (the source agent runs it) never needs in this process
        (await import('../remote/agentless.ts')).agentlessMigration({
          name,
          to: o.to,
          options,
          runcRoot: o.runcRoot ?? DEFAULT_RUNC_ROOT,
          ...(o.sshConfig ? { sshConfig: o.sshConfig } : {}),
          onEvent,
        })
    : () => withCluster(o, (ctx) => runMigration(ctx, name, o.to, options, onEvent));
  const report = await migrate().catch((err: unknown) => {
    // once the source agent took the migration, an error here means this command could not learn how it
    // ended: the container may be anywhere (exit status 3, docs/errors.md)
    throw started ? inDoubt(err) : err;
  });
  printer.finish();
  if (o.events) process.stdout.write(`${JSON.stringify({ type: 'result', report })}\n`);
  else if (o.json) process.stdout.write(`${JSON.stringify(report)}\n`);
  else process.stdout.write(`${reportText(report)}\n`);
  if (!report.ok) {
    const e = report.error;
    if (!o.json)
      process.stderr.write(`ferry: ${e?.code ?? 'FERRY_E_INTERNAL'}: ${e?.message ?? 'migration failed'}\n`);
    process.exit(exitStatusOfReport(report));
  }
}
