// ferry's single executable (scripts/dist.sh) for the integration tests that need it: agentless.test.ts copies it
// to ssh hosts, dist.test.ts runs it where there is no node. A build takes several seconds of both cores, so the
// test files of a run share one: it is kept in the system's temporary directory under a name made of a hash of
// what the build reads (the sources, the build script, the lock file, Node's version and the commit it names), and
// built again only when that changes. Builds of other sources unused for an hour are removed when one is made.
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const PREFIX = 'ferry-test-exe-';
const EXE = 'ferry-linux-x64';
const UNUSED_MS = 3600_000;
const run = promisify(execFile);

function filesUnder(dir: string): string[] {
  return readdirSync(join(REPO, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(REPO.length));
}

/** A hash of everything the build reads that a checkout changes. */
function sourcesHash(): string {
  const h = createHash('sha256');
  h.update(`${process.version}\n`);
  // the executable prints the commit it was built from
  h.update(execFileSync('git', ['rev-parse', 'HEAD'], { cwd: REPO, encoding: 'utf8' }));
  const files = [
    'package.json',
    'package-lock.json',
    'scripts/dist.sh',
    ...filesUnder('scripts/dist'),
    ...filesUnder('src'),
  ].sort();
  for (const f of files) {
    h.update(`${f}\0`);
    h.update(readFileSync(join(REPO, f)));
  }
  return h.digest('hex').slice(0, 16);
}

/** Removes the builds (and interrupted builds) of this cache that no run has used for an hour. */
function prune(keep: string): void {
  for (const name of readdirSync(tmpdir())) {
    const path = join(tmpdir(), name);
    if (!name.startsWith(PREFIX) || path === keep) continue;
    try {
      if (Date.now() - statSync(path).mtimeMs > UNUSED_MS) rmSync(path, { recursive: true, force: true });
    } catch {
      // removed meanwhile
    }
  }
}

/** The path of the single executable of these sources, built now unless a test file of this run built it. */
export async function singleExecutable(): Promise<string> {
  const dir = join(tmpdir(), `${PREFIX}${sourcesHash()}`);
  const exe = join(dir, EXE);
  if (existsSync(exe)) {
    const now = new Date();
    utimesSync(dir, now, now);
    return exe;
  }
  const building = mkdtempSync(join(tmpdir(), `${PREFIX}build-`));
  try {
    await run('bash', [join(REPO, 'scripts/dist.sh'), join(building, EXE)], { cwd: REPO, timeout: 300_000 });
    rmSync(join(building, `${EXE}.build`), { recursive: true, force: true });
    try {
      renameSync(building, dir);
    } catch {
      // another run built the same sources meanwhile: its copy stays
    }
  } finally {
    rmSync(building, { recursive: true, force: true });
  }
  prune(dir);
  return exe;
}
