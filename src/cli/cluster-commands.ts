// ferry cluster | rebalance | drain | controller: talk to the controller.
import type { MigrationRecord, PlanResult } from '../api/types.ts';
import { FerryError } from '../core/errors.ts';
import { checkName } from '../core/names.ts';
import { table } from '../core/table.ts';
import { withCluster } from './commands.ts';
import type { ClusterContext } from './context.ts';
import { formatBytes } from './render.ts';

interface Common {
  cluster?: string;
  json?: boolean;
}

export async function clusterCommand(o: Common): Promise<void> {
  await withCluster(o, async (ctx) => {
    const s = await ctx.controller().cluster();
    if (o.json) {
      process.stdout.write(`${JSON.stringify(s)}\n`);
      return;
    }
    const rows = [['HOST', 'STATE', 'LOAD', 'CAPACITY', 'CONTAINERS']];
    for (const h of s.hosts) {
      rows.push([
        h.name,
        h.up ? 'up' : 'DOWN',
        `${h.loadPercent.toFixed(0)}%`,
        `${h.capacity.cores} cores, ${formatBytes(h.capacity.memoryBytes)}`,
        h.containers.map((c) => `${c.name} (${c.cpuPercent.toFixed(0)}%)`).join(', ') || '-',
      ]);
    }
    process.stdout.write(`${table(rows)}\n`);
  });
}

function planText(plan: PlanResult): string {
  const lines = plan.moves.length
    ? plan.moves.map(
        (m) => `${m.container}: ${m.from} -> ${m.to}  (${m.cpuPercent.toFixed(0)}% CPU; ${m.reason})`,
      )
    : ['nothing to move'];
  const hosts = Object.keys(plan.before).sort();
  lines.push(
    '',
    table([
      ['HOST', 'LOAD BEFORE', 'LOAD AFTER'],
      ...hosts.map((h) => [h, `${plan.before[h]?.toFixed(0)}%`, `${plan.after[h]?.toFixed(0)}%`]),
    ]),
  );
  for (const n of plan.notes) lines.push(`note: ${n}`);
  return lines.join('\n');
}

async function follow(ctx: ClusterContext, batch: string, json: boolean): Promise<MigrationRecord[]> {
  const seen = new Set<string>();
  for (;;) {
    const ms = await ctx.controller().batch(batch);
    for (const m of ms) {
      const key = `${m.id}:${m.status}`;
      if (
        !json &&
        !seen.has(key) &&
        (m.status === 'done' || m.status === 'failed' || m.status === 'running')
      ) {
        process.stderr.write(
          `${m.status.padEnd(7)} ${m.container}: ${m.from} -> ${m.to}${m.freezeMs !== undefined ? ` (freeze ${m.freezeMs} ms)` : ''}${m.error ? ` ${m.error}` : ''}\n`,
        );
      }
      seen.add(key);
    }
    if (ms.every((m) => m.status === 'done' || m.status === 'failed')) return ms;
    await new Promise((r) => setTimeout(r, 300));
  }
}

export async function rebalanceCommand(o: Common & { dryRun?: boolean; target?: string }): Promise<void> {
  let target: number | undefined;
  if (o.target !== undefined) {
    target = /^\d{1,3}(\.\d+)?$/.test(o.target) ? Number(o.target) : Number.NaN;
    if (!Number.isFinite(target) || target < 1 || target > 100) {
      throw new FerryError('FERRY_E_INPUT_ARGS', `--target ${o.target}: give a percentage from 1 to 100`, {
        phase: 'input',
      });
    }
  }
  await withCluster(o, async (ctx) => {
    const r = await ctx.controller().rebalance({
      ...(o.dryRun ? { dryRun: true } : {}),
      ...(target !== undefined ? { targetPercent: target } : {}),
    });
    if (!o.json) process.stdout.write(`${planText(r.plan)}\n`);
    const done = r.batch ? await follow(ctx, r.batch, o.json === true) : [];
    if (o.json) process.stdout.write(`${JSON.stringify({ ...r, migrations: done })}\n`);
    if (done.some((m) => m.status === 'failed')) process.exitCode = 1;
  });
}

export async function drainCommand(host: string, o: Common): Promise<void> {
  checkName(host, 'host');
  await withCluster(o, async (ctx) => {
    ctx.host(host);
    const r = await ctx.controller().drain(host);
    if (!o.json) process.stdout.write(`${planText(r.plan)}\n`);
    const done = r.batch ? await follow(ctx, r.batch, o.json === true) : [];
    if (o.json) process.stdout.write(`${JSON.stringify({ ...r, migrations: done })}\n`);
    // a host that is not empty afterwards is not drained, whatever moved: a script must not power it off
    const left = r.plan.remaining ?? [];
    if (left.length > 0 && !o.json)
      process.stderr.write(
        `ferry: ${host} is not empty: left on it: ${left.join(', ')} (the notes above say why)\n`,
      );
    if (done.some((m) => m.status === 'failed') || left.length > 0) process.exitCode = 1;
  });
}
