// ferry demo: two simulated hosts, a counter container migrated a -> b -> a; shows it kept counting.
import { readFile } from 'node:fs/promises';
import type { ContainerInfo } from '../host/containers.ts';
import type { MigrationReport } from '../migration/types.ts';
import type { Runner } from '../runtime/exec.ts';
import { testbedDown, testbedUp } from '../testbed/testbed.ts';
import { runMigration } from './commands.ts';
import { ClusterContext } from './context.ts';
import { MigrationRenderer, reportText } from './render.ts';

const COUNTER = [
  '/bin/busybox',
  'sh',
  '-c',
  'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done',
];

async function readCounter(ctx: ClusterContext, name: string): Promise<{ host: string; value: number }> {
  const c = await ctx.locate(name);
  const text = await readFile(`/proc/${c.pid}/root/tmp/counter`, 'utf8');
  return { host: c.host, value: Number.parseInt(text, 10) };
}

export async function demoCommand(runner: Runner, ferryArgv: string[]): Promise<void> {
  const say = (m: string) => process.stdout.write(`${m}\n`);
  const deps = { runner, ferryArgv, log: (m: string) => say(`testbed: ${m}`) };
  await testbedDown('demo', deps).catch(() => {});
  const tb = await testbedUp({ name: 'demo', hosts: ['a', 'b'] }, deps);
  const ctx = await ClusterContext.load(tb.clusterFile);
  const reports: MigrationReport[] = [];
  try {
    const info = await ctx
      .client('a')
      .request<ContainerInfo>('POST', '/v1/containers', { json: { name: 'counter', command: COUNTER } });
    say(`started ${info.name} on ${info.host} (pid ${info.pid}): ${COUNTER.slice(3).join(' ')}`);
    await new Promise((r) => setTimeout(r, 1000));
    const values: { host: string; value: number }[] = [await readCounter(ctx, 'counter')];
    say(`counter on ${values[0]!.host}: ${values[0]!.value}`);
    for (const to of ['b', 'a']) {
      const renderer = new MigrationRenderer(process.stdout);
      const r = await runMigration(ctx, 'counter', to, { strategy: 'cold' }, (e) => renderer.event(e));
      renderer.finish();
      reports.push(r);
      say(reportText(r));
      if (!r.ok) throw new Error(`migration to ${to} failed: ${r.error?.message}`);
      await new Promise((r2) => setTimeout(r2, 500));
      const v = await readCounter(ctx, 'counter');
      values.push(v);
      const prev = values[values.length - 2]!;
      say(`counter on ${v.host}: ${v.value} (${v.value > prev.value ? 'continued, never reset' : 'RESET'})`);
    }
    say('');
    say('hop        strategy  freeze ms  total ms  bytes');
    for (const r of reports) {
      say(
        `${`${r.from} -> ${r.to}`.padEnd(10)} ${r.strategy.padEnd(9)} ${String(r.freezeMs).padStart(9)} ${String(r.totalMs).padStart(9)}  ${r.bytesSent}`,
      );
    }
    const ok = values.every((v, i) => i === 0 || v.value > values[i - 1]!.value);
    say(ok ? 'the counter kept counting across both moves' : 'the counter did NOT continue');
    if (!ok) process.exitCode = 1;
  } finally {
    ctx.close();
    await testbedDown('demo', deps);
    say('testbed removed');
  }
}
