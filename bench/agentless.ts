// Benchmark: agentless migration (`ferry migrate --to ssh://…`, decision 0014) against migration between agents,
// the same container size, the same shaped link, the same run, interleaved. Each is timed as the user waits for it:
// the wall time of `ferry migrate`, from the command to its report (agentless also pays for the ssh session and the
// temporary agent's start; the agents are running already). Goal: agentless ≤ 1.2 × the agents' time.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { table } from '../src/core/table.ts';
import type { MigrationReport } from '../src/migration/types.ts';
import { ProcessRunner } from '../src/runtime/exec.ts';
import { testbedDown, testbedUp } from '../src/testbed/testbed.ts';
import { randomBallastPy } from '../src/workloads/servers.ts';
import { fmt, median, sleep } from './common.ts';

export interface AgentlessBenchOptions {
  runs: number;
  sizeMiB: number;
  rate: string;
  ferryArgv: string[];
  /** The folder of benchmarks.md, whose agentless section this run rewrites (none: nothing written). */
  docs?: string;
  json?: boolean;
}

export const GOAL_RATIO = 1.2;
const TESTBED = 'bagl';
export const SECTION_BEGIN = '<!-- ferry bench agentless: begin (rewritten by the benchmark) -->';
export const SECTION_END = '<!-- ferry bench agentless: end -->';

interface Sample {
  wallMs: number;
  /** The engine's own total (the report's totalMs): without the ssh session and the temporary agent's start. */
  totalMs: number;
  freezeMs: number;
  ok: boolean;
  note?: string;
}

/** A container that fills `mib` of random memory (no zero pages to skip), then says so and sleeps. */
function ballast(mib: number): string[] {
  const code =
    `import time\n${randomBallastPy(mib)}` +
    "open('/tmp/ready', 'w').write('1')\nwhile True: time.sleep(1)\n";
  return ['/usr/bin/python3', '-u', '-c', code];
}

function runCommand(
  argv: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stdout: string; ms: number; stderr: string }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const c = spawn(argv[0]!, argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    c.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    c.on('close', (code) => resolve({ code, stdout, stderr, ms: performance.now() - t0 }));
  });
}

async function runcPid(root: string, name: string, runner: ProcessRunner): Promise<number> {
  const r = await runner.run(['runc', '--root', root, 'state', name]);
  return (JSON.parse(r.stdout) as { pid: number }).pid;
}

export async function agentlessBench(o: AgentlessBenchOptions): Promise<unknown> {
  const runner = new ProcessRunner();
  const deps = { runner, ferryArgv: o.ferryArgv };
  const log = (m: string) => process.stderr.write(`${m}\n`);
  const started = performance.now();
  const load = loadavg();
  const work = await mkdtemp(join(tmpdir(), 'ferry-bench-agentless-'));
  const exe = process.env['FERRY_EXECUTABLE'] || join(work, 'ferry-linux-x64');
  if (!process.env['FERRY_EXECUTABLE']) {
    log('building the single executable');
    await runner.run(['bash', new URL('../scripts/dist.sh', import.meta.url).pathname, exe], {
      timeoutMs: 600_000,
    });
  }
  await testbedDown(TESTBED, deps).catch(() => {});
  const tb = await testbedUp({ name: TESTBED, hosts: ['a', 'b'], rate: o.rate, ssh: true }, deps);
  const env = { ...process.env, FERRY_CLUSTER: tb.clusterFile, FERRY_EXECUTABLE: exe };
  const [a, b] = [tb.hosts[0]!, tb.hosts[1]!];
  const agentRoot = (h: string) => join(tb.dir, 'hosts', h, 'runc');
  const agentlessRoot = (h: string) => join(tb.dir, 'hosts', h, 'ssh', 'agentless', 'runc');
  const samples: Record<'agent' | 'agentless', Sample[]> = { agent: [], agentless: [] };
  const sample = (out: { code: number | null; stdout: string; ms: number; stderr: string }): Sample => {
    try {
      const r = JSON.parse(out.stdout) as MigrationReport;
      return {
        wallMs: out.ms,
        totalMs: r.totalMs,
        freezeMs: r.freezeMs,
        ok: r.ok,
        ...(r.ok ? {} : { note: r.error?.message ?? 'failed' }),
      };
    } catch {
      return {
        wallMs: out.ms,
        totalMs: Number.NaN,
        freezeMs: Number.NaN,
        ok: false,
        note: out.stderr.trim().split('\n').pop() ?? '',
      };
    }
  };
  try {
    // ferry's executable is copied to each host once (127 MiB, a one-time cost that `ferry check --host` pays here)
    for (const h of tb.hosts) {
      const r = await runCommand(
        [
          'nsenter',
          `--net=/run/netns/${a.netns}`,
          '--',
          ...o.ferryArgv,
          'check',
          '--host',
          `ssh://${h.name}`,
          '--ssh-config',
          tb.ssh!.config,
          '--json',
        ],
        env,
      );
      if (r.code !== 0) throw new Error(`ferry check --host ssh://${h.name}: ${r.stderr}`);
    }
    // both containers start on a under its agent; the agentless one is then moved as a container of a's runc root
    for (const name of ['g', 'l']) {
      const r = await runCommand(
        [
          ...o.ferryArgv,
          'run',
          '--host',
          'a',
          '--name',
          name,
          '--net',
          'none',
          '--json',
          '--',
          ...ballast(o.sizeMiB),
        ],
        env,
      );
      if (r.code !== 0) throw new Error(`ferry run ${name}: ${r.stderr}`);
      const pid = await runcPid(agentRoot('a'), name, runner);
      for (let i = 0; ; i++) {
        const ready = await readFile(`/proc/${pid}/root/tmp/ready`, 'utf8').catch(() => '');
        if (ready) break;
        if (i > 1200) throw new Error(`${name} did not fill its memory`);
        await sleep(250);
      }
    }
    let lRoot = agentRoot('a');
    for (let run = 0; run < o.runs; run++) {
      for (const [from, to] of [
        [a, b],
        [b, a],
      ] as const) {
        const agent = sample(
          await runCommand(
            [...o.ferryArgv, 'migrate', 'g', '--to', to.name, '--strategy', 'cold', '--json'],
            env,
          ),
        );
        samples.agent.push(agent);
        const agentless = sample(
          await runCommand(
            [
              'nsenter',
              `--net=/run/netns/${from.netns}`,
              '--',
              ...o.ferryArgv,
              'migrate',
              'l',
              '--to',
              `ssh://${to.name}`,
              '--strategy',
              'cold',
              '--runc-root',
              lRoot,
              '--ssh-config',
              tb.ssh!.config,
              '--json',
            ],
            env,
          ),
        );
        samples.agentless.push(agentless);
        if (agentless.ok) lRoot = agentlessRoot(to.name);
        log(
          `run ${run + 1}/${o.runs} ${from.name} -> ${to.name}: agent ${fmt(agent.wallMs)} ms` +
            `${agent.ok ? '' : ` FAILED (${agent.note})`}, agentless ${fmt(agentless.wallMs)} ms` +
            `${agentless.ok ? '' : ` FAILED (${agentless.note})`}`,
        );
      }
    }
  } finally {
    for (const root of [agentlessRoot('a'), agentlessRoot('b')]) {
      await runner.run(['runc', '--root', root, 'kill', 'l', 'KILL'], { allowFail: true });
      await runner.run(['runc', '--root', root, 'delete', '--force', 'l'], { allowFail: true });
    }
    await testbedDown(TESTBED, deps).catch((e: Error) => log(`testbed down: ${e.message}`));
    await rm(work, { recursive: true, force: true });
  }
  const med = (who: 'agent' | 'agentless', k: 'wallMs' | 'totalMs' | 'freezeMs') =>
    median(samples[who].filter((s) => s.ok).map((s) => s[k]));
  const result = {
    sizeMiB: o.sizeMiB,
    rate: o.rate,
    runs: o.runs,
    agent: {
      wallMs: med('agent', 'wallMs'),
      totalMs: med('agent', 'totalMs'),
      freezeMs: med('agent', 'freezeMs'),
    },
    agentless: {
      wallMs: med('agentless', 'wallMs'),
      totalMs: med('agentless', 'totalMs'),
      freezeMs: med('agentless', 'freezeMs'),
    },
    failed: {
      agent: samples.agent.filter((s) => !s.ok).length,
      agentless: samples.agentless.filter((s) => !s.ok).length,
    },
    ratio: med('agentless', 'wallMs') / med('agent', 'wallMs'),
    goal: GOAL_RATIO,
    machine: `${cpus().length} cores, load average (1 min) ${load[0]!.toFixed(1)} at the start and ${loadavg()[0]!.toFixed(1)} at the end; the bench took ${fmt((performance.now() - started) / 60_000, 1)} min`,
  };
  const rows = [
    ['', 'ferry migrate (wall, ms)', 'engine total (ms)', 'freeze (ms)', 'failed'],
    ...(['agent', 'agentless'] as const).map((w) => [
      w,
      fmt(result[w].wallMs),
      fmt(result[w].totalMs),
      fmt(result[w].freezeMs),
      String(result.failed[w]),
    ]),
  ];
  const text =
    `agentless vs agent, cold, ${o.sizeMiB} MiB, link ${o.rate}, ${o.runs} run(s) each way, medians\n` +
    `${table(rows)}\n` +
    `ratio agentless ÷ agent (wall): ${fmt(result.ratio, 2)} (goal ≤ ${GOAL_RATIO}: ${result.ratio <= GOAL_RATIO ? 'met' : 'NOT met'})\n` +
    `${result.machine}`;
  process.stdout.write(o.json ? `${JSON.stringify(result)}\n` : `${text}\n`);
  if (o.docs) await writeSection(o.docs, text);
  return result;
}

async function writeSection(docs: string, text: string): Promise<void> {
  const body =
    `${SECTION_BEGIN}\n## Agentless migration (ssh://) against agents\n\n` +
    '`ferry bench agentless`: the same cold migration of a container holding random memory, between the agents of a ' +
    "two-host testbed and agentless over the testbed's sshd (`--to ssh://`, a temporary agent started for each " +
    'migration), interleaved on the same shaped link; wall time of `ferry migrate` as the user waits for it, and ' +
    "the engine's own total, which leaves out the ssh session and the temporary agent's start. The executable is " +
    'copied to each host before the first measurement (a one-time cost of 127 MiB per host).\n\n' +
    `\`\`\`\n${text}\n\`\`\`\n${SECTION_END}\n`;
  const file = join(docs, 'benchmarks.md');
  const old = await readFile(file, 'utf8').catch(() => '');
  await writeFile(file, replaceAgentlessSection(old, body));
}

/** `doc` with its agentless section replaced by `body` (or appended); the rest of the page is left alone. */
export function replaceAgentlessSection(doc: string, body: string): string {
  const start = doc.indexOf(SECTION_BEGIN);
  const end = doc.indexOf(SECTION_END);
  if (start === -1 || end === -1) return doc.trim() ? `${doc.trimEnd()}\n\n${body}` : body;
  const tail = doc.slice(end + SECTION_END.length).replace(/^\n/, '');
  return `${doc.slice(0, start)}${body}${tail}`;
}

/** The agentless section of `doc` (to keep it when another suite rewrites the page), if it has one. */
export function agentlessSection(doc: string): string | undefined {
  const start = doc.indexOf(SECTION_BEGIN);
  const end = doc.indexOf(SECTION_END);
  return start === -1 || end === -1 ? undefined : `${doc.slice(start, end + SECTION_END.length)}\n`;
}
