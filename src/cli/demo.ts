// ferry demo: the around-the-world tour. Four simulated hosts with different link speeds, a TCP service in a
// container with a probe client holding one connection, migrated through every host and home again. With
// --dashboard the testbed has a controller, the hops go through it (so its dashboard shows each one live), and
// the testbed stays up afterwards.
import type { MigrationReport } from '../api/types.ts';
import { table } from '../core/table.ts';
import type { ProbeSummary } from '../probe/cli.ts';
import { startProbeProcess, waitForServer } from '../probe/launch.ts';
import { testbedDown, testbedUp } from '../testbed/testbed.ts';
import { LINE_COUNTER_PY, pythonArgs } from '../workloads/servers.ts';
import { runMigration } from './commands.ts';
import { ClusterContext } from './context.ts';
import { formatBytes, MigrationRenderer } from './render.ts';

/** How long a newcomer has to open the dashboard before the tour starts. */
const HEAD_START_S = 20;

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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One hop through the controller: asked once its picture shows the container at home, followed to its end. */
async function hopViaController(
  ctx: ClusterContext,
  name: string,
  from: string,
  to: string,
): Promise<MigrationReport> {
  const c = ctx.controller();
  const deadline = Date.now() + 30_000;
  while (
    !(await c.cluster()).hosts.some(
      (h) => h.name === from && h.containers.some((x) => x.name === name && x.status === 'running'),
    )
  ) {
    if (Date.now() > deadline) throw new Error(`the controller does not see ${name} running on ${from}`);
    await sleep(250);
  }
  const { id } = await c.move({ container: name, to, strategy: 'auto' });
  for (;;) {
    const rec = (await c.migrations()).find((m) => m.id === id);
    if (rec?.status === 'done' || rec?.status === 'failed') {
      if (rec.report) return rec.report as MigrationReport;
      throw new Error(`the move of ${name} to ${to} failed: ${rec.error ?? 'no report'}`);
    }
    await sleep(300);
  }
}

export async function demoCommand(
  ferryArgv: string[],
  o: { dashboard?: boolean; json?: boolean } = {},
): Promise<void> {
  // --json: the narration goes to stderr, stdout holds one object at the end (the hops and the client's figures)
  const say = (m: string) => (o.json ? process.stderr : process.stdout).write(`${m}\n`);
  const deps = { ferryArgv, log: (m: string) => say(`testbed: ${m}`) };
  await testbedDown('demo', deps).catch(() => {});
  const rates = Object.fromEntries(TOUR.map((t) => [t.host, t.rate]));
  const tb = await testbedUp(
    {
      name: 'demo',
      hosts: TOUR.map((t) => t.host),
      rates,
      // no periodic rebalance: the tour decides where the service goes
      ...(o.dashboard ? { controller: { heartbeatMs: 1000, rebalanceIntervalMs: 0 } } : {}),
    },
    deps,
  );
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
    if (o.dashboard) {
      const login = await ctx.controller().dashboardLogin();
      say(`\ndashboard: ${login.url}`);
      say(
        "  a one-time link (the page is served with the testbed CA's certificate: the browser asks to accept it);\n" +
          `  a new one: ferry --cluster ${tb.clusterFile} dashboard\nthe tour starts in ${HEAD_START_S} s`,
      );
      await sleep(HEAD_START_S * 1000);
    }
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
      const report = o.dashboard
        ? await hopViaController(ctx, 'tour', here, to)
        : await runMigration(ctx, 'tour', to, { strategy: 'auto' }, (e) => renderer.event(e));
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
    if (o.dashboard) {
      say(`\nthe testbed stays up for the dashboard; remove it with: ferry testbed down --name demo`);
    } else {
      await testbedDown('demo', deps);
      say('testbed removed');
    }
  }
  if (o.json) process.stdout.write(`${JSON.stringify(result ?? { ok: false, hops: [] })}\n`);
  if (failed) process.exitCode = 1;
}
