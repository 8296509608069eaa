// What scripts rely on, run as a user runs it (bin/ferry): --version, one-line usage errors with exit status 2 (JSON
// under --json), the exit status of each outcome, and completion scripts loaded into the real shells. The
// statuses 1 and 3 from real migrations are in test/integration/rollback.test.ts and strategies.test.ts.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CHILDREN_AT_ONCE, eachLimited } from '../../test/support/pool.ts';
import { ERRORS, type ErrorCode, FerryError } from '../core/errors.ts';
import { VERSION } from '../core/version.ts';
import { completionScript } from './completion.ts';
import { EXIT, exitStatusOfError, exitStatusOfReport, inDoubt } from './exit-status.ts';
import { buildProgram } from './main.ts';

const ferry = fileURLToPath(new URL('../../bin/ferry', import.meta.url));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(ferry, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: unknown }).code as number) : 0;
      resolve({ code: typeof code === 'number' ? code : -1, stdout, stderr });
    });
  });
}

describe('ferry --version', () => {
  it('prints the version of package.json and exits 0', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    assert.equal(VERSION, pkg.version);
    const r = await run(['--version']);
    assert.equal(r.code, 0);
    assert.match(r.stdout.trim(), new RegExp(`^ferry ${VERSION.replace(/\./g, '\\.')} \\(commit `));
  });
});

describe('usage errors', () => {
  // nothing here may reach a host: a cluster file that does not exist makes sure of it
  // `json`: the command has --json (a group without its command, and completion, have none)
  const cases: { args: string[]; message: RegExp; help: string; json?: false }[] = [
    { args: [], message: /ferry needs a command/, help: 'ferry --help', json: false },
    { args: ['ca'], message: /ferry ca needs a command/, help: 'ferry ca --help', json: false },
    { args: ['nosuch'], message: /unknown command 'nosuch'/, help: 'ferry --help' },
    {
      args: ['migrate', 'web'],
      message: /required option '--to <host>' not specified/,
      help: 'ferry migrate --help',
    },
    {
      args: ['migrate', 'web', '--to', 'b', '--bogus'],
      message: /unknown option '--bogus'/,
      help: 'ferry migrate --help',
    },
    {
      args: ['migrate', 'web', '--to', 'b', '--strategy', 'teleport'],
      message: /argument 'teleport' is invalid/,
      help: 'ferry migrate --help',
    },
    {
      args: ['ca', 'issue', 'dir', '--days', '0'],
      message: /--days takes a whole number of 1 or more, not 0/,
      help: '',
    },
    { args: ['migrate', 'we/b', '--to', 'b'], message: /invalid container name "we\/b"/, help: '' },
    { args: ['completion', 'tcsh'], message: /no completion for shell tcsh/, help: '', json: false },
  ];
  // every command line of the cases (and with --json), a few at a time from the first case on: each is a Node of
  // its own, and one after the other their starts took most of this file's time
  const argsOf = (c: (typeof cases)[number]) => [...c.args, '--cluster', '/nonexistent/ferry-cluster.json'];
  const commandLines = cases.flatMap((c) =>
    c.json === false ? [argsOf(c)] : [argsOf(c), [...argsOf(c), '--json']],
  );
  let runs: Map<string, Promise<Awaited<ReturnType<typeof run>>>> | undefined;
  const ran = (args: string[]) => {
    if (!runs) {
      const all = eachLimited(commandLines, CHILDREN_AT_ONCE, run);
      runs = new Map(commandLines.map((l, i) => [JSON.stringify(l), all[i]!]));
    }
    return runs.get(JSON.stringify(args))!;
  };
  for (const c of cases) {
    it(`ferry ${c.args.join(' ')}: one line, exit status 2${c.json === false ? '' : '; under --json one object on stdout'}`, async () => {
      const args = argsOf(c);
      const r = await ran(args);
      assert.equal(r.code, EXIT.usage, r.stderr);
      assert.equal(r.stdout, '');
      const lines = r.stderr.split('\n').filter(Boolean);
      assert.equal(lines.length, 1, `one line, not the help:\n${r.stderr}`);
      assert.match(lines[0]!, /^ferry: FERRY_E_INPUT_(ARGS|NAME): /);
      assert.match(lines[0]!, c.message);
      if (c.help) assert.ok(lines[0]!.endsWith(`(hint: see ${c.help})`), lines[0]);
      if (c.json === false) return;
      const j = await ran([...args, '--json']);
      assert.equal(j.code, EXIT.usage);
      const out = JSON.parse(j.stdout) as {
        ok: boolean;
        error: { code: string; message: string; phase: string };
      };
      assert.equal(out.ok, false);
      assert.match(out.error.code, /^FERRY_E_INPUT_(ARGS|NAME)$/);
      assert.match(out.error.message, c.message);
      assert.equal(out.error.phase, 'input');
    });
  }

  it('--help lists the exit statuses; migrate --help too', async () => {
    const [top, mig] = await Promise.all([run(['--help']), run(['migrate', '--help'])]);
    assert.equal(top.code, 0);
    for (const n of [0, 1, 2, 3]) assert.match(top.stdout, new RegExp(`^ {2}${n} {2}\\S`, 'm'));
    assert.match(mig.stdout, /^ {2}1 {2}failed and rolled back: the container runs on the source/m);
    assert.match(mig.stdout, /^ {2}3 {2}the container is lost or in doubt/m);
  });
});

describe('exit statuses', () => {
  const report = { ok: false, rollback: { sourceRunning: true, destinationCleaned: true } };
  it('a migration: 0 done, 1 rolled back or untouched, 3 lost or in doubt', () => {
    assert.equal(exitStatusOfReport({ ok: true }), 0);
    assert.equal(
      exitStatusOfReport({
        ...report,
        error: { code: 'FERRY_E_RESTORE_FAILED', message: 'x', phase: 'restore' },
      }),
      1,
    );
    assert.equal(
      exitStatusOfReport({ ok: false, error: { code: 'FERRY_E_PLAN_STRATEGY', message: 'x' } }),
      1,
    );
    assert.equal(
      exitStatusOfReport({ ok: false, error: { code: 'FERRY_E_POSTCOPY_FAILED', message: 'x' } }),
      3,
    );
    assert.equal(
      exitStatusOfReport({
        ok: false,
        rollback: { sourceRunning: false, destinationCleaned: true, action: 'in-doubt' },
        error: { code: 'FERRY_E_ROLLBACK_FAILED', message: 'IN DOUBT' },
      }),
      3,
    );
    // whatever the code, a source that does not run again is a lost container
    assert.equal(
      exitStatusOfReport({
        ok: false,
        rollback: { sourceRunning: false, destinationCleaned: false },
        error: { code: 'FERRY_E_TRANSFER_FAILED', message: 'x' },
      }),
      3,
    );
  });
  it('docs/errors.md lists the codes of each status as the CLI maps them', () => {
    const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
    const section = doc.slice(doc.indexOf('## Exit status'), doc.indexOf('## Codes'));
    const rows = new Map(
      [...section.matchAll(/^\| (\d) \| (.*) \| (.*) \|$/gm)].map((m) => [
        Number(m[1]),
        [...m[3]!.matchAll(/`(FERRY_E_[A-Z_]+)`/g)].map((c) => c[1]!),
      ]),
    );
    assert.deepEqual([...rows.keys()], [0, 1, 2, 3]);
    for (const code of Object.keys(ERRORS) as ErrorCode[]) {
      const listed = rows.get(2)!.includes(code) ? 2 : rows.get(3)!.includes(code) ? 3 : 1;
      assert.equal(exitStatusOfError({ code }), listed, code);
    }
  });

  it('other errors: 2 for the command line, 3 for a lost container, else 1', () => {
    assert.equal(exitStatusOfError(new FerryError('FERRY_E_INPUT_ARGS', 'x')), 2);
    assert.equal(exitStatusOfError(new FerryError('FERRY_E_INPUT_NAME', 'x')), 2);
    assert.equal(exitStatusOfError(new FerryError('FERRY_E_ROLLBACK_FAILED', 'x')), 3);
    assert.equal(exitStatusOfError(new FerryError('FERRY_E_HOST_UNREACHABLE', 'x')), 1);
    assert.equal(exitStatusOfError(new FerryError('FERRY_E_INPUT_REQUEST', 'x')), 1);
    // a migrate that lost its source agent after the migration started and could not ask again: in doubt
    const lostLink = inDoubt(new FerryError('FERRY_E_HOST_UNREACHABLE', 'lost the link to source host a'));
    assert.equal(lostLink.code, 'FERRY_E_HOST_UNREACHABLE');
    assert.match(lostLink.message, /IN DOUBT/);
    assert.equal(exitStatusOfError(lostLink), 3);
  });
});

describe('ferry completion', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-completion-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const program = buildProgram();
  const script = (shell: string) => {
    const file = join(dir, `ferry.${shell}`);
    writeFileSync(file, completionScript(program, shell));
    return file;
  };

  it('prints the script on stdout', async () => {
    const r = await run(['completion', 'bash']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, completionScript(program, 'bash'));
  });

  /** What bash completes for the words typed so far (the last one is the word being completed). */
  const bashComplete = (file: string, words: string[]) =>
    execFileSync(
      'bash',
      [
        '-c',
        `source "$0"; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _ferry; printf '%s\\n' "\${COMPREPLY[@]}"`,
        file,
        'ferry',
        ...words,
      ],
      { encoding: 'utf8', cwd: dir },
    )
      .split('\n')
      .filter(Boolean)
      .sort();

  it('bash: commands, subcommands, options and their choices', () => {
    const file = script('bash');
    assert.deepEqual(bashComplete(file, ['mig']), ['migrate']);
    assert.deepEqual(bashComplete(file, ['ca', '']), ['init', 'issue', 'rotate']);
    assert.deepEqual(bashComplete(file, ['migrate', 'web', '--st']), ['--strategy', '--streams']);
    assert.deepEqual(bashComplete(file, ['migrate', 'web', '--strategy', 'p']), ['postcopy', 'precopy']);
    assert.deepEqual(bashComplete(file, ['--cluster', 'x', 'migrate', 'web', '--compress', '']), [
      'auto',
      'off',
      'on',
    ]);
    assert.deepEqual(bashComplete(file, ['completion', '--j']), []);
    assert.deepEqual(bashComplete(file, ['ca', 'issue', '--ho']), ['--host']);
  });

  const has = (shell: string) => {
    try {
      execFileSync('sh', ['-c', `command -v ${shell}`]);
      return true;
    } catch {
      return false;
    }
  };

  it('zsh: the script parses and registers _ferry for ferry', (t) => {
    if (!has('zsh')) {
      if (process.env['CI']) assert.fail('zsh missing on CI (make setup installs it)');
      return t.skip('needs zsh (make setup installs it)');
    }
    const file = script('zsh');
    execFileSync('zsh', ['-n', file]);
    const out = execFileSync(
      'zsh',
      [
        '-f',
        '-c',
        'autoload -U compinit && compinit -u -D && source "$1" && print -r -- $_comps[ferry]',
        'zsh',
        file,
      ],
      { encoding: 'utf8', cwd: dir },
    );
    assert.equal(out.trim(), '_ferry');
  });

  it('fish: completes commands, options and choices', (t) => {
    if (!has('fish')) {
      if (process.env['CI']) assert.fail('fish missing on CI (make setup installs it)');
      return t.skip('needs fish (make setup installs it)');
    }
    const file = script('fish');
    execFileSync('fish', ['-n', file]);
    const complete = (line: string) =>
      execFileSync('fish', ['--no-config', '-c', `source ${file}; complete -C ${JSON.stringify(line)}`], {
        encoding: 'utf8',
        cwd: dir,
      })
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split('\t')[0]!)
        .sort();
    assert.deepEqual(complete('ferry mig'), ['migrate']);
    assert.deepEqual(complete('ferry ca '), ['init', 'issue', 'rotate']);
    assert.deepEqual(complete('ferry migrate web --strategy p'), ['postcopy', 'precopy']);
    assert.deepEqual(complete('ferry migrate web --st'), ['--strategy', '--streams']);
  });
});
