// ferry demo: the around-the-world tour. Four simulated hosts with different link speeds, a TCP service in a
// container with a probe client holding one connection, migrated through every host and home again.
import type { MigrationReport } from '../api/types.ts';
import { table } from '../core/table.ts';
import type { ProbeSummary } from '../probe/cli.ts';
import { startProbeProcess, waitForServer } from '../probe/launch.ts';
import { testbedDown, testbedUp } from '../testbed/testbed.ts';
import { LINE_COUNTER_PY, pythonArgs } from '../workloads/servers.ts';
import { runMigration } from './commands.ts';
import { ClusterContext } from './context.ts';
import { formatBytes, MigrationRenderer } from './render.ts';

const TOUR = [
  { host: 'stuttgart', rate: '1gbit' },
  { host: 'strasbourg', rate: '400mbit' },
  { host: 'montreal', rate: '200mbit' },
  { host: 'singapore', rate: '100mbit' },
];
const BALLAST_MIB = 16;
const PORT = 7000;

function rateOf(host: string): string {
  return TOUR.find((t) => t.host === host)?.rate ?? '?';
}

export async function demoCommand(ferryArgv: string[], o: { json?: boolean } = {}): Promise<void> {
  // --json: the narration goes to stderr, stdout holds one object at the end (the hops and the client's figures)
  const say = (m: string) => (o.json ? process.stderr : process.stdout).write(`${m}\n`);
  const deps = { ferryArgv, log: (m: string) => say(`testbed: ${m}`) };
  await testbedDown('demo', deps).catch(() => {});
  const rates = Object.fromEntries(TOUR.map((t) => [t.host, t.rate]));
  const tb = await testbedUp({ name: 'demo', hosts: TOUR.map((t) => t.host), rates }, deps);
  const ctx = await ClusterContext.load(tb.clusterFile);
  let failed = false;
  let result: { ok: boolean; hops: Record<string, unknown>[]; client?: ProbeSummary } | undefined;
  try {
    const home = TOUR[0]!.host;
    // the service carries some memory, so that link speed shows in the move
    const code = `import os\n_ballast = bytearray(os.urandom(${BALLAST_MIB} << 20))\n${LINE_COUNTER_PY}`;
    const info = await ctx
      .client(home)
      .create({ name: 'tour', command: pythonArgs(code, PORT), net: 'own', ip: `${tb.subnet}.50` });
    say(`\nstarted "tour" on ${home}: a TCP line-counter at ${info.ip}:${PORT} holding ${BALLAST_MIB} MiB`);
    await waitForServer(info.ip!, PORT, 20_000);
    const probe = startProbeProcess(ferryArgv, tb.clusterFile, 'tcp', `${info.ip}:${PORT}`);
    say(
      `a client in ${tb.client.netns} (${tb.client.address}) sends a request every 2 ms on one TCP connection\n`,
    );
    await new Promise((r) => setTimeout(r, 1000));
    const hops: { report: MigrationReport; start: number; end: number }[] = [];
    const route = [...TOUR.slice(1).map((t) => t.host), home];
    let here = home;
    for (const to of route) {
      say(`--- ${here} (${rateOf(here)}) -> ${to} (${rateOf(to)})`);
      const renderer = new MigrationRenderer(o.json ? process.stderr : process.stdout);
      const start = performance.timeOrigin + performance.now();
      const report = await runMigration(ctx, 'tour', to, { strategy: 'auto' }, (e) => renderer.event(e));
      renderer.finish();
      if (report.strategyReason) say(`        ${report.strategyReason}`);
      const end = performance.timeOrigin + performance.now();
      hops.push({ report, start, end });
      if (!report.ok) {
        say(`migration failed: ${report.error?.code}: ${report.error?.message}`);
        failed = true;
        break;
      }
      here = to;
      await new Promise((r) => setTimeout(r, 1500));
    }
    let res: ProbeSummary | undefined;
    try {
      res = await probe.stop();
    } catch (err) {
      say((err as Error).message);
      failed = true;
    }
    const intact = !!res && res.resets === 0 && res.errors === 0;
    const rows = [['hop', 'link', 'strategy', 'moved', 'freeze ms', 'client gap ms', 'connection']];
    const summary: Record<string, unknown>[] = [];
    for (const h of hops) {
      const r = h.report;
      // a hop's gap is the one it overlaps: it starts with the freeze and may end after the hop returns (TCP backs off)
      const gap = Math.max(
        0,
        ...(res?.gaps ?? []).filter((g) => g.from <= h.end && g.to >= h.start).map((g) => g.ms),
      );
      rows.push([
        `${r.from} -> ${r.to}`,
        `${rateOf(r.from)}/${rateOf(r.to)}`,
        r.strategy,
        // post-copy memory goes through the page server, outside the image stream: count the container's memory
        r.postcopy ? `~${formatBytes(r.bytesSent + (r.memoryBytes ?? 0))}` : formatBytes(r.bytesSent),
        String(r.freezeMs),
        res ? gap.toFixed(0) : '?',
        r.ok ? (intact ? 'intact' : 'BROKEN') : 'FAILED',
      ]);
      summary.push({
        from: r.from,
        to: r.to,
        ok: r.ok,
        strategy: r.strategy,
        bytesSent: r.bytesSent,
        freezeMs: r.freezeMs,
        totalMs: r.totalMs,
        ...(res ? { clientGapMs: Math.round(gap) } : {}),
        ...(r.error ? { error: r.error } : {}),
      });
    }
    say(`\n${table(rows)}`);
    if (res) {
      say(
        `\nclient: ${res.replies} replies, ${res.errors} errors, ${res.resets} resets, ${res.lost} lost; longest gap ${res.maxGapMs.toFixed(0)} ms; ` +
          `server counter ${res.serverValues?.first}..${res.serverValues?.last} ${res.serverValues?.continuous ? 'continuous (no request lost or repeated)' : 'NOT continuous'}`,
      );
    }
    if (!intact || !res?.serverValues?.continuous) failed = true;
    result = { ok: !failed, hops: summary, ...(res ? { client: res } : {}) };
    say(
      failed
        ? '\nthe tour did NOT complete cleanly'
        : '\nthe service went around the world on one unbroken connection',
    );
  } finally {
    ctx.close();
    await testbedDown('demo', deps);
    say('testbed removed');
  }
  if (o.json) process.stdout.write(`${JSON.stringify(result ?? { ok: false, hops: [] })}\n`);
  if (failed) process.exitCode = 1;
}
