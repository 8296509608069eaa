// Benchmark: checkpoint into an archive file and restore from it, ferry against Podman 5 on the same workload in
// the same run. A Redis holding N MiB of values (hex text: compressible about as well as real data) is filled,
// checkpointed into a zstd archive on tmpfs, removed, restored from the file and checked (DBSIZE and Redis's own
// digest of the whole dataset, before and after). ferry runs on a one-host testbed through its CLI; Podman runs on
// the host from an image imported from the host's own redis binaries (there is no registry to pull from).
// Runs are interleaved, ferry then Podman, so both see the same machine state. Podman comes from
// `scripts/setup.sh podman`; nothing else in ferry needs it.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { cp, mkdir, mkdtemp, open, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { ClusterClients } from '../src/api/cluster-clients.ts';
import { table } from '../src/core/table.ts';
import { ProcessRunner } from '../src/runtime/exec.ts';
import { testbedDown, testbedUp } from '../src/testbed/testbed.ts';
import { REDIS_SERVER_ARGS, redisUnixSocketArgs } from '../src/workloads/servers.ts';
import { fmt, median, sleep, waitForPort } from './common.ts';

export interface ArchiveBenchOptions {
  runs: number;
  sizeMiB: number;
  ferryArgv: string[];
  /** The folder of benchmarks.md, whose archive section this run rewrites (none: a smoke run, nothing written). */
  docs?: string;
  json?: boolean;
}

/** The goals: ferry's checkpoint + restore in at most half of Podman's time, and an archive no larger. */
export const GOALS = { totalPerPodman: 0.5, sizePerPodman: 1.0 };

const TESTBED = 'barch';
const IMAGE = 'localhost/ferry-bench-archive-redis:latest';
const PODMAN_PREFIX = 'ferry-bench-archive-';
/** Each value: 2 KiB of random bytes as 4 KiB of hex. */
const VALUE_BYTES = 4096;
const SOCKET = '/tmp/redis.sock';
// Podman's container has no network (--network none: no firewall rules on the host); it is reached over a unix socket
const PODMAN_REDIS = redisUnixSocketArgs(SOCKET);
const FERRY_REDIS = [...REDIS_SERVER_ARGS];
const PODMAN_ENV = { ...process.env, PODMAN_IGNORE_CGROUPSV1_WARNING: '1' };

export const SECTION_BEGIN = '<!-- ferry bench archive: begin (rewritten by the benchmark) -->';
export const SECTION_END = '<!-- ferry bench archive: end -->';

type Who = 'ferry' | 'podman';

interface Sample {
  checkpointMs: number;
  restoreMs: number;
  totalMs: number;
  bytes: number;
  ok: boolean;
  note?: string;
}

const log = (m: string) => process.stderr.write(`${m}\n`);

/** Runs `argv` with `file` as its standard input (a gigabyte does not go through a string). */
export async function pipeFile(argv: string[], file: string, env?: NodeJS.ProcessEnv): Promise<string> {
  const fh = await open(file, 'r');
  try {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: [fh.fd, 'pipe', 'pipe'], env: env ?? process.env });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const [code] = (await once(child, 'close')) as [number | null];
    if (code !== 0) throw new Error(`${argv.join(' ')} exited with ${code}: ${out.trim().slice(-500)}`);
    return out;
  } finally {
    await fh.close();
  }
}

/** The redis-cli --pipe input that fills Redis with `mib` MiB of values. */
export async function writeFill(file: string, mib: number): Promise<number> {
  const keys = Math.max(1, Math.floor((mib * 2 ** 20) / VALUE_BYTES));
  const out = createWriteStream(file);
  for (let i = 0; i < keys; i += 256) {
    let chunk = '';
    for (let j = i; j < Math.min(keys, i + 256); j++) {
      const key = `key:${j}`;
      const value = randomBytes(VALUE_BYTES / 2).toString('hex');
      chunk += `*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$${value.length}\r\n${value}\r\n`;
    }
    if (!out.write(chunk)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  return keys;
}

/** An image with the host's redis-server and redis-cli and the libraries they load. */
async function buildImage(runner: ProcessRunner, work: string): Promise<void> {
  const root = join(work, 'rootfs');
  const bins = ['/usr/bin/redis-check-rdb', '/usr/bin/redis-cli'];
  const ldd = await runner.run(['ldd', ...bins]);
  const libs = [...new Set(ldd.stdout.match(/\s(\/\S+)\s\(0x/g)?.map((m) => m.trim().split(' ')[0]!) ?? [])];
  for (const f of [...bins, ...libs]) {
    await mkdir(join(root, dirname(f)), { recursive: true });
    await cp(f, join(root, f), { dereference: true });
  }
  // redis-server is a link to redis-check-rdb in Debian's package; the binary decides by its name
  await symlink('redis-check-rdb', join(root, '/usr/bin/redis-server'));
  await mkdir(join(root, 'tmp'), { recursive: true, mode: 0o1777 });
  await mkdir(join(root, 'etc'), { recursive: true });
  await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/:/bin/sh\n');
  await runner.run(['tar', '-C', root, '-cf', join(work, 'image.tar'), '.']);
  await runner.run(['podman', 'import', '-q', join(work, 'image.tar'), IMAGE], { env: PODMAN_ENV });
  await rm(root, { recursive: true, force: true });
  await rm(join(work, 'image.tar'), { force: true });
}

async function podmanCleanup(runner: ProcessRunner, image = true): Promise<void> {
  const ps = await runner.run(['podman', 'ps', '-a', '--format', '{{.Names}}'], {
    allowFail: true,
    env: PODMAN_ENV,
  });
  for (const n of ps.stdout.split('\n').filter((x) => x.startsWith(PODMAN_PREFIX)))
    await runner.run(['podman', 'rm', '-f', '-t', '0', n], { allowFail: true, env: PODMAN_ENV });
  if (image) await runner.run(['podman', 'rmi', '-f', IMAGE], { allowFail: true, env: PODMAN_ENV });
}

/** DBSIZE and Redis's digest of the whole dataset: equal before and after means every key came back intact. */
async function fingerprint(cli: string[], runner: ProcessRunner, env?: NodeJS.ProcessEnv): Promise<string> {
  const size = await runner.run([...cli, 'DBSIZE'], env ? { env } : {});
  const digest = await runner.run([...cli, 'DEBUG', 'DIGEST'], env ? { env } : {});
  return `${size.stdout.trim()} keys, digest ${digest.stdout.trim()}`;
}

async function waitForPong(cli: string[], runner: ProcessRunner, env?: NodeJS.ProcessEnv): Promise<void> {
  const deadline = performance.now() + 60_000;
  while (performance.now() < deadline) {
    const r = await runner.run([...cli, 'PING'], { allowFail: true, ...(env ? { env } : {}) });
    if (r.stdout.trim() === 'PONG') return;
    await sleep(100);
  }
  throw new Error('Redis did not answer PING within 60 s');
}

export async function archiveBench(o: ArchiveBenchOptions): Promise<unknown> {
  const runner = new ProcessRunner();
  const deps = { runner, ferryArgv: o.ferryArgv };
  const version = await runner.run(['podman', '--version'], { allowFail: true, env: PODMAN_ENV });
  if (!/ 5\./.test(version.stdout))
    throw new Error('the archive benchmark needs Podman 5: run `scripts/setup.sh podman` (as root) first');
  const load = loadavg();
  const started = performance.now();
  // tmpfs: the archives and the fill file are memory, as the workload is
  const work = await mkdtemp('/dev/shm/ferry-bench-archive-');
  await podmanCleanup(runner);
  await testbedDown(TESTBED, deps).catch(() => {});
  const samples: Record<Who, Sample[]> = { ferry: [], podman: [] };
  let ctx: ClusterClients | undefined;
  try {
    await buildImage(runner, work);
    const tb = await testbedUp({ name: TESTBED, hosts: ['a'] }, deps);
    ctx = await ClusterClients.load(tb.clusterFile);
    const fill = join(work, 'fill.resp');
    const keys = await writeFill(fill, o.sizeMiB);
    log(`fill: ${keys} keys of ${VALUE_BYTES} bytes`);
    const ferry = (...args: string[]) =>
      runner.run([...o.ferryArgv, '--cluster', tb.clusterFile, ...args], { label: `ferry ${args[0]}` });
    for (let run = 0; run < o.runs; run++) {
      for (const who of ['ferry', 'podman'] as const) {
        const name = `${who === 'podman' ? PODMAN_PREFIX : 'arc'}${run}`;
        const file = join(work, `${who}-${run}.tar.zst`);
        const s: Sample = {
          checkpointMs: Number.NaN,
          restoreMs: Number.NaN,
          totalMs: Number.NaN,
          bytes: 0,
          ok: false,
        };
        try {
          let before: string;
          let after: string;
          if (who === 'ferry') {
            const ip = `${tb.subnet}.${60 + run}`;
            await ctx.client('a').create({ name, command: FERRY_REDIS, net: 'own', ip });
            await waitForPort(ip, 6379, 60_000);
            const cli = ['redis-cli', '-h', ip];
            await pipeFile([...cli, '--pipe'], fill);
            before = await fingerprint(cli, runner);
            const t0 = performance.now();
            await ferry('checkpoint', name, '--export', file, '--compress', 'zstd');
            s.checkpointMs = performance.now() - t0;
            await ctx.client('a').remove(name);
            const t1 = performance.now();
            const r = await ferry('restore', '--import', file, '--host', 'a', '--json');
            s.restoreMs = performance.now() - t1;
            const restoredIp = (JSON.parse(r.stdout) as { container: { ip?: string } }).container.ip ?? ip;
            const cli2 = ['redis-cli', '-h', restoredIp];
            await waitForPong(cli2, runner);
            after = await fingerprint(cli2, runner);
            await ctx.client('a').remove(name);
          } else {
            const pod = (...args: string[]) =>
              runner.run(['podman', ...args], {
                env: PODMAN_ENV,
                label: `podman ${args[0]} ${args[1] ?? ''}`,
              });
            await pod('run', '-d', '--name', name, '--network', 'none', IMAGE, ...PODMAN_REDIS);
            const cli = ['podman', 'exec', name, '/usr/bin/redis-cli', '-s', SOCKET];
            await waitForPong(cli, runner, PODMAN_ENV);
            await pipeFile(
              ['podman', 'exec', '-i', name, '/usr/bin/redis-cli', '-s', SOCKET, '--pipe'],
              fill,
              PODMAN_ENV,
            );
            before = await fingerprint(cli, runner, PODMAN_ENV);
            const t0 = performance.now();
            await pod('container', 'checkpoint', name, '--export', file, '--compress', 'zstd');
            s.checkpointMs = performance.now() - t0;
            await pod('rm', name);
            const t1 = performance.now();
            await pod('container', 'restore', '--import', file);
            s.restoreMs = performance.now() - t1;
            await waitForPong(cli, runner, PODMAN_ENV);
            after = await fingerprint(cli, runner, PODMAN_ENV);
            await pod('rm', '-f', '-t', '0', name);
          }
          s.totalMs = s.checkpointMs + s.restoreMs;
          s.bytes = (await stat(file)).size;
          s.ok = before === after && !before.startsWith('0 ');
          if (!s.ok) s.note = `keys not intact: ${before} before, ${after} after`;
        } catch (err) {
          // one failed measurement is a failed run, not the end of the benchmark
          s.note = (err as Error).message.split('\n')[0];
          if (who === 'ferry')
            await ctx
              .client('a')
              .remove(name)
              .catch(() => {});
          else await podmanCleanup(runner, false);
        }
        await rm(file, { force: true });
        samples[who].push(s);
        log(
          `run ${run + 1}/${o.runs} ${who}: checkpoint ${fmt(s.checkpointMs)} ms, restore ${fmt(s.restoreMs)} ms, ` +
            `archive ${fmt(s.bytes / 2 ** 20, 1)} MiB${s.ok ? '' : ` FAILED: ${s.note ?? ''}`}`,
        );
      }
    }
  } finally {
    ctx?.close();
    await podmanCleanup(runner);
    await testbedDown(TESTBED, deps).catch((e: Error) => log(`testbed down: ${e.message}`));
    await rm(work, { recursive: true, force: true });
  }
  const r = summarize(o, samples);
  const machine = `${cpus().length} cores, load average (1 min) ${load[0]!.toFixed(1)} at the start and ${loadavg()[0]!.toFixed(1)} at the end; the bench took ${fmt((performance.now() - started) / 60_000, 1)} min`;
  if (o.docs) await writeSection(o.docs, o, r, machine, version.stdout.trim());
  if (o.json) return { ...r.out, machine };
  for (const who of ['ferry', 'podman'] as const)
    for (const s of samples[who])
      if (!s.ok) process.stdout.write(`failure: ${who}: ${s.note ?? 'unknown'}\n`);
  process.stdout.write(`\n${r.text}\n`);
  return r.out;
}

function summarize(
  o: ArchiveBenchOptions,
  samples: Record<Who, Sample[]>,
): { text: string; out: Record<string, unknown> } {
  const ok = (w: Who) => samples[w].filter((s) => s.ok);
  const med = (w: Who, f: (s: Sample) => number) => median(ok(w).map(f));
  const spread = (w: Who, f: (s: Sample) => number) => {
    const xs = ok(w).map(f);
    return xs.length ? `${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}` : '-';
  };
  const rows = [
    ['who', 'checkpoint ms', 'restore ms', 'total ms', 'total min–max', 'archive MiB', 'ok runs'],
  ];
  for (const w of ['ferry', 'podman'] as const)
    rows.push([
      w,
      fmt(med(w, (s) => s.checkpointMs)),
      fmt(med(w, (s) => s.restoreMs)),
      fmt(med(w, (s) => s.totalMs)),
      spread(w, (s) => s.totalMs),
      fmt(med(w, (s) => s.bytes) / 2 ** 20, 1),
      `${ok(w).length}/${samples[w].length}`,
    ]);
  const totalRatio = med('ferry', (s) => s.totalMs) / med('podman', (s) => s.totalMs);
  const sizeRatio = med('ferry', (s) => s.bytes) / med('podman', (s) => s.bytes);
  const yes = (b: boolean) => (b ? 'yes' : 'no');
  const goals = [
    ['figure', 'value', 'goal', 'met'],
    [
      'total ferry ÷ Podman',
      fmt(totalRatio, 2),
      `<= ${GOALS.totalPerPodman}`,
      yes(totalRatio <= GOALS.totalPerPodman),
    ],
    [
      'archive ferry ÷ Podman',
      fmt(sizeRatio, 2),
      `<= ${GOALS.sizePerPodman}`,
      yes(sizeRatio <= GOALS.sizePerPodman),
    ],
  ];
  const text =
    `checkpoint to a zstd archive on tmpfs + restore from it, Redis with ${o.sizeMiB} MiB of values, medians of ${o.runs} interleaved runs\n` +
    `${table(rows)}\n\n${table(goals)}`;
  return {
    text,
    out: {
      sizeMiB: o.sizeMiB,
      runs: o.runs,
      samples,
      totalPerPodman: totalRatio,
      sizePerPodman: sizeRatio,
      goalsMet: totalRatio <= GOALS.totalPerPodman && sizeRatio <= GOALS.sizePerPodman,
    },
  };
}

async function writeSection(
  docs: string,
  o: ArchiveBenchOptions,
  r: { text: string },
  machine: string,
  podman: string,
): Promise<void> {
  const body = [
    SECTION_BEGIN,
    '## Archives: ferry against Podman',
    '',
    `\`ferry bench archive --size ${o.sizeMiB} --runs ${o.runs}\` (${new Date().toISOString().slice(0, 10)}, ${podman}):`,
    `a Redis holding ${o.sizeMiB} MiB of values (4 KiB of hex text each), checkpointed into a zstd archive on tmpfs,`,
    'removed, restored from the archive and checked (DBSIZE and `DEBUG DIGEST` equal before and after). ferry runs on a',
    'one-host testbed through its CLI (`checkpoint --export --compress zstd`, `restore --import`); Podman runs the same',
    'redis binaries from an image imported from the host (`podman container checkpoint --export --compress zstd`,',
    '`podman container restore --import`, no network). Times are each command from start to exit; ferry then Podman',
    'in every run.',
    '',
    '```',
    r.text,
    '```',
    '',
    `Machine: ${machine}. It is shared with other work and loaded: the times are as slow as the machine was busy, the`,
    'ratios are what one run measured side by side.',
    SECTION_END,
    '',
  ].join('\n');
  const file = join(docs, 'benchmarks.md');
  const old = await readFile(file, 'utf8').catch(() => '');
  await writeFile(file, replaceArchiveSection(old, body));
}

/** `doc` with its archive section replaced by `body` (or appended); the rest of the page is left alone. */
export function replaceArchiveSection(doc: string, body: string): string {
  const start = doc.indexOf(SECTION_BEGIN);
  const end = doc.indexOf(SECTION_END);
  if (start === -1 || end === -1) return doc.trim() ? `${doc.trimEnd()}\n\n${body}` : body;
  const tail = doc.slice(end + SECTION_END.length).replace(/^\n/, '');
  return `${doc.slice(0, start)}${body}${tail}`;
}

/** The archive section of `doc` (to keep it when another suite rewrites the page), if it has one. */
export function archiveSection(doc: string): string | undefined {
  const start = doc.indexOf(SECTION_BEGIN);
  const end = doc.indexOf(SECTION_END);
  return start === -1 || end === -1 ? undefined : `${doc.slice(start, end + SECTION_END.length)}\n`;
}
