// Benchmark: the switchover as a client sees it. For each size, ferry (cold: the same work as the recipe; and
// auto, what a user gets) against the best recipe by hand (hand-recipe.ts handSwitchover: destination pre-staged,
// images written straight into its directory) and Podman's checkpoint/restore, side by side, interleaved, medians:
// the client's gap, the freeze, gap ÷ freeze (1 when the client pays for the freeze and nothing more: decision 11),
// the slowest run against the median (no steps), and post-copy's window from the restore to the last page, on this
// link and on one shaped to 1 Gbit/s. Then nginx under a load generator holding 8 keep-alive connections, moved by
// ferry and by the recipe. The table, the goals and the plot: switchover-report.ts.

import { spawn } from 'node:child_process';
import { loadavg } from 'node:os';
import { ClusterClients } from '../src/api/cluster-clients.ts';
import type { MigrationOptions, MigrationReport } from '../src/api/types.ts';
import { ProcessRunner } from '../src/runtime/exec.ts';
import { type TestbedState, testbedDown, testbedUp } from '../src/testbed/testbed.ts';
import { NGINX_PORT, nginxArgs } from '../src/workloads/nginx.ts';
import { ballastServerArgs } from '../src/workloads/servers.ts';
import {
  conntrackBuckets,
  cpuTicks,
  fmt,
  pageReportedKib,
  probe,
  probeConnected,
  sleep,
  stolenPercent,
  waitForPort,
} from './common.ts';
import { handCleanup, handRemove, handStart, handSwitchover } from './hand-recipe.ts';
import {
  podmanCleanup,
  podmanImage,
  podmanReady,
  podmanRemove,
  podmanStart,
  podmanSwitchover,
} from './switchover-podman.ts';
import {
  type NginxSample,
  p999During,
  type Sample,
  type SwitchoverBenchOptions,
  switchoverReport,
} from './switchover-report.ts';

export type { SwitchoverBenchOptions };

/**
 * A request is lost only past the freeze's ceiling (the engine's default, 120 s): a held request is answered
 * late, however long the freeze (a loaded machine has shown 70 s for a cold 1 GiB move).
 */
const REPLY_TIMEOUT_MS = 180_000;

/** Long-lived connections (their retransmission timers settled), as in the strategies benchmark. */
const PROBE_WARMUP_MS = 3000;

/** The shaped link's rate: tc's spelling, and bytes per second. */
export const SHAPED_RATE = { tc: '1gbit', bytesPerSec: 1e9 / 8 };

/** The nginx scenario's load: connections, and one request every this many ms on each. */
const LOAD = { connections: 8, intervalMs: 10 };

/**
 * Container addresses, reused round-robin (each container is removed after its measurement): .150 to .249, clear of
 * the hosts (.10 up), the client (.100) and the bridge (.254).
 */
const ADDRESSES = { first: 150, count: 100 };

const log = (m: string) => process.stderr.write(`${m}\n`);

/** What one measurement needs: the testbed, its clients, and an address nothing else holds. */
interface Bed {
  runner: ProcessRunner;
  tb: TestbedState;
  ctx: ClusterClients;
  ferryArgv: string[];
  next: () => string;
}

async function withBed<T>(
  o: SwitchoverBenchOptions,
  name: string,
  rate: string | undefined,
  fn: (b: Bed) => Promise<T>,
): Promise<T> {
  const runner = new ProcessRunner();
  const deps = { runner, ferryArgv: o.ferryArgv };
  await testbedDown(name, deps).catch(() => {});
  const tb = await testbedUp({ name, hosts: ['a', 'b'], ...(rate ? { rate } : {}) }, deps);
  const ctx = await ClusterClients.load(tb.clusterFile);
  let n = 0;
  try {
    return await fn({
      runner,
      tb,
      ctx,
      ferryArgv: o.ferryArgv,
      next: () => `${tb.subnet}.${ADDRESSES.first + (n++ % ADDRESSES.count)}`,
    });
  } finally {
    ctx.close();
    await podmanCleanup(runner, false).catch(() => {});
    await handCleanup(tb);
    await testbedDown(name, deps);
  }
}

/** One switchover of a container holding `mib` MiB, by `who` (a ferry strategy, 'hand' or 'podman'), probed. */
async function measure(b: Bed, who: string, mib: number, name: string): Promise<Sample> {
  const ip = b.next();
  const s: Sample = { gapMs: Number.NaN, freezeMs: Number.NaN, ok: false };
  const connect = async () => {
    await waitForPort(ip, 7000, 180_000);
    const p = probe(b.ferryArgv, b.tb.clusterFile, 'tcp', `${ip}:7000`, REPLY_TIMEOUT_MS);
    await probeConnected(b.tb.client.netns, `${ip}:7000`);
    await sleep(PROBE_WARMUP_MS);
    return p;
  };
  // a client in retransmission backoff comes back late: give it time
  const settle = (freezeMs: number) =>
    sleep(Math.max(1500, 2 * (Number.isFinite(freezeMs) ? freezeMs : 0) + 2000));
  if (who === 'hand' || who === 'podman') {
    const hc =
      who === 'hand'
        ? await handStart(b.runner, b.tb, 'a', name, ip, ballastServerArgs(mib))
        : await podmanStart(b.runner, b.tb, 'a', name, ip, ballastServerArgs(mib));
    try {
      const p = await connect();
      let failed: string | undefined;
      await (hc ? handSwitchover(b.runner, b.tb, hc, 'b') : podmanSwitchover(b.runner, name)).then(
        (r) => {
          s.freezeMs = r.freezeMs;
        },
        (e: Error) => {
          failed = e.message.split('\n')[0];
        },
      );
      await settle(s.freezeMs);
      const r = await p.stop();
      s.gapMs = r.maxGapMs;
      s.ok = !failed && r.resets === 0 && r.errors === 0;
      if (!s.ok) s.note = failed ?? `probe: ${r.resets} resets, ${r.errors} errors`;
    } finally {
      if (hc) await handRemove(b.runner, b.tb, hc);
      else await podmanRemove(b.runner, b.tb, 'a', name);
    }
    return s;
  }
  await b.ctx.client('a').create({ name, command: ballastServerArgs(mib), net: 'own', ip });
  let rep: MigrationReport | undefined;
  try {
    const p = await connect();
    rep = await b.ctx
      .client('a')
      .migrate(name, { to: b.ctx.host('b'), strategy: who as MigrationOptions['strategy'] });
    await settle(rep.freezeMs);
    const r = await p.stop();
    Object.assign(s, fromReport(rep), { gapMs: r.maxGapMs, ok: rep.ok && r.resets === 0 && r.errors === 0 });
    if (rep.error) s.note = `${rep.error.code}: ${rep.error.message}`;
    else if (!s.ok) s.note = `probe: ${r.resets} resets, ${r.errors} errors`;
  } finally {
    await removeWhereItRuns(b, name, rep);
  }
  return s;
}

/** Removes a moved container from where the move left it (b once it succeeded, else a); a failure is ignored. */
async function removeWhereItRuns(b: Bed, name: string, rep: MigrationReport | undefined): Promise<void> {
  await b.ctx
    .client(rep?.ok ? 'b' : 'a')
    .remove(name)
    .catch(() => {});
}

/** The freeze and, for post-copy, the window from the end of the restore to the last page, from ferry's report. */
function fromReport(rep: MigrationReport): Partial<Sample> {
  return {
    freezeMs: rep.freezeMs,
    ...(rep.predictedFreezeMs ? { predictedMs: rep.predictedFreezeMs } : {}),
    ...(rep.postcopy ? { windowMs: rep.postcopy.lastPageMs } : {}),
    // what the window moved: the memory the dump left with the page server, else the container's whole memory
    ...((rep.postcopy?.bytes ?? rep.memoryBytes)
      ? { memoryBytes: rep.postcopy?.bytes ?? rep.memoryBytes }
      : {}),
  };
}

/** Post-copy's window alone, on a shaped link: no probe (the window is the report's), one move per size. */
async function measureWindow(b: Bed, mib: number, name: string): Promise<Sample> {
  const ip = b.next();
  const s: Sample = { gapMs: Number.NaN, freezeMs: Number.NaN, ok: false };
  await b.ctx.client('a').create({ name, command: ballastServerArgs(mib), net: 'own', ip });
  let rep: MigrationReport | undefined;
  try {
    await waitForPort(ip, 7000, 180_000);
    rep = await b.ctx.client('a').migrate(name, { to: b.ctx.host('b'), strategy: 'postcopy' });
    Object.assign(s, fromReport(rep), { ok: rep.ok && rep.postcopy !== undefined });
    if (rep.error) s.note = `${rep.error.code}: ${rep.error.message}`;
    else if (!rep.postcopy) s.note = 'the report has no post-copy window';
  } finally {
    await removeWhereItRuns(b, name, rep);
  }
  return s;
}

/** The load generator (http-load.ts) in the client's namespace, until stop(). */
function startLoad(tb: TestbedState, ip: string) {
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      tb.client.netns,
      process.execPath,
      '--no-warnings',
      new URL('./http-load.ts', import.meta.url).pathname,
      ip,
      String(NGINX_PORT),
      String(LOAD.connections),
      String(LOAD.intervalMs),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout.setEncoding('utf8');
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: string) => {
      out += d;
      if (out.startsWith('ready\n')) resolve();
    });
    child.on('close', (code) =>
      reject(new Error(`the load generator exited with ${code} before it connected`)),
    );
    setTimeout(() => reject(new Error('the load generator did not connect within 60 s')), 60_000).unref();
  });
  const closed = new Promise<void>((r) => child.on('close', () => r()));
  return {
    ready,
    async stop(): Promise<{ samples: [number, number][]; errors: { error: string }[]; reconnects: number }> {
      child.kill('SIGTERM');
      await closed;
      return JSON.parse(out.slice(out.indexOf('\n') + 1));
    },
  };
}

/** nginx moved under load by `who` (a ferry strategy or 'hand'): every request's latency, every socket error. */
async function measureNginx(b: Bed, who: string, name: string): Promise<NginxSample> {
  const ip = b.next();
  const s: NginxSample = {
    p999Ms: Number.NaN,
    maxMs: Number.NaN,
    freezeMs: Number.NaN,
    errors: 0,
    requests: 0,
    ok: false,
  };
  let hc: Awaited<ReturnType<typeof handStart>> | undefined;
  let movedByFerry = false;
  let load: ReturnType<typeof startLoad> | undefined;
  try {
    if (who === 'hand') hc = await handStart(b.runner, b.tb, 'a', name, ip, nginxArgs());
    else await b.ctx.client('a').create({ name, command: nginxArgs(), net: 'own', ip });
    await waitForPort(ip, NGINX_PORT, 60_000);
    load = startLoad(b.tb, ip);
    await load.ready;
    await sleep(PROBE_WARMUP_MS);
    const t0 = Date.now();
    if (hc) {
      s.freezeMs = (await handSwitchover(b.runner, b.tb, hc, 'b')).freezeMs;
      s.ok = true;
    } else {
      const rep = await b.ctx
        .client('a')
        .migrate(name, { to: b.ctx.host('b'), strategy: who as MigrationOptions['strategy'] });
      movedByFerry = rep.ok;
      s.ok = rep.ok;
      s.freezeMs = rep.freezeMs;
      if (rep.error) s.note = `${rep.error.code}: ${rep.error.message}`;
    }
    const t1 = Date.now();
    await sleep(Math.max(1500, 2 * s.freezeMs + 2000));
    const r = await load.stop();
    load = undefined;
    s.requests = r.samples.length;
    s.errors = r.errors.length;
    s.p999Ms = p999During(r.samples, t0, t1);
    s.maxMs = r.samples.length ? r.samples.reduce((m, [, ms]) => Math.max(m, ms), 0) : Number.NaN;
    if (s.errors) s.note = `socket errors: ${[...new Set(r.errors.map((e) => e.error))].join(', ')}`;
  } catch (err) {
    s.note = (err as Error).message.split('\n')[0];
  } finally {
    if (load) await load.stop().catch(() => {});
    if (hc) await handRemove(b.runner, b.tb, hc);
    else
      await b.ctx
        .client(movedByFerry ? 'b' : 'a')
        .remove(name)
        .catch(() => {});
  }
  return s;
}

export async function switchoverBench(o: SwitchoverBenchOptions): Promise<unknown> {
  const runner = new ProcessRunner();
  const started = performance.now();
  const loadAtStart = loadavg()[0]!;
  const ticksAtStart = cpuTicks();
  const reportedAtStart = pageReportedKib();
  const samples = new Map<string, Sample[]>(); // key: `${who}/${mib}`; shaped post-copy: `shaped/${mib}`
  const nginx = new Map<string, NginxSample[]>();
  const add = <T>(m: Map<string, T[]>, k: string, s: T) => m.set(k, [...(m.get(k) ?? []), s]);
  const podman = o.podmanMiB.length > 0 && (await podmanReady(runner));
  if (o.podmanMiB.length && !podman)
    log('Podman 5 is not installed (scripts/setup.sh podman): no Podman rows');
  if (podman) {
    await podmanCleanup(runner, true);
    await podmanImage(runner);
  }
  try {
    await withBed(o, 'bswi', undefined, async (b) => {
      // one move of each kind first, not counted: an agent's first migrations run code V8 has not compiled yet
      // (the first two of a fresh testbed froze 290-310 ms where the rest froze 160-210); `auto` goes cold for the
      // first size and post-copy above it, so post-copy gets its own (its first counted move froze 1.4 × the median)
      const first = o.sizesMiB[0] ?? 0;
      const warm = [...o.strategies, ...(o.strategies.includes('auto') ? ['postcopy'] : []), 'hand'];
      for (const who of warm) {
        const s = await measure(b, who, first, `wu${who.slice(0, 2)}`).catch(
          (err: Error): Sample => ({ gapMs: Number.NaN, freezeMs: Number.NaN, ok: false, note: err.message }),
        );
        log(
          `warm-up ${who} ${first} MiB (not counted): gap ${fmt(s.gapMs)} ms, freeze ${fmt(s.freezeMs)} ms`,
        );
      }
      for (let run = 0; run < o.runs; run++) {
        for (const mib of o.sizesMiB) {
          // interleaved: each of ferry's strategies, the recipe, Podman; same size, same machine state
          const whos = [...o.strategies, 'hand', ...(podman && o.podmanMiB.includes(mib) ? ['podman'] : [])];
          for (const who of whos) {
            let s: Sample;
            try {
              s = await measure(b, who, mib, `w${run}${who.slice(0, 2)}${mib}`);
            } catch (err) {
              // one failed measurement (a lost testbed agent, a probe that never connected) is a failed run,
              // not the end of the benchmark
              s = { gapMs: Number.NaN, freezeMs: Number.NaN, ok: false, note: (err as Error).message };
            }
            add(samples, `${who}/${mib}`, s);
            log(
              `run ${run + 1}/${o.runs} ${who} ${mib} MiB: gap ${fmt(s.gapMs)} ms, freeze ${fmt(s.freezeMs)} ms` +
                `${s.windowMs !== undefined ? `, post-copy window ${fmt(s.windowMs)} ms` : ''}${s.ok ? '' : ` FAILED: ${s.note ?? ''}`}`,
            );
          }
        }
        if (!o.nginx) continue;
        for (const who of [o.nginx, 'hand']) {
          // measureNginx turns its own failures into a failed sample; a failed clean-up must not end the benchmark
          const s = await measureNginx(b, who, `n${run}${who.slice(0, 2)}`).catch(
            (err: Error): NginxSample => ({
              p999Ms: Number.NaN,
              maxMs: Number.NaN,
              freezeMs: Number.NaN,
              errors: 0,
              requests: 0,
              ok: false,
              note: err.message.split('\n')[0]!,
            }),
          );
          add(nginx, who, s);
          log(
            `run ${run + 1}/${o.runs} nginx ${who}: p99.9 ${fmt(s.p999Ms)} ms, max ${fmt(s.maxMs)} ms, freeze ${fmt(s.freezeMs)} ms, ` +
              `${s.requests} requests, ${s.errors} socket errors${s.note ? ` (${s.note})` : ''}`,
          );
        }
      }
    });
    if (o.shapedMiB.length)
      await withBed(o, 'bswr', SHAPED_RATE.tc, async (b) => {
        for (let run = 0; run < o.runs; run++)
          for (const mib of o.shapedMiB) {
            let s: Sample;
            try {
              s = await measureWindow(b, mib, `r${run}${mib}`);
            } catch (err) {
              s = { gapMs: Number.NaN, freezeMs: Number.NaN, ok: false, note: (err as Error).message };
            }
            add(samples, `shaped/${mib}`, s);
            log(
              `run ${run + 1}/${o.runs} postcopy ${mib} MiB at ${SHAPED_RATE.tc}: window ${fmt(s.windowMs ?? Number.NaN)} ms` +
                `${s.ok ? '' : ` FAILED: ${s.note ?? ''}`}`,
            );
          }
      });
  } finally {
    if (podman) await podmanCleanup(runner, true);
  }
  const machine =
    `load average (1 min) ${loadAtStart.toFixed(1)} at the start and ${loadavg()[0]!.toFixed(1)} at the end; ` +
    `CPU time stolen by the hypervisor for other guests: ${fmt(stolenPercent(ticksAtStart), 1)} %; ` +
    returnedMemory(reportedAtStart) +
    conntrackNote(conntrackBuckets()) +
    `the benchmark took ${fmt((performance.now() - started) / 60_000, 1)} min`;
  return switchoverReport(o, { samples, nginx, podman, machine });
}

/** The memory the guest handed back to its hypervisor meanwhile, as the machine line says it (or nothing). */
function returnedMemory(atStart: number | undefined): string {
  const now = pageReportedKib();
  if (atStart === undefined || now === undefined) return '';
  return (
    `memory handed back to the hypervisor (free page reporting; each such page faults on the host at its next use): ` +
    `${fmt((now - atStart) / 2 ** 20, 1)} GiB; `
  );
}

/** The host's conntrack table as the machine line names it (or nothing without conntrack). */
function conntrackNote(buckets: number | undefined): string {
  return buckets === undefined ? '' : `conntrack table: ${buckets} buckets (walked twice by every dump); `;
}
