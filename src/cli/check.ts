// ferry check: CRIU/runc versions, kernel features, and which strategies work here (or on --host).

import type { CapabilitiesReport } from '../api/types.ts';
import { table } from '../core/table.ts';
import { remoteCapabilities } from '../remote/remote-host.ts';
import { announceCluster } from './commands.ts';
import { ClusterContext } from './context.ts';

export function capabilitiesText(r: CapabilitiesReport): string {
  const f = r.facts;
  const lines = [
    `host ${f.host}  kernel ${f.kernel}  ${f.root ? 'root' : 'NOT root'}`,
    `criu ${f.criuVersion ?? 'missing'}  runc ${f.runcVersion ?? 'missing'}  criu check: ${f.criuCheck.ok ? 'ok' : `FAILED (${f.criuCheck.message})`}`,
    `fs.pipe-max-size ${f.pipeMaxSize}  CRIU kernel-feature cache: ${f.kdat ?? 'unknown'}${f.kdat === 'absent' ? ' (every CRIU run probes the kernel first, ~35 ms; an agent start stages it)' : ''}`,
    ...conntrackLine(f),
    ...(f.criuLibraries ?? []).map((l) =>
      l.installed
        ? `CRIU ${l.name} library: ${l.path}`
        : `CRIU ${l.name} library: MISSING (${l.path}): ${l.without} (scripts/setup.sh native builds it)`,
    ),
    `capabilities: ${Object.entries(f.capabilities ?? {})
      .map(([k, v]) => `${k.replace('CAP_', '').toLowerCase()} ${v ? 'yes' : 'NO'}`)
      .join(', ')}`,
    '',
    table([
      ['FEATURE', 'OK', 'DETAIL'],
      ...Object.entries(f.features).map(([k, v]) => [k, v.ok ? 'yes' : 'no', v.message]),
    ]),
    '',
    table([
      ['STRATEGY', 'WORKS', 'HOW / WHY NOT'],
      ...Object.entries(r.strategies).map(([k, v]) => [
        k,
        v.ok ? 'yes' : 'no',
        v.ok ? (v.mode ?? '') : (v.why ?? ''),
      ]),
    ]),
  ];
  return lines.join('\n');
}

/** The conntrack table's size, and what it costs every dump when it is large (runtime/host-facts.ts). */
function conntrackLine(f: CapabilitiesReport['facts']): string[] {
  if (f.conntrackBuckets === undefined) return [];
  const why = f.flags?.conntrack.why ? `: ${f.flags.conntrack.why}` : '';
  return [`conntrack table: ${f.conntrackBuckets} buckets${why}`];
}

/**
 * With --host the agent answers (GET /v1/capabilities); with --host ssh://… ferry's executable on that host. Without it the facts are gathered here, the way an
 * agent gathers them: through the agent's entry module, loaded only for this command.
 */
export async function checkCommand(o: {
  cluster?: string;
  host?: string;
  sshConfig?: string;
  json?: boolean;
}): Promise<void> {
  let report: CapabilitiesReport;
  if (o.host?.startsWith('ssh://')) {
    // no agent there: ferry's own executable runs the check over ssh (copied first when missing)
    report = await remoteCapabilities(o.host, o.sshConfig ? { sshConfig: o.sshConfig } : {});
  } else if (o.host) {
    const ctx = await ClusterContext.load(o.cluster);
    announceCluster(ctx);
    try {
      report = await ctx.client(o.host).capabilities();
    } finally {
      ctx.close();
    }
  } else {
    const { localCapabilities } = await import('../agent/main.ts');
    report = await localCapabilities();
  }
  process.stdout.write(o.json ? `${JSON.stringify(report)}\n` : `${capabilitiesText(report)}\n`);
}
