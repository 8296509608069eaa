// The fault matrix (docs/reliability.md): every phase against every fault, on one shared testbed, cell after cell.
// Each cell holds a migration at the start of its phase, does the fault, lets it go on, and checks that the
// container runs exactly once where it should, that its client's connection survived, and that nothing is left.
// Beside the cells, two cases on the same testbed (a caller's dropped link, a stuck dump): over 400 lines because
// one testbed for all of them is what keeps this file's share of `make test` short.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { keepSoakSection } from '../../bench/soak.ts';
import { runMigration } from '../../src/cli/commands.ts';
import { holdFileName } from '../../src/core/faults.ts';
import type { MigrationReport } from '../../src/migration/types.ts';
import { Probe } from '../../src/probe/session.ts';
import { controlAgent, startAgent } from '../../src/testbed/testbed.ts';
import { LINE_COUNTER_PY, pythonArgs } from '../../src/workloads/servers.ts';
import {
  CELLS,
  type Cell,
  type CellResult,
  MATRIX_PHASES,
  PHASE_SETUP,
  renderReliability,
} from '../support/fault-matrix.ts';
import {
  type Bed,
  containers,
  FERRY_ARGV,
  hostDir,
  instancesOf,
  MAIN,
  missingPrerequisite,
  processesWith,
  runningInstancesOf,
  skipUnlessReady,
  startBed,
  waitFor,
  waitForPort,
} from './helpers.ts';

/** Short deadlines so that a cell never waits long for a commit deadline or a stalled link. */
const DEADLINES = { commitMs: 3000, stallMs: 1500, freezeMs: 15_000, prepareMs: 15_000, roundsMs: 15_000 };

/**
 * The longest a link stays cut (a migration that cannot end without it gets it back then): more than three stall
 * timeouts, so every request across it has failed for want of progress before it comes back.
 */
const LINK_DOWN_MS = 5000;

/**
 * The freeze ceiling of the stuck-dump case alone (its source agent is restarted with it): the cells keep the longer
 * one, as their holds and agent restarts happen inside the freeze. Under the ~6 s a client's TCP backs off to after
 * its fifth lost retransmission, so the client's next try reaches the thawed container soon after.
 */
const HANG_FREEZE_MS = 5000;

const only = (process.env['FERRY_MATRIX'] ?? '').split(',').filter(Boolean);
const selected = (c: Cell) =>
  only.length === 0 ||
  only.includes(c.phase) ||
  only.includes(c.fault) ||
  only.includes(`${c.phase}/${c.fault}`);

const nameOf = (i: number) => `fm${i}`;
/** The container of the reattach test. */
const REATTACH = 'fmcli';
/** The container of the stuck-dump test. */
const HANG = 'fmhang';

/** Every fault any cell needs, scoped to its own container: one agent config carries them all. */
function faultList(): string {
  const out: string[] = [];
  CELLS.forEach((c, i) => {
    if (c.na) return;
    const name = nameOf(i);
    if (c.fault === 'criu-fail' && c.phase !== 'pages') {
      out.push(`criu-fail:${c.phase === 'restore' ? 'restore' : 'dump'}@${name}`);
      return;
    }
    out.push(`hold-at:${PHASE_SETUP[c.phase].point}@${name}`);
  });
  out.push(`hold-at:source:transfer@${REATTACH}`);
  out.push(`criu-hang:dump@${HANG}`);
  return out.join(',');
}

function cliProcess(bed: Bed, args: string[]) {
  const child = spawn(process.execPath, ['--no-warnings', MAIN, ...args], {
    env: bed.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  child.stderr.on('data', () => {});
  const done = new Promise<{ code: number | null; stdout: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, stdout })),
  );
  return { child, done };
}

/** The migration as `ferry migrate --json` runs it, in this process: its report as the CLI would print it. */
function inProcess(bed: Bed, name: string, strategy: 'cold' | 'precopy' | 'postcopy') {
  const done = runMigration(bed.ctx, name, 'b', { strategy }, () => {}).then(
    (report) => ({ code: report.ok ? 0 : 1, stdout: JSON.stringify(report) }),
    (err: Error) => ({
      code: 1,
      stdout: JSON.stringify({ ok: false, error: { code: (err as { code?: string }).code } }),
    }),
  );
  return { child: undefined as ReturnType<typeof spawn> | undefined, done };
}

function netnsOf(bed: Bed, host: string): string {
  return bed.state.hosts.find((h) => h.name === host)!.netns;
}
function addressOf(bed: Bed, host: string): string {
  return bed.state.hosts.find((h) => h.name === host)!.address;
}

/** Drops every packet between a and b (in a's namespace, both directions), or lets them through again. */
function link(bed: Bed, up: boolean): void {
  const ns = `--net=/run/netns/${netnsOf(bed, 'a')}`;
  const b = addressOf(bed, 'b');
  const op = up ? '-D' : '-I';
  for (const rule of [
    ['INPUT', '-s', b],
    ['OUTPUT', '-d', b],
  ]) {
    execFileSync('nsenter', [ns, 'iptables', op, rule[0]!, rule[1]!, rule[2]!, '-j', 'DROP'], {
      stdio: 'ignore',
    });
  }
}

/**
 * Leaves b's images tmpfs without a free block (its size cut to what it holds), or gives it its size back. Undoing
 * is safe to call at any time, also after a half-done fill: the filler goes first (a full tmpfs still unlinks), so a
 * cell that fails cannot leave it to the next cells.
 */
function tmpfs(bed: Bed, full: boolean): void {
  const dir = join(hostDir(bed, 'b'), 'images');
  const filler = join(dir, 'filler');
  if (!full) {
    rmSync(filler, { force: true });
    execFileSync('mount', ['-o', 'remount,size=50%', dir]);
    return;
  }
  writeFileSync(filler, Buffer.alloc(4096, 1)); // (a tmpfs of size 0 would be unlimited)
  // a tmpfs refuses a size below what it holds; what it holds can grow between the statfs and the remount (the
  // destination agent may still be writing a log): measured again and tried again
  for (let attempt = 1; ; attempt++) {
    const st = statfsSync(dir);
    const used = (st.blocks - st.bfree) * st.bsize;
    try {
      execFileSync('mount', ['-o', `remount,size=${used}`, dir], { stdio: 'pipe' });
      return;
    } catch (err) {
      if (attempt >= 5) {
        tmpfs(bed, false);
        throw new Error(
          `cannot fill ${dir} (size ${used}): ${String((err as { stderr?: Buffer }).stderr ?? err)}`,
        );
      }
    }
  }
}

/** SIGKILLs the process groups of the processes whose command line holds both texts. */
function killGroupOf(what: string, where: string): void {
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (!cmd.includes(what) || !cmd.includes(where)) continue;
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const pgid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

const agentDeps = (bed: Bed) => ({ ferryArgv: FERRY_ARGV, env: bed.env });

/** Nothing of an unfinished migration is left: no journal entry, no incoming record, no images, no hold. */
function settled(bed: Bed): string | undefined {
  for (const host of ['a', 'b']) {
    const hd = hostDir(bed, host);
    for (const sub of ['journal', 'incoming', 'images']) {
      const left = existsSync(join(hd, sub)) ? readdirSync(join(hd, sub)) : [];
      if (left.length) return `${host} ${sub}: ${left.join(' ')}`;
    }
  }
  return undefined;
}

async function runCell(bed: Bed, cell: Cell, i: number): Promise<{ detail: string; timing: string }> {
  const c0 = Date.now();
  const marks: string[] = [];
  const name = nameOf(i);
  const marker = `fmx-${name}-${bed.name}`;
  const setup = PHASE_SETUP[cell.phase];
  // (an address of its own per cell: the client's ARP cache never holds a MAC of an earlier cell's container)
  const ip = `${bed.state.subnet}.${150 + i}`;
  await bed.ctx.client('a').create({
    name,
    command: pythonArgs(`${LINE_COUNTER_PY}\n# ${marker}`, 7000),
    net: 'own',
    ip,
  });
  await waitForPort(ip, 7000);
  // a real client on one TCP connection, from the root namespace across the LAN bridge
  const probe = new Probe({ kind: 'tcp', host: ip, port: 7000, intervalMs: 20 });
  await probe.start();
  marks.push(`client ${Date.now() - c0}`);
  // the CLI when it is the one killed; otherwise its code in this process (one node start less per cell)
  const migrating =
    cell.fault === 'cli-killed'
      ? cliProcess(bed, ['migrate', name, '--to', 'b', '--strategy', setup.strategy, '--json'])
      : inProcess(bed, name, setup.strategy);
  const holdHost = setup.point.startsWith('dest:') ? 'b' : 'a';
  const hold = join(hostDir(bed, holdHost), 'faults', holdFileName(setup.point, name));
  const killed: string[] = [];
  let probeStopped = false;
  let linkCut = false;
  let full = false;
  try {
    if (!(cell.fault === 'criu-fail' && cell.phase !== 'pages')) {
      await waitFor(`the migration held at ${setup.point}`, () => existsSync(hold) || undefined, 60_000);
      switch (cell.fault) {
        case 'source-killed':
          await controlAgent(bed.name, 'kill', 'a', agentDeps(bed));
          killed.push('a');
          break;
        case 'dest-killed':
          await controlAgent(bed.name, 'kill', 'b', agentDeps(bed));
          killed.push('b');
          break;
        case 'link-cut':
          link(bed, false);
          linkCut = true;
          break;
        case 'tmpfs-full':
          tmpfs(bed, true);
          full = true;
          break;
        case 'cli-killed':
          migrating.child?.kill('SIGKILL');
          break;
        case 'criu-fail':
          // post-copy's page server is the CRIU of the source's lazy dump, in the process group of its runc
          killGroupOf(`checkpoint --lazy-pages`, join(hostDir(bed, 'a'), 'images'));
          break;
      }
      marks.push(`held ${Date.now() - c0}`);
      rmSync(hold, { force: true });
      // as a supervisor would: the agent comes back at once
      for (const h of killed) await controlAgent(bed.name, 'start', h, agentDeps(bed));
      marks.push(`restarted ${Date.now() - c0}`);
    }
    // a cut link comes back once the migration has ended, or after LINK_DOWN_MS (post-copy after the commit cannot
    // end without it): long past the stall timeout either way
    if (linkCut) {
      await Promise.race([migrating.done, new Promise((res) => setTimeout(res, LINK_DOWN_MS))]);
      link(bed, true);
      linkCut = false;
    }
    // (bounded: a cell that the code cannot pass yet must not stop the others)
    const m = await Promise.race([
      migrating.done,
      new Promise<{ code: null; stdout: string }>((res) =>
        setTimeout(() => res({ code: null, stdout: '' }), 60_000),
      ),
    ]);
    marks.push(`ended ${Date.now() - c0}`);
    const said = /"error":\{"code":"[A-Z_]+","message":"((?:[^"\\]|\\.){0,400})/.exec(m.stdout)?.[1];
    if (said) marks.push(`said: ${said}`);
    let report: MigrationReport | undefined;
    try {
      report = JSON.parse(m.stdout) as MigrationReport;
    } catch {
      report = undefined; // the CLI (or the source agent it talked to) was killed
    }
    if (full) tmpfs(bed, false);
    full = false;
    const want = cell.expect === 'source' ? 'a' : 'b';
    const where = await waitFor(
      `${name} running once, on ${want}, with nothing left of the migration`,
      async () => {
        const list = (await containers(bed)).filter((c) => c.name === name);
        if (list.length !== 1 || list[0]!.status !== 'running') return undefined;
        if (instancesOf(marker) !== 1 || settled(bed)) return undefined;
        return list[0]!.host;
      },
      // (a todo cell may lose its container for good: it is given up on sooner)
      cell.todo ? 15_000 : 45_000,
    ).catch((err: Error) => {
      throw new Error(
        `${err.message}: runs ${runningInstancesOf(marker)}x (${instancesOf(marker)} with frozen), ` +
          `left: ${settled(bed) ?? 'nothing'}, report: ${report?.error?.code ?? (report?.ok ? 'ok' : 'none')}`,
      );
    });
    assert.equal(where, want, `${name} runs on ${where}, expected ${want}`);
    marks.push(`settled ${Date.now() - c0}`);
    // the connection itself answers again (its TCP may first back off over the outage)
    const before = probe.replies;
    await waitFor('replies on the same connection', () => probe.replies > before + 3 || undefined, 30_000);
    marks.push(`answered ${Date.now() - c0}`);
    const res = await probe.stop();
    probeStopped = true;
    assert.equal(res.resets, 0, `the client connection was not reset: ${JSON.stringify(res).slice(0, 400)}`);
    assert.equal(res.serverValues?.continuous, true, 'the same server answered the client, its state intact');
    await bed.ctx.client(where).remove(name);
    const outcome = report ? (report.ok ? 'ok' : (report.error?.code ?? 'failed')) : 'no report (CLI killed)';
    return {
      detail: `${outcome}; runs once on ${where}; its client kept its connection (${res.replies} replies, longest gap ${Math.round(res.maxGapMs)} ms)`,
      timing: marks.join(', '),
    };
  } finally {
    rmSync(hold, { force: true });
    if (linkCut) link(bed, true);
    if (full) tmpfs(bed, false);
    migrating.child?.kill('SIGKILL');
    if (!probeStopped) await probe.stop().catch(() => undefined);
  }
}

let bed: Bed | undefined;
const results: CellResult[] = [];
const t0 = Date.now();

before(async () => {
  if (missingPrerequisite()) return;
  const env = { FERRY_FAULTS: faultList(), FERRY_DEADLINES: JSON.stringify(DEADLINES) };
  bed = await startBed(['a', 'b'], { agentEnv: { a: env, b: env } });
});

after(async () => {
  await bed?.down();
  // the page is rewritten only when asked: a test run leaves the checkout as it was
  if (!bed || only.length || !process.env.FERRY_UPDATE_DOCS) return;
  const totalS = Math.round((Date.now() - t0) / 1000);
  const doc = renderReliability(
    MATRIX_PHASES.flatMap((p) => results.filter((r) => r.cell.phase === p)),
    { date: new Date().toISOString().slice(0, 10), totalS },
  );
  const file = new URL('../../docs/reliability.md', import.meta.url);
  // the soak's section is `ferry bench soak`'s own (bench/soak.ts): kept as it is
  writeFileSync(file, keepSoakSection(doc, existsSync(file) ? readFileSync(file, 'utf8') : ''));
});

for (const [i, cell] of CELLS.entries()) {
  const title = `fault matrix: ${cell.phase} × ${cell.fault}`;
  if (cell.na) {
    results.push({ cell, outcome: 'n/a', detail: cell.na });
    test(title, { skip: `n/a: ${cell.na}` }, () => {});
    continue;
  }
  if (!selected(cell)) continue;
  test(title, cell.todo ? { todo: cell.todo } : {}, async (t) => {
    if (!skipUnlessReady(t) || !bed) return;
    const c0 = Date.now();
    try {
      const { detail, timing } = await runCell(bed, cell, i);
      results.push({ cell, outcome: 'pass', detail, ms: Date.now() - c0 });
      t.diagnostic(`${Date.now() - c0} ms (${timing}): ${detail}`);
    } catch (err) {
      results.push({
        cell,
        outcome: cell.todo ? 'todo' : 'fail',
        detail: (err as Error).message,
        ms: Date.now() - c0,
      });
      // a failed cell may leave its container behind: removed, b's tmpfs given its size back, and both agents up, so
      // the next cell starts clean
      if (existsSync(join(hostDir(bed, 'b'), 'images', 'filler'))) tmpfs(bed, false);
      for (const h of ['a', 'b']) {
        await controlAgent(bed.name, 'start', h, agentDeps(bed)).catch(() => undefined);
        await bed.ctx
          .client(h)
          .remove(nameOf(i))
          .catch(() => undefined);
      }
      throw err;
    }
  });
}

test("ferry migrate's own link to the source agent drops: it reattaches and reports the true outcome", async (t) => {
  if (!skipUnlessReady(t) || !bed) return;
  const b = bed;
  const ip = `${b.state.subnet}.140`;
  await b.ctx
    .client('a')
    .create({ name: REATTACH, command: pythonArgs(LINE_COUNTER_PY, 7000), net: 'own', ip });
  const migrating = cliProcess(b, ['migrate', REATTACH, '--to', 'b', '--strategy', 'cold', '--json']);
  const hold = join(hostDir(b, 'a'), 'faults', holdFileName('source:transfer', REATTACH));
  await waitFor('the migration held in its transfer', () => existsSync(hold) || undefined, 60_000);
  // the CLI's connections to a (from the LAN bridge's address) are reset from now on
  const ns = `--net=/run/netns/${netnsOf(b, 'a')}`;
  const rule = ['INPUT', '-s', b.state.bridgeAddress, '-p', 'tcp', '--dport', '7470', '-j', 'REJECT'];
  const reset = [...rule, '--reject-with', 'tcp-reset'];
  execFileSync('nsenter', [ns, 'iptables', '-I', ...reset]);
  try {
    rmSync(hold);
    // the migration ends without its caller; the caller comes back afterwards
    await waitFor(
      `${REATTACH} running on b`,
      async () => {
        const c = (await b.ctx.client('b').containers()).find((x) => x.name === REATTACH);
        return c?.status === 'running' || undefined;
      },
      60_000,
    );
  } finally {
    execFileSync('nsenter', [ns, 'iptables', '-D', ...reset]);
  }
  const m = await migrating.done;
  assert.equal(m.code, 0, m.stdout);
  const report = JSON.parse(m.stdout) as MigrationReport;
  assert.equal(report.ok, true);
  assert.equal((await containers(b)).find((c) => c.name === REATTACH)?.host, 'b');
  await b.ctx.client('b').remove(REATTACH);
});

// checkpoint × criu-hang: a dump that never ends. The container has a task in a signal stop and its dump goes
// without the seize such a task needs (the test-only fault), so CRIU hangs in its ptrace seize on the frozen cgroup
// until the freeze ceiling (HANG_FREEZE_MS: the source agent is restarted with it, the last case of the file). Then
// runc and its CRIU are killed, and the container is resumed on the source: running once, not paused, its client's
// connection intact, no CRIU left.
test('fault matrix: checkpoint × criu-hang (a stuck dump is killed at the freeze ceiling, the source resumed)', async (t) => {
  if (!skipUnlessReady(t) || !bed) return;
  if (only.length && !only.includes('criu-hang') && !only.includes('checkpoint')) return;
  const b = bed;
  const hostA = b.state.hosts.find((h) => h.name === 'a')!;
  const env = {
    FERRY_FAULTS: faultList(),
    FERRY_DEADLINES: JSON.stringify({ ...DEADLINES, freezeMs: HANG_FREEZE_MS }),
  };
  await startAgent(b.state, hostA, agentDeps(b), env);
  const c0 = Date.now();
  const marker = `fmx-${HANG}-${b.name}`;
  const ip = `${b.state.subnet}.141`;
  // a child of the server stops itself: the container holds a task in a signal stop
  const stopper =
    'import os, signal\nif os.fork() == 0:\n    os.kill(os.getpid(), signal.SIGSTOP)\n    os._exit(0)\n';
  await b.ctx.client('a').create({
    name: HANG,
    command: pythonArgs(`${stopper}${LINE_COUNTER_PY}\n# ${marker}`, 7000),
    net: 'own',
    ip,
  });
  const probe = new Probe({ kind: 'tcp', host: ip, port: 7000, intervalMs: 20 });
  let probeStopped = false;
  try {
    await waitForPort(ip, 7000);
    await probe.start();
    const m = await inProcess(b, HANG, 'cold').done;
    const report = JSON.parse(m.stdout) as MigrationReport;
    assert.equal(report.ok, false, 'a migration whose dump hangs fails');
    assert.equal(report.error?.code, 'FERRY_E_CHECKPOINT_FAILED', JSON.stringify(report.error));
    assert.equal(report.error?.phase, 'checkpoint', JSON.stringify(report.error));
    assert.match(
      report.error?.message ?? '',
      /deadline|ceiling/,
      'the error names the deadline as the cause',
    );
    assert.equal(report.rollback?.action, 'thawed', JSON.stringify(report.rollback));
    const list = (await containers(b)).filter((c) => c.name === HANG);
    assert.deepEqual(
      list.map((c) => `${c.host}:${c.status}`),
      ['a:running'],
      'running once, on the source, not paused',
    );
    assert.equal(runningInstancesOf(marker), 1, 'one running copy (not frozen)');
    assert.deepEqual(processesWith(join(hostDir(b, 'a'), 'images')), [], 'no runc checkpoint or CRIU left');
    // (CRIUs of other testbeds may run meanwhile: what matters is that none holds this container's tasks)
    const traced = processesWith(marker).filter(
      (pid) => !/^TracerPid:\s+0$/m.test(readFileSync(`/proc/${pid}/status`, 'utf8')),
    );
    assert.deepEqual(traced, [], 'no CRIU left holding a task of the container');
    const before = probe.replies;
    await waitFor('replies on the same connection', () => probe.replies > before + 3 || undefined, 30_000);
    const res = await probe.stop();
    probeStopped = true;
    assert.equal(res.resets, 0, `the client connection was not reset: ${JSON.stringify(res).slice(0, 400)}`);
    assert.equal(res.serverValues?.continuous, true, 'the same server answered the client, its state intact');
    t.diagnostic(`${Date.now() - c0} ms: ${report.error?.message}`);
  } finally {
    if (!probeStopped) await probe.stop().catch(() => undefined);
    await b.ctx
      .client('a')
      .remove(HANG)
      .catch(() => undefined);
  }
});
