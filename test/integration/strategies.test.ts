// Live strategies with real CRIU: post-copy (lazy pages over userfaultfd), auto under a downtime budget, and
// their failure modes. A 256 MiB container rewrites and verifies its own memory while a client holds a connection.
// Failure cases that ask the same of their testbed share one (each removes its containers when it ends).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { test } from 'node:test';
import { runMigration } from '../../src/cli/commands.ts';
import type { ContainerInfo } from '../../src/host/containers.ts';
import type { MigrationEvent, MigrationReport, ProgressUpdate } from '../../src/migration/types.ts';
import { ProcessRunner } from '../../src/runtime/exec.ts';
import { startAgent, stopAgent } from '../../src/testbed/testbed.ts';
import { writerWithServerArgs } from '../../src/workloads/servers.ts';
import {
  assertHostClean,
  type Bed,
  containers,
  FERRY_ARGV,
  MAIN,
  readInContainer,
  removeContainers,
  served,
  servedPast,
  sharedBed,
  skipUnlessReady,
  startBed,
  startProbe,
  waitFor,
  waitForPort,
} from './helpers.ts';

/** A 100 Mbit/s link: pages stay in flight long enough to cut them off. */
const slowBedOf = sharedBed(['a', 'b'], { rate: '100mbit' });
/** A destination that refuses every restore. */
const refusingBedOf = sharedBed(['a', 'b'], { agentEnv: { b: { FERRY_FAULTS: 'invalid-bundle' } } });

interface Status {
  ok: boolean;
  round: number;
  bad: number;
}

async function status(bed: Bed, name: string): Promise<Status> {
  const c = (await containers(bed)).find((x) => x.name === name);
  assert.ok(c?.pid, `${name} runs somewhere`);
  const [word, round, bad] = readInContainer(c.pid, '/tmp/status').trim().split(' ');
  return { ok: word === 'ok', round: Number(round), bad: Number(bad) };
}

async function startWriter(bed: Bed, name: string, mib: number, dirty?: number): Promise<ContainerInfo> {
  const r = await bed.cli([
    'run',
    '--host',
    'a',
    '--name',
    name,
    '--json',
    '--',
    ...writerWithServerArgs(mib, 7000, dirty),
  ]);
  assert.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout) as ContainerInfo;
  await waitForPort(info.ip!, 7000);
  // the writer has filled its memory and verified it once
  await waitFor(
    'writer verified its memory',
    async () => ((await status(bed, name)).round >= 10 ? true : undefined),
    60_000,
  );
  return info;
}

async function migrate(
  bed: Bed,
  name: string,
  to: string,
  strategy: string,
  extra: string[] = [],
): Promise<{ code: number | null; report: MigrationReport; events: MigrationEvent[] }> {
  const r = await bed.cli(['migrate', name, '--to', to, '--strategy', strategy, ...extra, '--json']);
  if (!extra.includes('--events'))
    return { code: r.code, report: JSON.parse(r.stdout) as MigrationReport, events: [] };
  // --json --events: NDJSON, the report last
  const events = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as MigrationEvent);
  const last = events.pop();
  assert.equal(last?.type, 'result', r.stdout.slice(-500));
  return { code: r.code, report: (last as { report: MigrationReport }).report, events };
}

/**
 * The progress a post-copy migration streams: what the dump wrote, the transfer's bytes against its total, and the
 * pages phase counting down the lazy pages to none left.
 */
function assertPostcopyProgress(events: MigrationEvent[]): string {
  const progress = events.filter((e): e is ProgressUpdate => e.type === 'progress');
  const of = (phase: string) => progress.filter((e) => e.phase === phase);
  assert.ok(of('checkpoint').length >= 1, 'the dump reports what it wrote');
  assert.ok(of('checkpoint').at(-1)!.bytes > 0);
  const transfer = of('transfer');
  assert.ok(
    transfer.length >= 1 && transfer.every((e) => e.total !== undefined),
    'the transfer reports bytes of a total',
  );
  const pages = of('pages');
  assert.ok(pages.length >= 2, `pages reported while they arrive: ${JSON.stringify(pages)}`);
  const first = pages[0]!;
  const last = pages.at(-1)!;
  // the writer's 256 MiB are almost all lazy: the destination had to fetch them
  assert.ok((first.pagesTotal ?? 0) > (200 << 20) / 4096, `lazy pages counted: ${first.pagesTotal}`);
  assert.equal(last.pagesRemaining, 0, 'the last update says no page is left');
  assert.equal(last.bytes, last.total);
  for (let i = 1; i < pages.length; i++)
    assert.ok(pages[i]!.pagesRemaining! <= pages[i - 1]!.pagesRemaining!, 'pages remaining never grow');
  // every progress event comes inside its phase (after its start, before its end)
  const open = new Set<string>();
  for (const e of events) {
    if (e.type === 'phase' && e.state === 'start') open.add(e.phase);
    else if (e.type === 'phase') open.delete(e.phase);
    else if (e.type === 'progress') assert.ok(open.has(e.phase), `${e.phase} progress outside its phase`);
  }
  return `${first.pagesTotal} lazy pages, remaining as reported: ${pages.map((e) => e.pagesRemaining).join(' ')}`;
}

function criuProcesses(bed: Bed): string[] {
  const out: string[] = [];
  // a page server (`dump --rpc`) names no path of its bed: it is this bed's when it runs in one of its hosts'
  // network namespaces (other testbeds on this machine run theirs meanwhile)
  const ours = new Set(bed.state.hosts.map((h) => statSync(`/run/netns/${h.netns}`).ino));
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (
        /^criu/.test(cmd) &&
        (cmd.includes(bed.state.dir) ||
          (cmd.includes('dump --rpc') && ours.has(statSync(`/proc/${p}/ns/net`).ino)))
      )
        out.push(`${p} ${cmd}`);
    } catch {
      // gone
    }
  }
  return out;
}

test('post-copy, auto and cold: a 256 MiB container writing its memory keeps running, its data checks out, the client stays connected; post-copy streams its progress down to the last page', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await startBed(['a', 'b']);
  t.after(() => bed.down());
  const info = await startWriter(bed, 'mem', 256);
  const probe = startProbe(bed, 'tcp', `${info.ip}:7000`);
  await servedPast(bed, 'mem', 0);
  const figures: string[] = [];
  for (const [to, strategy, expect] of [
    ['b', 'postcopy', 'postcopy'],
    ['a', 'auto', 'postcopy'],
    ['b', 'cold', 'cold'],
  ] as const) {
    const before = await status(bed, 'mem');
    const { code, report, events } = await migrate(
      bed,
      'mem',
      to,
      strategy,
      strategy === 'postcopy' ? ['--events'] : [],
    );
    assert.equal(code, 0, JSON.stringify(report.error));
    if (strategy === 'postcopy') figures.push(assertPostcopyProgress(events));
    assert.equal(report.strategy, expect, report.strategyReason);
    if (strategy === 'auto') assert.match(report.strategyReason ?? '', /over the \d+ ms budget/);
    if (strategy === 'cold') {
      // the dump sent the pages to the destination's page server (CRIU's count of them is in what was sent), so
      // nothing streamed as ranges while it wrote them
      assert.equal(report.streamedDuringDump, undefined);
      assert.ok(report.bytesSent > 200 << 20, `bytes sent ${report.bytesSent}`);
    }
    if (expect === 'postcopy') {
      assert.ok(report.postcopy && report.postcopy.lastPageMs >= 0, 'time to the last page is reported');
      // the window's memory: most of the 256 MiB stayed with the page server, and its rate is reported
      assert.ok((report.postcopy.bytes ?? 0) > 128 << 20, `lazy bytes ${report.postcopy.bytes}`);
      assert.ok((report.postcopy.rate ?? 0) > 0, 'the window has a rate');
      assert.ok(report.phases.some((p) => p.name === 'pages'));
      assert.ok(
        report.bytesSent < 16 << 20,
        'post-copy moves memory through the page server, not the image stream',
      );
    }
    figures.push(
      `${strategy}: freeze ${report.freezeMs} ms${report.postcopy ? `, last page +${report.postcopy.lastPageMs} ms (${Math.round((report.postcopy.rate ?? 0) / 1e6)} MB/s)` : ''}`,
    );
    assert.equal((await containers(bed)).find((c) => c.name === 'mem')?.host, to);
    await waitFor(
      'the writer goes on',
      async () => ((await status(bed, 'mem')).round > before.round + 10 ? true : undefined),
      30_000,
    );
    const s = await status(bed, 'mem');
    assert.equal(s.ok, true, `memory verified after ${strategy}: ${s.bad} bad pages`);
    assert.ok(s.round > before.round, 'the writer continued from where it was');
  }
  const res = await probe.stop();
  t.diagnostic(`${figures.join('; ')}; client max gap ${res.maxGapMs.toFixed(0)} ms`);
  assert.equal(res.resets, 0);
  assert.equal(res.errors, 0, JSON.stringify(res).slice(0, 2000));
  assert.equal(res.lost, 0);
  assert.equal(res.serverValues?.continuous, true);
  assert.deepEqual(criuProcesses(bed), [], 'no CRIU process left');
});

test('pre-copy (content delta): rounds while the 128 MiB writer runs, a small switchover, memory verified, client connected', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await startBed(['a', 'b'], { rate: '1gbit' });
  t.after(() => bed.down());
  // ~16 pages per 10 ms: some 6 MB/s of the 128 MiB are rewritten while the rounds run (the size is not what is
  // shown here, the rounds are)
  const info = await startWriter(bed, 'mem', 128, 16);
  const probe = startProbe(bed, 'tcp', `${info.ip}:7000`);
  await servedPast(bed, 'mem', 0);
  const before = await status(bed, 'mem');
  const r = await bed.cli([
    'migrate',
    'mem',
    '--to',
    'b',
    '--strategy',
    'precopy',
    '--max-rounds',
    '4',
    '--json',
  ]);
  assert.equal(r.code, 0, r.stdout);
  const report = JSON.parse(r.stdout) as MigrationReport;
  assert.equal(report.strategy, 'precopy');
  assert.ok(report.precopy, 'the report explains the rounds');
  assert.ok(report.rounds.length >= 1 && report.rounds.length <= 4);
  assert.ok(report.rounds[0]!.bytes >= 100 << 20, 'the first round carries the memory');
  assert.ok(
    report.precopy.switchoverBytes < report.rounds[0]!.bytes / 4,
    `switchover sent ${report.precopy.switchoverBytes} bytes`,
  );
  assert.deepEqual(
    report.phases.map((p) => p.name),
    ['plan', 'prepare', 'rounds', 'checkpoint', 'transfer', 'restore', 'confirm', 'cleanup'],
  );
  await waitFor(
    'the writer goes on',
    async () => ((await status(bed, 'mem')).round > before.round + 20 ? true : undefined),
    30_000,
  );
  assert.equal((await status(bed, 'mem')).ok, true, 'memory rebuilt from the rounds checks out');
  // the stop waits for the client's requests to be answered again (its TCP may still be retrying a segment of the
  // switchover, with backoff): an unanswered request at the stop counts as lost
  await servedPast(bed, 'mem', await served(bed, 'mem'));
  const res = await probe.stop();
  t.diagnostic(
    `rounds ${report.rounds.map((x) => `${(x.bytes / 2 ** 20).toFixed(1)} MiB`).join(', ')}; switchover ${(report.precopy.switchoverBytes / 2 ** 20).toFixed(1)} MiB; freeze ${report.freezeMs} ms; stop: ${report.precopy.stop}; client gap ${res.maxGapMs.toFixed(0)} ms`,
  );
  assert.equal(res.resets, 0);
  assert.equal(res.errors, 0, JSON.stringify(res).slice(0, 2000));
  assert.equal(res.serverValues?.continuous, true);
});

test('pre-copy: the destination dying during the rounds leaves the container running on the source', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await slowBedOf();
  const hostB = bed.state.hosts.find((h) => h.name === 'b')!;
  const deps = { runner: new ProcessRunner(), env: bed.env, ferryArgv: FERRY_ARGV };
  let restarted = false;
  // the next test on this testbed finds b's agent up and the hosts empty
  t.after(async () => {
    if (!restarted) await startAgent(bed.state, hostB, deps);
    await removeContainers(bed);
  });
  await startWriter(bed, 'mem', 64);
  const before = await status(bed, 'mem');
  let killed = false;
  const report = await runMigration(bed.ctx, 'mem', 'b', { strategy: 'precopy' }, (e) => {
    if (e.type === 'phase' && e.phase === 'rounds' && e.state === 'start' && !killed) {
      killed = true;
      setTimeout(() => void stopAgent(bed.state, hostB, 'SIGKILL'), 1500);
    }
  });
  assert.ok(killed);
  assert.equal(report.ok, false);
  assert.equal(report.error?.phase, 'rounds', JSON.stringify(report.error));
  assert.equal(report.rollback?.sourceRunning, true);
  await waitFor(
    'the writer goes on',
    async () => ((await status(bed, 'mem')).round > before.round + 20 ? true : undefined),
    30_000,
  );
  assert.equal((await status(bed, 'mem')).ok, true);
  assert.equal((await containers(bed)).find((c) => c.name === 'mem')?.host, 'a');
  await startAgent(bed.state, hostB, deps);
  restarted = true;
  assertHostClean(bed, 'b', 'mem');
});

test('post-copy: a destination failing before its restore completes rolls back to the source from the page server', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await refusingBedOf(t);
  await startWriter(bed, 'mem', 64);
  const before = await status(bed, 'mem');
  const { code, report } = await migrate(bed, 'mem', 'b', 'postcopy');
  assert.equal(code, 1);
  assert.equal(report.error?.phase, 'restore');
  assert.equal(report.rollback?.sourceRunning, true, JSON.stringify(report));
  assert.equal((await containers(bed)).find((c) => c.name === 'mem')?.host, 'a');
  await waitFor(
    'the writer goes on',
    async () => ((await status(bed, 'mem')).round > before.round + 20 ? true : undefined),
    30_000,
  );
  assert.equal((await status(bed, 'mem')).ok, true, 'every page came back from the page server');
  await waitFor('no CRIU left', () => (criuProcesses(bed).length === 0 ? true : undefined), 5000).catch(() =>
    assert.deepEqual(criuProcesses(bed), [], 'no CRIU process left'),
  );
});

test('pre-copy: a destination failing at the restore rolls back to the source from its own final images', async (t) => {
  if (!skipUnlessReady(t)) return;
  const bed = await refusingBedOf(t);
  await startWriter(bed, 'mem', 64);
  const before = await status(bed, 'mem');
  const { code, report } = await migrate(bed, 'mem', 'b', 'precopy');
  assert.equal(code, 1);
  assert.equal(report.error?.phase, 'restore');
  // the final dump went out as recipes; the page images it came from stayed here for this
  assert.equal(report.rollback?.sourceRunning, true, JSON.stringify(report));
  assert.equal((await containers(bed)).find((c) => c.name === 'mem')?.host, 'a');
  await waitFor(
    'the writer goes on',
    async () => ((await status(bed, 'mem')).round > before.round + 20 ? true : undefined),
    30_000,
  );
  assert.equal((await status(bed, 'mem')).ok, true, 'memory intact after the local restore');
  assertHostClean(bed, 'b', 'mem');
});

test("post-copy: losing the destination's page fault handler after restore is detected, reported, and the damaged copy stopped", async (t) => {
  if (!skipUnlessReady(t)) return;
  // a slow link keeps pages in flight long enough to cut them off
  const bed = await slowBedOf(t);
  await startWriter(bed, 'mem', 128);
  // the CLI's own event stream (--json --events) says when the commit is done: only then is the container lost
  // with the pages (before it, the migration rolls back)
  const child = spawn(
    process.execPath,
    ['--no-warnings', MAIN, 'migrate', 'mem', '--to', 'b', '--strategy', 'postcopy', '--json', '--events'],
    { env: bed.env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let committed = false;
  child.stdout.on('data', (d: Buffer) => {
    out += d;
    committed ||= out
      .split('\n')
      .filter(Boolean)
      .some((l) => {
        const e = JSON.parse(l) as { type: string; phase?: string; state?: string };
        return e.type === 'phase' && e.phase === 'confirm' && e.state === 'end';
      });
  });
  let exited: number | null | undefined;
  const done = new Promise<number | null>((resolve) =>
    child.on('close', (c) => {
      exited = c;
      resolve(c);
    }),
  );
  // kill the destination's lazy-pages daemon once the commit is done and it is pulling pages
  const victim = await waitFor(
    'committed, lazy-pages running on b',
    () => {
      if (exited !== undefined) throw new Error(`the migration ended first: ${out}`);
      if (!committed) return undefined;
      return criuProcesses(bed).find((p) => p.includes('lazy-pages') && p.includes('/hosts/b/'));
    },
    60_000,
  );
  process.kill(Number(victim.split(' ')[0]), 'SIGKILL');
  const code = await done;
  const last = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as {
    type?: string;
    report?: MigrationReport;
  };
  assert.equal(last.type, 'result', out);
  const report = last.report!;
  // exit status 3: the container is lost (not 1, which says it runs on the source)
  assert.equal(code, 3, JSON.stringify(report.error));
  assert.equal(report.error?.code, 'FERRY_E_POSTCOPY_FAILED', JSON.stringify(report.error));
  assert.equal(report.error?.phase, 'pages');
  assert.match(report.error?.message ?? '', /must be considered lost/);
  await waitFor('the damaged copy is stopped', async () => {
    const c = (await containers(bed)).find((x) => x.name === 'mem');
    return c?.host === 'b' && c.status === 'stopped' ? true : undefined;
  });
  await waitFor('no CRIU left', () => (criuProcesses(bed).length === 0 ? true : undefined), 5000).catch(() =>
    assert.deepEqual(criuProcesses(bed), [], 'no CRIU process left'),
  );
});
