// `ferry bench zdtm`: CRIU's zdtm static tests as ferry's conformance suite. Each test runs in a ferry
// container under zdtm's protocol: a control run (start, SIGTERM, PASS/FAIL, no migration), then, when the
// control passes, one run per strategy with a migration a -> b between start and SIGTERM.
// A full run (no test list) rewrites docs/conformance.md; a run of some tests with every strategy replaces their
// rows in it (bench/zdtm-doc.ts).
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import {
  COLUMN,
  type Doc,
  mergeRun,
  parseConformance,
  renderConformance,
  rowsOf,
  summary,
  type ZdtmTestReport,
} from './zdtm-doc.ts';
import { canDropUid, type Harness, runTest, ZDTM_BUNDLE_POLICY } from './zdtm-run.ts';
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

const exec = promisify(execFile);

export const ZDTM_STRATEGIES = ['cold', 'postcopy', 'precopy', 'auto'];

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
  await exec(cmd!, [...pre, 'testbed', 'down', '--name', name]).catch(() => {});
  const { stdout } = await exec(
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
      await exec(cmd!, [...pre, 'testbed', 'down', '--name', name], { timeout: 300_000 });
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
  const date = new Date().toISOString().slice(0, 10);
  const fresh = rowsOf(reports, strategies, date);
  const rows = [['test', 'control', ...strategies.map((st) => COLUMN[st] ?? st), 'reason']];
  for (const r of fresh.rows)
    rows.push([r.test, r.control, ...strategies.map((st) => r.cells[st] ?? '-'), r.reason.slice(0, 100)]);
  const sum = summary(fresh.rows, strategies, fresh.skipped.length);
  if (!o.json) {
    process.stdout.write(`${table(rows)}\n`);
    process.stdout.write(
      `tests ${sum.tests}, skipped ${sum.skipped}, run ${sum.ran}, control PASS ${sum.control}, ${strategies
        .map(
          (st) =>
            `${st} ${Object.entries(sum.per[st]!)
              .filter(([, n]) => n > 0)
              .map(([k, n]) => `${k} ${n}`)
              .join(' ')}`,
        )
        .join(', ')}\n`,
    );
  }
  await writeDoc(o, s, strategies, fresh, { dropUid, date }, log);
  return { summary: sum, reports };
}

/**
 * docs/conformance.md: a run of every test rewrites it; a run of some tests with every strategy replaces their
 * rows only (the rest keep the run they come from); a run with fewer strategies leaves it alone (its rows would
 * lack columns).
 */
async function writeDoc(
  o: ZdtmBenchOptions,
  s: Suite,
  strategies: string[],
  fresh: ReturnType<typeof rowsOf>,
  run: { dropUid: boolean; date: string },
  log: (m: string) => void,
): Promise<void> {
  const path = o.docs ?? new URL('../docs/conformance.md', import.meta.url).pathname;
  const every = ZDTM_STRATEGIES.every((st) => strategies.includes(st));
  if (!every) return;
  const criu = (await exec('criu', ['--version'])).stdout.match(/Version:\s*(\S+)/)?.[1] ?? '?';
  const kernel = (await exec('uname', ['-r'])).stdout.trim();
  const meta = { criu, kernel, dropUid: run.dropUid };
  let doc: Doc;
  if (!o.tests?.length) doc = { ...meta, fullRun: run.date, ...fresh };
  else {
    const old = parseConformance(await readFile(path, 'utf8').catch(() => ''), ZDTM_STRATEGIES);
    if (!old) {
      log(`zdtm: ${path} is not a table this bench wrote; a partial run does not replace it`);
      return;
    }
    doc = mergeRun(old, fresh, meta);
  }
  // zdtm's crfail flag, read again for every row (a partial run's doc holds rows of earlier runs)
  const crfail: string[] = [];
  for (const r of doc.rows)
    if (r.control === 'PASS' && (await readDesc(s, r.test)).flags.includes('crfail')) crfail.push(r.test);
  doc = { ...doc, crfail };
  await writeFile(path, renderConformance(doc, ZDTM_STRATEGIES));
  log(
    `zdtm: ${path} ${o.tests?.length ? `updated (${fresh.rows.length + fresh.skipped.length} rows)` : 'written'}`,
  );
}
