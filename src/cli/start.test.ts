// What a start of the CLI loads. main.ts imports a command's module only when that command runs, so that the many
// short starts scripts make (`ferry --version`, `ferry ps`) do not load the engine, the agent, the testbed and their
// libraries: about 530 modules, most of a start's time. Each case runs the CLI with a hook that logs every module.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CHILDREN_AT_ONCE, eachLimited } from '../../test/support/pool.ts';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const ferry = join(repo, 'bin/ferry');
const hook = join(repo, 'test/support/module-log.ts');
const dir = mkdtempSync(join(tmpdir(), 'ferry-start-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `ferry ARGS` as a user does (bin/ferry; any exit status) and returns ferry's files and the packages it loaded. */
async function loaded(args: string[]): Promise<{ files: string[]; packages: string[] }> {
  const log = join(dir, args.join('_').replace(/\//g, '_'));
  await new Promise<void>((resolve) => {
    execFile(
      ferry,
      args,
      {
        timeout: 30_000,
        env: { ...process.env, NODE_OPTIONS: `--import=${JSON.stringify(hook)}`, FERRY_MODULE_LOG: log },
      },
      () => resolve(),
    );
  });
  const paths = readFileSync(log, 'utf8')
    .split('\n')
    .filter((u) => u.startsWith('file:'))
    .map((u) => fileURLToPath(u));
  const pkg = (p: string) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(p)?.[1];
  return {
    files: paths.filter((p) => !pkg(p)).map((p) => relative(repo, p)),
    packages: [...new Set(paths.map(pkg).filter((p) => p !== undefined))],
  };
}

// what parsing the command line, --help and --version, and printing an error take
const START = [
  'src/api/outcome.ts',
  'src/cli/build-info.ts',
  'src/cli/completion.ts',
  'src/cli/exit-status.ts',
  'src/cli/main.ts',
  'src/cli/usage.ts',
  'src/core/errors.ts',
];

// the engine, the daemons, the testbed and the layers below the API that only they use
const HEAVY_FOLDERS = /^src\/(agent|cluster|migration|host|testbed|transport|network|images|archive)\//;
const HEAVY_PACKAGES = [
  'fastify',
  'pino',
  '@bufbuild/protobuf',
  'etcd3',
  'esbuild',
  'prom-client',
  'tar-stream',
];

const LIGHT = [['--version'], ['--help'], ['migrate', '--help'], ['migrate', 'c1', '--max-rounds', '0']];
const COMMANDS = [
  ['ps', '--cluster', '/nonexistent/cluster.json'],
  ['hosts', '--cluster', '/nonexistent/cluster.json'],
  ['migrate', 'c1', '--to', 'b', '--cluster', '/nonexistent/cluster.json'],
];
// every start a few at a time, from the first test on: one after the other, the file would mostly wait
let starts: Map<string, Promise<{ files: string[]; packages: string[] }>> | undefined;
function start(args: string[]): Promise<{ files: string[]; packages: string[] }> {
  if (!starts) {
    const all = [...LIGHT, ...COMMANDS];
    const results = eachLimited(all, CHILDREN_AT_ONCE, loaded);
    starts = new Map(all.map((a, i) => [a.join(' '), results[i]!]));
  }
  return starts.get(args.join(' '))!;
}

describe('a start of the CLI loads only what its command needs', () => {
  for (const args of LIGHT) {
    it(`ferry ${args.join(' ')}: the command line and nothing of any command`, async () => {
      const { files, packages } = await start(args);
      assert.deepEqual(
        files.sort(),
        START,
        'a module main.ts now imports at every start belongs in its action',
      );
      assert.deepEqual(packages, ['commander']);
    });
  }

  for (const args of COMMANDS) {
    it(`ferry ${args.join(' ')}: its command and the API client, no engine, daemon or testbed`, async () => {
      const { files, packages } = await start(args);
      const command = args[0] === 'migrate' ? 'src/cli/migrate-command.ts' : 'src/cli/commands.ts';
      assert.ok(files.includes(command), `${command} is loaded`);
      const why = 'an import that only some paths of the command need belongs where they need it';
      assert.deepEqual(
        files.filter((f) => HEAVY_FOLDERS.test(f)),
        [],
        why,
      );
      assert.deepEqual(
        packages.filter((p) => HEAVY_PACKAGES.includes(p)),
        [],
        why,
      );
    });
  }
});
