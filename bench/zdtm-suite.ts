// CRIU's zdtm static tests as a conformance suite: where the source is, which tests there are, what their
// `.desc` files ask for, building them and the command line zdtm's Makefile starts each with.
// The source is never vendored: `scripts/setup.sh zdtm` downloads it from Debian into a cache and prints
// the path of its test/zdtm directory.
import { execFile } from 'node:child_process';
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const REPO = new URL('..', import.meta.url).pathname;

/** What a test's `NAME.desc` says (a Python dict literal in CRIU's tree); absent keys are absent. */
export interface TestDesc {
  flags: string[];
  /** CRIU options for dump and restore (`opts`), dump only (`dopts`), restore only (`ropts`). */
  opts: string[];
  dopts: string[];
  ropts: string[];
  flavor: string[];
  feature: string[];
  arch?: string[];
  timeout?: number;
}

export interface Suite {
  /** test/zdtm of the unpacked CRIU source. */
  root: string;
  staticDir: string;
}

/** Downloads, unpacks and prepares the suite (idempotent: a no-op once done). */
export async function ensureSuite(): Promise<Suite> {
  const { stdout } = await run('bash', [join(REPO, 'scripts/setup.sh'), 'zdtm'], {
    maxBuffer: 16 << 20,
  });
  const root = stdout.trim().split('\n').pop() ?? '';
  if (!root) throw new Error('scripts/setup.sh zdtm printed no suite directory');
  return { root, staticDir: join(root, 'static') };
}

/** Every static test the Makefile knows (its TST variable), in zdtm's order (sorted by name). */
export async function listTests(s: Suite): Promise<string[]> {
  const { stdout } = await run('make', [
    '-s',
    '--no-print-directory',
    '-C',
    s.staticDir,
    '--eval',
    'ferry-print-tst: ; @echo $(TST)',
    'ferry-print-tst',
  ]);
  return stdout.trim().split(/\s+/).filter(Boolean).sort();
}

/** Parses a `.desc` file: a Python dict literal of strings and lists; quotes, comments, trailing commas normalised. */
export function parseDesc(text: string): TestDesc {
  // Python comments and booleans; the strings in these files hold no quote or '#'
  const t = text
    .replace(/#.*$/gm, '')
    .replace(/\bTrue\b/g, 'true')
    .replace(/\bFalse\b/g, 'false')
    .trim();
  // biome-ignore lint/suspicious/noExplicitAny: a parsed literal
  let raw: Record<string, any> = {};
  if (t) {
    const json = t.replace(/'/g, '"').replace(/,\s*([}\]])/g, '$1');
    try {
      raw = JSON.parse(json);
    } catch {
      // a desc that is Python code (mnt_ext_dev: an external device named by the environment) evaluates to
      // noauto when zdtm.py is given nothing: the same here
      raw = { flags: 'noauto' };
    }
  }
  const words = (v: unknown) => (typeof v === 'string' ? v.split(/\s+/).filter(Boolean) : []);
  return {
    flags: words(raw.flags),
    opts: words(raw.opts),
    dopts: words(raw.dopts),
    ropts: words(raw.ropts),
    flavor: raw.flavor === undefined ? ['h', 'ns', 'uns'] : words(raw.flavor),
    feature: words(raw.feature),
    ...(raw.arch !== undefined ? { arch: words(raw.arch) } : {}),
    ...(raw.timeout !== undefined ? { timeout: Number(raw.timeout) } : {}),
  };
}

export async function readDesc(s: Suite, test: string): Promise<TestDesc> {
  const text = await readFile(join(s.staticDir, `${test}.desc`), 'utf8').catch(() => '');
  return parseDesc(text);
}

/** CRIU options ferry passes on every migration; a test asking only for these needs nothing ferry lacks. */
export const FERRY_CRIU_OPTS = new Set([
  '--tcp-established',
  '--file-locks',
  '--link-remap',
  '--ext-unix-sk',
]);

/**
 * Why zdtm itself would not run this test in a default run on this host, or why it cannot run in a ferry
 * container; undefined when it should run. The order follows zdtm.py's own checks.
 */
export function skipReason(d: TestDesc, features: Map<string, boolean>): string | undefined {
  if (d.arch && !d.arch.includes(process.arch === 'x64' ? 'x86_64' : process.arch))
    return `arch ${d.arch.join(' ')}`;
  if (d.flags.includes('noauto')) return 'manual run only (noauto)';
  // crfail (zdtm expects CRIU's dump to fail) runs: ferry must refuse it before the freeze or roll it back
  // zdtm's host flavor runs the test binary as it is; the ns flavors need zdtm's own namespace launcher
  if (!d.flavor.includes('h')) return `flavor ${d.flavor.join(' ')} only (zdtm's own namespaces)`;
  for (const f of d.feature) if (features.get(f) === false) return `CRIU feature ${f} missing`;
  return undefined;
}

/** `criu check --feature F` for each feature the tests ask for (as zdtm.py does), cached per call. */
export async function checkFeatures(names: Iterable<string>): Promise<Map<string, boolean>> {
  const out = new Map<string, boolean>();
  for (const f of new Set(names)) {
    out.set(
      f,
      await run('criu', ['check', '--feature', f]).then(
        () => true,
        () => false,
      ),
    );
  }
  return out;
}

/** Runs `NAME.checkskip` where the test has one (exit status non-zero: skip), as zdtm.py does. */
export async function checkskip(s: Suite, test: string): Promise<boolean> {
  const p = join(s.staticDir, `${test}.checkskip`);
  if (
    !(await access(p).then(
      () => true,
      () => false,
    ))
  )
    return false;
  return run(p, [], { cwd: s.staticDir, timeout: 30_000 }).then(
    () => false,
    () => true,
  );
}

/** Builds the tests with zdtm's Makefile; make rebuilds nothing already built. Returns the ones that built. */
export async function buildTests(s: Suite, tests: string[], jobs = 2): Promise<Set<string>> {
  await run('make', ['-s', '-k', `-j${jobs}`, '--no-print-directory', '-C', s.staticDir, ...tests], {
    maxBuffer: 64 << 20,
  }).catch(() => {
    // -k: the ones that cannot build (a missing library) are reported as not built below
  });
  const built = new Set<string>();
  for (const t of tests)
    if (
      await access(join(s.staticDir, t)).then(
        () => true,
        () => false,
      )
    )
      built.add(t);
  return built;
}

/**
 * The command zdtm's Makefile starts the test with (`make NAME.pid`), e.g.
 * `./env00 --pidfile=env00.pid --outfile=env00.out --envname=ENV_00_TEST`, as argv.
 */
export async function startCommand(s: Suite, test: string): Promise<string[]> {
  const { stdout } = await run('make', [
    '-n',
    '-s',
    '--no-print-directory',
    '-C',
    s.staticDir,
    `${test}.pid`,
  ]);
  const line = stdout.split('\n').find((l) => l.startsWith(`./${test} `) || l === `./${test}`);
  if (!line) throw new Error(`make -n ${test}.pid printed no command for ${test}`);
  return line.trim().split(/\s+/);
}
