// `ferry bench zdtm`: CRIU's zdtm static tests as ferry's conformance suite. Each test runs in a ferry
// container under zdtm's protocol: a control run (start, SIGTERM, PASS/FAIL, no migration), then, when the
// control passes, one run per strategy with a migration a -> b between start and SIGTERM.
// A full run (no test list) rewrites docs/conformance.md.
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { canDropUid, type Harness, runTest, type TestResult, ZDTM_BUNDLE_POLICY } from './zdtm-run.ts';
import {
  buildTests,
  checkFeatures,
  checkskip,
  ensureSuite,
  listTests,
  readDesc,
  type Suite,
  skipReason,
  type TestDesc,
} from './zdtm-suite.ts';

const run = promisify(execFile);

export const ZDTM_STRATEGIES = ['cold', 'postcopy', 'precopy', 'auto'];
const COLUMN: Record<string, string> = {
  cold: 'cold',
  postcopy: 'post-copy',
  precopy: 'pre-copy',
  auto: 'auto',
};

export interface ZdtmBenchOptions {
  ferryArgv: string[];
  strategies?: string[];
  /** Test names (`env00` or `static/env00`); default: every test zdtm would run on this host. */
  tests?: string[];
  /** Per run (control or migration), in ms. */
  timeoutMs?: number;
  json?: boolean;
  /** Where docs/conformance.md goes after a full run. */
  docs?: string;
  log?: (m: string) => void;
}

export interface ZdtmTestReport {
  test: string;
  skipped?: string;
  control?: TestResult;
  migrations: Record<string, TestResult>;
}

export interface Selection {
  run: { test: string; desc: TestDesc }[];
  skipped: { test: string; reason: string }[];
}

/** Which tests run: zdtm's own default-run rules (noauto, crfail, flavor, arch, features, checkskip), built. */
export async function selectTests(s: Suite, wanted?: string[]): Promise<Selection> {
  const all = await listTests(s);
  const names = wanted?.length ? wanted.map((t) => t.replace(/^(zdtm\/)?static\//, '')) : all;
  const unknown = names.filter((t) => !all.includes(t));
  if (unknown.length) throw new Error(`not zdtm static tests: ${unknown.join(', ')}`);
  const descs = new Map<string, TestDesc>();
  for (const t of names) descs.set(t, await readDesc(s, t));
  const features = await checkFeatures([...descs.values()].flatMap((d) => d.feature));
  const out: Selection = { run: [], skipped: [] };
  const candidates: string[] = [];
  for (const t of names) {
    const why = skipReason(descs.get(t)!, features) ?? ((await checkskip(s, t)) ? 'checkskip' : undefined);
    if (why) out.skipped.push({ test: t, reason: why });
    else candidates.push(t);
  }
  const built = await buildTests(s, candidates);
  for (const t of candidates) {
    if (built.has(t)) out.run.push({ test: t, desc: descs.get(t)! });
    else out.skipped.push({ test: t, reason: 'does not build here (a missing library)' });
  }
  return out;
}

/** A testbed of two hosts for the suite, torn down by `down` whatever happened. */
export async function zdtmTestbed(
  ferryArgv: string[],
  name = 'zdtm',
): Promise<{ clusterFile: string; down(): Promise<void> }> {
  const [cmd, ...pre] = ferryArgv;
  await run(cmd!, [...pre, 'testbed', 'down', '--name', name]).catch(() => {});
  const { stdout } = await run(
    cmd!,
    [
      ...pre,
      'testbed',
      'up',
      '--name',
      name,
      '--hosts',
      'a,b',
      '--bundle-policy',
      JSON.stringify(ZDTM_BUNDLE_POLICY),
      '--json',
    ],
    {
      timeout: 300_000,
    },
  );
  const clusterFile = (JSON.parse(stdout.trim().split('\n').pop()!) as { cluster: string }).cluster;
  return {
    clusterFile,
    down: async () => {
      await run(cmd!, [...pre, 'testbed', 'down', '--name', name], { timeout: 300_000 });
    },
  };
}

/** Runs the selected tests: control, then each strategy where the control passed. */
export async function runSuite(
  s: Suite,
  h: Harness,
  sel: Selection,
  strategies: string[],
  timeoutMs: number,
  log: (m: string) => void,
): Promise<ZdtmTestReport[]> {
  const reports: ZdtmTestReport[] = sel.skipped.map((k) => ({
    test: k.test,
    skipped: k.reason,
    migrations: {},
  }));
  let i = 0;
  for (const { test, desc } of sel.run) {
    i++;
    const limit = desc.timeout ? Math.max(timeoutMs, desc.timeout * 1000) : timeoutMs;
    const r: ZdtmTestReport = {
      test,
      control: await runTest(s, h, test, desc, undefined, limit),
      migrations: {},
    };
    if (r.control!.outcome === 'PASS')
      for (const st of strategies) r.migrations[st] = await runTest(s, h, test, desc, st, limit);
    reports.push(r);
    log(
      `zdtm ${i}/${sel.run.length} ${test}: control ${r.control!.outcome}${Object.entries(r.migrations)
        .map(([k, v]) => `, ${k} ${v.outcome}`)
        .join('')}`,
    );
  }
  return reports.sort((a, b) => a.test.localeCompare(b.test));
}

/** Columns padded to their widest cell. */
function table(rows: string[][]): string {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(w[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function cell(r: TestResult | undefined): string {
  return r ? r.outcome : '-';
}

function firstReason(r: ZdtmTestReport, strategies: string[]): string {
  if (r.skipped) return `skipped: ${r.skipped}`;
  if (r.control?.outcome !== 'PASS') return `control: ${r.control?.reason ?? r.control?.outcome}`;
  for (const st of strategies) {
    const m = r.migrations[st];
    if (m && m.outcome !== 'PASS') return `${st}: ${m.reason ?? m.outcome}`;
  }
  return '';
}

export function summary(reports: ZdtmTestReport[], strategies: string[]) {
  const ran = reports.filter((r) => r.control);
  const control = ran.filter((r) => r.control!.outcome === 'PASS').length;
  const count = (st: string, o: string) => ran.filter((r) => r.migrations[st]?.outcome === o).length;
  const per: Record<string, number> = {};
  const refused: Record<string, number> = {};
  for (const st of strategies) {
    per[st] = count(st, 'PASS');
    refused[st] = count(st, 'REFUSED');
  }
  return {
    tests: reports.length,
    skipped: reports.length - ran.length,
    ran: ran.length,
    control,
    per,
    refused,
  };
}

/** Strips what changes between runs (image directory names, paths of a testbed) from a reason. */
function stable(reason: string): string {
  return reason
    .replace(/ \(CRIU log: [^)]*\)/g, '')
    .replace(/; rolled back: .*$/, '')
    .replace(/\|/g, '\\|')
    .slice(0, 240);
}

const pct = (n: number, of: number) => (of ? `${((100 * n) / of).toFixed(1)} %` : '-');

export function conformanceMarkdown(
  reports: ZdtmTestReport[],
  strategies: string[],
  meta: { criu: string; kernel: string; date: string; dropUid: boolean },
): string {
  const s = summary(reports, strategies);
  const lines = [
    "# Conformance: CRIU's zdtm static tests in ferry containers",
    '',
    'Generated by `ferry bench zdtm` (bench/zdtm.ts) from its last full run; do not edit by hand.',
    '',
    `CRIU ${meta.criu} (the zdtm tests from its Debian source), kernel ${meta.kernel}, ${meta.date}.`,
    '',
    "Each test runs in a ferry container (`ferry run --bundle`, the host's /usr and /etc read-only) as zdtm's",
    "Makefile starts it, with zdtm's environment (TMPDIR; the unprivileged uid for tests without the `suid` flag",
    meta.dropUid
      ? 'as zdtm.py gives it).'
      : 'is not used here: this host lacks CAP_SYS_RESOURCE, without which CRIU cannot read the rlimits of a process of another uid, so every test runs as root).',
    "**control**: start, SIGTERM, the test's verdict, no migration. **cold / post-copy / pre-copy / auto**:",
    'start, `ferry migrate --to b --strategy S`, SIGTERM on the destination, the verdict. A migration runs only',
    'where the control passed. Skipped: what zdtm itself would not run in a default run here (`noauto`,',
    'namespace-only flavors, missing CRIU features, `checkskip`) and what does not build. The `crfail` tests',
    "(zdtm expects CRIU's dump to fail) run: ferry has to refuse them before the freeze or roll them back.",
    '',
    `Tests: ${s.tests}; run: ${s.ran}; control PASS: ${s.control}. After a migration, of the ${s.control} ` +
      'whose control passed: ' +
      strategies
        .map(
          (st) =>
            `${COLUMN[st] ?? st} PASS ${s.per[st]} (${pct(s.per[st]!, s.control)}), REFUSED ${s.refused[st]}`,
        )
        .join('; ') +
      '.',
    '',
    '**REFUSED**: ferry refused the migration before the freeze (`FERRY_E_CONTAINER_UNMOVABLE`, a process state',
    'CRIU cannot dump or restore, read from /proc), the container ran on untouched and the test still passed.',
    '',
    `| test | control | ${strategies.map((st) => COLUMN[st] ?? st).join(' | ')} | reason |`,
    `| --- | --- | ${strategies.map(() => '---').join(' | ')} | --- |`,
  ];
  for (const r of reports) {
    if (r.skipped) continue;
    lines.push(
      `| ${r.test} | ${cell(r.control)} | ${strategies.map((st) => cell(r.migrations[st])).join(' | ')} | ${stable(firstReason(r, strategies))} |`,
    );
  }
  lines.push('', '## Skipped', '', '| test | why |', '| --- | --- |');
  for (const r of reports) if (r.skipped) lines.push(`| ${r.test} | ${r.skipped} |`);
  return `${lines.join('\n')}\n`;
}

export async function zdtmBench(o: ZdtmBenchOptions): Promise<unknown> {
  const log = o.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  const strategies = o.strategies?.length ? o.strategies : ZDTM_STRATEGIES;
  const timeoutMs = o.timeoutMs ?? 90_000;
  const s = await ensureSuite();
  const sel = await selectTests(s, o.tests);
  log(`zdtm: ${sel.run.length} tests to run, ${sel.skipped.length} skipped`);
  const dropUid = await canDropUid();
  const workDir = '/var/cache/ferry/zdtm/work';
  await mkdir(workDir, { recursive: true });
  const tb = await zdtmTestbed(o.ferryArgv);
  let reports: ZdtmTestReport[];
  try {
    const h: Harness = {
      ferryArgv: o.ferryArgv,
      clusterFile: tb.clusterFile,
      workDir,
      from: 'a',
      to: 'b',
      dropUid,
    };
    reports = await runSuite(s, h, sel, strategies, timeoutMs, log);
  } finally {
    await tb.down();
  }
  const rows = [['test', 'control', ...strategies.map((st) => COLUMN[st] ?? st), 'reason']];
  for (const r of reports)
    if (!r.skipped)
      rows.push([
        r.test,
        cell(r.control),
        ...strategies.map((st) => cell(r.migrations[st])),
        stable(firstReason(r, strategies)).slice(0, 100),
      ]);
  const sum = summary(reports, strategies);
  if (!o.json) {
    process.stdout.write(`${table(rows)}\n`);
    process.stdout.write(
      `tests ${sum.tests}, skipped ${sum.skipped}, run ${sum.ran}, control PASS ${sum.control}, ${strategies
        .map((st) => `${st} PASS ${sum.per[st]} REFUSED ${sum.refused[st]}`)
        .join(', ')}\n`,
    );
  }
  if (!o.tests?.length) {
    const criu = (await run('criu', ['--version'])).stdout.match(/Version:\s*(\S+)/)?.[1] ?? '?';
    const kernel = (await run('uname', ['-r'])).stdout.trim();
    const md = conformanceMarkdown(reports, strategies, {
      criu,
      kernel,
      date: new Date().toISOString().slice(0, 10),
      dropUid,
    });
    await writeFile(o.docs ?? new URL('../docs/conformance.md', import.meta.url).pathname, md);
    log('zdtm: docs/conformance.md written');
  }
  return { summary: sum, reports };
}
