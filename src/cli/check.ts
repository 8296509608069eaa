// ferry check: CRIU/runc versions, kernel features, and which strategies work here (or on --host).

import { hostname } from 'node:os';
import { gatherFacts } from '../agent/facts.ts';
import { assessStrategies } from '../migration/capabilities.ts';
import type { CapabilitiesReport } from '../migration/types.ts';
import { Criu } from '../runtime/criu.ts';
import type { Runner } from '../runtime/exec.ts';
import { Runc } from '../runtime/runc.ts';
import { ClusterContext } from './context.ts';
import { table } from './render.ts';

export async function localCapabilities(runner: Runner): Promise<CapabilitiesReport> {
  const facts = await gatherFacts(hostname(), new Criu(runner), new Runc(runner, { root: '/run/runc' }));
  return { facts, strategies: assessStrategies(facts) };
}

export function capabilitiesText(r: CapabilitiesReport): string {
  const f = r.facts;
  const lines = [
    `host ${f.host}  kernel ${f.kernel}  ${f.root ? 'root' : 'NOT root'}`,
    `criu ${f.criuVersion ?? 'missing'}  runc ${f.runcVersion ?? 'missing'}  criu check: ${f.criuCheck.ok ? 'ok' : `FAILED (${f.criuCheck.message})`}`,
    `fs.pipe-max-size ${f.pipeMaxSize}  CRIU kernel-feature cache: ${f.kdat ?? 'unknown'}${f.kdat === 'absent' ? ' (every CRIU run probes the kernel first, ~35 ms; an agent start stages it)' : ''}`,
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

export async function checkCommand(
  o: { cluster?: string; host?: string; json?: boolean },
  runner: Runner,
): Promise<void> {
  let report: CapabilitiesReport;
  if (o.host) {
    const ctx = await ClusterContext.load(o.cluster);
    try {
      report = await ctx.client(o.host).request<CapabilitiesReport>('GET', '/v1/capabilities');
    } finally {
      ctx.close();
    }
  } else {
    report = await localCapabilities(runner);
  }
  process.stdout.write(o.json ? `${JSON.stringify(report)}\n` : `${capabilitiesText(report)}\n`);
}
