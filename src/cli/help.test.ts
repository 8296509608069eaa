// Every `ferry ... --help` against what the command does: the options it lists are the options commander
// registers and the options its action reads (typed below, so that tsc fails when an action's options change),
// and every default it states is the value the code uses.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Command } from 'commander';
import { DEFAULT_ARCHIVE_MIB, DEFAULT_RUNS, GROUPS, SUITES } from '../../bench/index.ts';
import { ZDTM_STRATEGIES } from '../../bench/zdtm.ts';
import { every } from '../../test/support/exhaustive.ts';
import { CHILDREN_AT_ONCE, eachLimited } from '../../test/support/pool.ts';
import { DEFAULT_DAYS } from '../api/certificates.ts';
import { CONTROLLER_DEFAULTS } from '../cluster/controller.ts';
import { DEFAULT_MAX_DOWNTIME_MS } from '../migration/defaults.ts';
import { DEFAULT_INTERVAL_MS, type ProbeSummary, probeOptions } from '../probe/cli.ts';
import { DEFAULT_REPLY_TIMEOUT_MS } from '../probe/session.ts';
import { DEFAULT_RUNC_ROOT } from '../remote/runc-root.ts';
import { TESTBED_NAME_RE } from '../testbed/layout.ts';
import type { checkpointCommand, inspectCommand, restoreCommand } from './archive-commands.ts';
import type { CaInitOptions, IssueCommandOptions } from './ca-commands.ts';
import type { checkCommand } from './check.ts';
import type { clusterCommand, drainCommand, rebalanceCommand } from './cluster-commands.ts';
import type { hostsCommand, psCommand, rmCommand, runCommand } from './commands.ts';
import type { dashboardCommand } from './dashboard-command.ts';
import type { InstallOptions } from './install.ts';
import {
  type AgentOptions,
  type BenchOptions,
  buildProgram,
  type DaemonOptions,
  type DemoOptions,
  positiveInt,
} from './main.ts';
import type { migrateCommand } from './migrate-command.ts';
import type { testbedAgentCommand, testbedDownCommand, testbedUpCommand } from './testbed-commands.ts';

const run = promisify(execFile);
const ferry = fileURLToPath(new URL('../../bin/ferry', import.meta.url));

/** Every key of an options type, checked by tsc. */
const keysOf = <T>() => every<keyof T & string>();

// The options each action reads, from the types of its parameters. `cluster` is the program's own option.
const READS: Record<string, readonly string[]> = {
  'testbed up': keysOf<Parameters<typeof testbedUpCommand>[0]>()(
    'hosts',
    'name',
    'rate',
    'controller',
    'default',
    'bundlePolicy',
    'ssh',
    'json',
  ),
  'testbed down': keysOf<Parameters<typeof testbedDownCommand>[0]>()('name', 'all', 'json'),
  'testbed agent': keysOf<Parameters<typeof testbedAgentCommand>[2]>()('name', 'json'),
  hosts: keysOf<Parameters<typeof hostsCommand>[0]>()('cluster', 'json'),
  run: keysOf<Parameters<typeof runCommand>[1]>()('cluster', 'json', 'host', 'name', 'bundle', 'net', 'ip'),
  ps: keysOf<Parameters<typeof psCommand>[0]>()('cluster', 'json', 'host'),
  rm: keysOf<Parameters<typeof rmCommand>[1]>()('cluster', 'json'),
  migrate: keysOf<Parameters<typeof migrateCommand>[1]>()(
    'cluster',
    'json',
    'to',
    'strategy',
    'compress',
    'streams',
    'maxDowntime',
    'threshold',
    'maxRounds',
    'skipInFlight',
    'events',
    'runcRoot',
    'sshConfig',
  ),
  check: keysOf<Parameters<typeof checkCommand>[0]>()('cluster', 'host', 'sshConfig', 'json'),
  checkpoint: keysOf<Parameters<typeof checkpointCommand>[1]>()(
    'cluster',
    'json',
    'host',
    'export',
    'leaveRunning',
    'compress',
  ),
  restore: keysOf<Parameters<typeof restoreCommand>[0]>()('cluster', 'json', 'import', 'host', 'name', 'ip'),
  inspect: keysOf<Parameters<typeof inspectCommand>[1]>()(
    'cluster',
    'json',
    'host',
    'psTree',
    'files',
    'sockets',
    'mounts',
  ),
  agent: keysOf<AgentOptions>()('config', 'stdin'),
  probe: keysOf<Parameters<typeof probeOptions>[2]>()('interval', 'duration', 'replyTimeout', 'json'),
  cluster: keysOf<Parameters<typeof clusterCommand>[0]>()('cluster', 'json'),
  rebalance: keysOf<Parameters<typeof rebalanceCommand>[0]>()('cluster', 'json', 'dryRun', 'target'),
  drain: keysOf<Parameters<typeof drainCommand>[1]>()('cluster', 'json'),
  dashboard: keysOf<Parameters<typeof dashboardCommand>[0]>()('cluster', 'json', 'open'),
  controller: keysOf<DaemonOptions>()('config'),
  bench: keysOf<BenchOptions>()('runs', 'json', 'strategies', 'tests', 'quick', 'big', 'size'),
  'ca init': keysOf<CaInitOptions>()('json'),
  'ca issue': keysOf<IssueCommandOptions>()('host', 'controller', 'user', 'address', 'dns', 'days', 'json'),
  'ca rotate': keysOf<IssueCommandOptions>()('host', 'controller', 'user', 'address', 'dns', 'days', 'json'),
  completion: [],
  install: keysOf<InstallOptions>()('agent', 'controller', 'root', 'json'),
  demo: keysOf<DemoOptions>()('dashboard', 'json'),
};

// Every default a help text states, keyed `command --flag`, with the value the code uses (read from where it
// lives). Commander's own `(default: "x")` is checked against the registered default separately.
const STATED_DEFAULTS: Record<string, string> = {
  // src/core/cluster-file.ts resolveClusterPath: --cluster, else $FERRY_CLUSTER, else the current testbed
  '--cluster':
    '$FERRY_CLUSTER or the default cluster, which the first testbed up sets and testbed up --default replaces',
  // src/cli/commands.ts runCommand: the controller's /v1/place when there is one, else the fewest containers
  'run --host':
    'where the controller places it, the up host with the most remaining capacity; without a controller, the reachable host with the fewest containers',
  'run --ip': 'the first free one',
  // src/cli/archive-commands.ts: hostOf (locate), pickHost (fewest containers), the staged archive's name and ip
  'checkpoint --host': 'the host the cluster finds it on',
  'restore --host': 'the reachable host with the fewest containers',
  'restore --name': "the archive's",
  'restore --ip': "the archive's, or the first free one when that is taken",
  'inspect --host': 'the reachable host with the fewest containers for a FILE, where the cluster finds NAME',
  'migrate --max-downtime': String(DEFAULT_MAX_DOWNTIME_MS),
  // the engine's pre-copy loops (source half): `req.thresholdBytes ?? rate * budget`, `req.maxRounds ?? 5`
  'migrate --threshold': 'what the measured link sends within --max-downtime',
  'migrate --max-rounds': '5',
  // src/remote/runc-root.ts: where plain `runc run` keeps its containers
  'migrate --runc-root': DEFAULT_RUNC_ROOT,
  // DEFAULT_STREAMS in the engine's source half (not exported): min(4, max(1, cores - 1)), 1 under zstd
  'migrate --streams': 'cores - 1, at most 4; 1 when zstd is on',
  'probe --duration': 'at Ctrl-C / SIGTERM',
  'probe --reply-timeout': String(DEFAULT_REPLY_TIMEOUT_MS),
  'rebalance --target': `the controller's targetPercent, ${CONTROLLER_DEFAULTS.targetPercent} unless configured`,
  'bench --runs': String(DEFAULT_RUNS),
  'bench --size': String(DEFAULT_ARCHIVE_MIB),
  // src/runtime/pki.ts DEFAULT_DAYS, what ClusterCA.issue uses without `days`
  'ca issue --days': `${DEFAULT_DAYS.agent} for agents and the controller, ${DEFAULT_DAYS.client} for users`,
  'ca rotate --days': `${DEFAULT_DAYS.agent} for agents and the controller, ${DEFAULT_DAYS.client} for users`,
  'bench --strategies': ZDTM_STRATEGIES.join(','),
  // bench/zdtm.ts selectTests: no list means every test zdtm's own default run would pick on this host
  'bench --tests': 'every test zdtm itself would run here',
};

// Defaults commander supplies that the code also assumes on its own (an action's fallback, a parser's default).
const CODE_DEFAULTS: Record<string, unknown> = {
  'probe --interval': String(DEFAULT_INTERVAL_MS),
  'migrate --strategy': 'auto',
  'checkpoint --compress': 'zstd',
  'testbed down --name': 'tb',
  'testbed agent --name': 'tb',
};

interface HelpOption {
  flag: string;
  text: string;
}

/** The options a help text lists: `  -x, --flag <arg>  description` with the description's wrapped lines. */
function parseHelp(help: string): HelpOption[] {
  const out: HelpOption[] = [];
  let section = '';
  for (const line of help.split('\n')) {
    if (/^\S.*:$/.test(line)) {
      section = line;
      continue;
    }
    if (!/Options:$/.test(section)) continue;
    const m = /^ {2}(?:-\w, )?(--[a-z][a-z-]*)(?: [<[][^>\]]+[>\]])?\s*(.*)$/.exec(line);
    if (m) out.push({ flag: m[1]!, text: m[2]! });
    else if (/^ {3,}\S/.test(line) && out.length) out[out.length - 1]!.text += ` ${line.trim()}`;
  }
  return out;
}

/** Defaults stated in a description by hand: `(default: X)` or `default: X)` after other parentheticals. */
function statedDefault(text: string): string | undefined {
  const noCommander = text.replace(/\((?:choices: [^)]*?, )?default: "[^"]*"\)/, '');
  const m = /\(([^()]*; )?default: ((?:[^()]|\([^()]*\))*)\)/.exec(noCommander);
  return m?.[2];
}

function commandsOf(cmd: Command, path: string[] = []): { path: string[]; cmd: Command }[] {
  return cmd.commands.flatMap((c) => {
    const p = [...path, c.name()];
    return c.commands.length ? commandsOf(c, p) : [{ path: p, cmd: c }];
  });
}

const program = buildProgram();
const commands = commandsOf(program);

// `ferry ... --help` of the program and of every command, run as a user runs it (bin/ferry), a few at a time from
// the first test on: one after the other, these starts of Node took most of this file's time
let helpTexts: Map<string, Promise<string>> | undefined;
function help(path: string[]): Promise<string> {
  if (!helpTexts) {
    const paths = [[], ...commands.map((c) => c.path)];
    const texts = eachLimited(paths, CHILDREN_AT_ONCE, async (p) => {
      const { stdout } = await run(ferry, [...p, '--help'], { timeout: 30_000 });
      return stdout;
    });
    helpTexts = new Map(paths.map((p, i) => [p.join(' '), texts[i]!]));
  }
  return helpTexts.get(path.join(' '))!;
}

describe('ferry --help', () => {
  it('covers every command (and nothing the table does not know)', () => {
    assert.deepEqual(commands.map((c) => c.path.join(' ')).sort(), Object.keys(READS).sort());
  });

  it('lists the options of the program that every command inherits', async () => {
    const listed = parseHelp(await help([]));
    assert.deepEqual(
      listed.map((o) => o.flag).filter((f) => f !== '--help'),
      program.options.map((o) => o.long),
    );
    assert.equal(
      statedDefault(listed.find((o) => o.flag === '--cluster')!.text),
      STATED_DEFAULTS['--cluster'],
    );
  });

  const globals = new Set(program.options.map((o) => o.attributeName()));
  const seen = new Set<string>(['--cluster']);
  for (const { path, cmd } of commands) {
    const name = path.join(' ');
    it(`${name}: the options listed are the options registered and read, with the defaults the code uses`, async () => {
      const listed = parseHelp(await help(path));
      const flags = listed.map((o) => o.flag).filter((f) => f !== '--help');
      const registered = cmd.options.map((o) => o.long!);
      assert.deepEqual([...flags].sort(), [...registered].sort(), 'help vs registered options');
      const reads = READS[name]!.filter((k) => !globals.has(k));
      assert.deepEqual(
        cmd.options.map((o) => o.attributeName()).sort(),
        [...reads].sort(),
        'registered options vs the options the action reads',
      );
      for (const o of listed) {
        const key = `${name} ${o.flag}`;
        const opt = cmd.options.find((x) => x.long === o.flag);
        if (opt?.defaultValue !== undefined) {
          assert.match(o.text, new RegExp(`default: ${JSON.stringify(String(opt.defaultValue))}`), key);
          if (key in CODE_DEFAULTS) assert.equal(opt.defaultValue, CODE_DEFAULTS[key], key);
        }
        const stated = statedDefault(o.text);
        if (stated !== undefined || key in STATED_DEFAULTS) {
          assert.equal(stated, STATED_DEFAULTS[key], `${key}: stated default`);
          seen.add(key);
        }
        // defaults belong in `(default: ...)`, where this test reads them, not loose in the prose
        assert.doesNotMatch(
          o.text.replace(/\([^()]*default: [^()]*(\([^()]*\)[^()]*)*\)/g, ''),
          /default/,
          key,
        );
      }
    });
  }

  it('knows no default that the help no longer states (run after the commands above)', () => {
    assert.deepEqual([...seen].sort(), Object.keys(STATED_DEFAULTS).sort());
    for (const key of Object.keys(CODE_DEFAULTS)) {
      const flag = key.slice(key.lastIndexOf(' ') + 1);
      const c = commands.find((x) => `${x.path.join(' ')} ${flag}` === key);
      assert.notEqual(c?.cmd.options.find((o) => o.long === flag)?.defaultValue, undefined, key);
    }
  });
});

describe('help texts against behaviour', () => {
  it('bench names every suite it has', () => {
    const arg = program.commands.find((c) => c.name() === 'bench')!.registeredArguments[0]!;
    assert.deepEqual(
      arg.description.split(' | ').sort(),
      [...Object.keys(SUITES), ...Object.keys(GROUPS)].sort(),
    );
  });

  it('probe --json names the fields it prints', () => {
    const fields = every<keyof ProbeSummary & string>()(
      'ok',
      'replies',
      'errors',
      'resets',
      'lost',
      'maxGapMs',
      'p99GapMs',
      'gaps',
      'serverValues',
      'errorsDetail',
    );
    const probe = program.commands.find((c) => c.name() === 'probe')!;
    const text = probe.options.find((o) => o.long === '--json')!.description;
    const listed = /\{([^}]*)\}/
      .exec(text)![1]!
      .split(', ')
      .map((f) => f.replace(/\?$/, ''));
    assert.deepEqual([...listed].sort(), [...fields].sort());
  });

  it('testbed --name states the rule the testbed applies', () => {
    assert.equal(TESTBED_NAME_RE.source, '^[a-z0-9]{1,6}$');
    const up = program.commands.find((c) => c.name() === 'testbed')!.commands.find((c) => c.name() === 'up')!;
    assert.match(up.options.find((o) => o.long === '--name')!.description, /1-6 of \[a-z0-9\]/);
  });

  it('probe --interval and --reply-timeout take the ranges the help states', () => {
    assert.throws(() => probeOptions('tcp', '10.0.0.2:7000', { interval: '0' }), /1\.\.1000/);
    assert.throws(() => probeOptions('tcp', '10.0.0.2:7000', { interval: '1001' }), /1\.\.1000/);
    assert.equal(probeOptions('tcp', '10.0.0.2:7000', { interval: '1000' }).intervalMs, 1000);
    assert.equal(probeOptions('tcp', '10.0.0.2:7000', {}).intervalMs, DEFAULT_INTERVAL_MS);
    assert.throws(() => probeOptions('tcp', '10.0.0.2:7000', { replyTimeout: '9' }), /10\.\.3600000/);
    assert.equal(probeOptions('tcp', '10.0.0.2:7000', { replyTimeout: '3600000' }).replyTimeoutMs, 3_600_000);
  });
});

describe('positiveInt', () => {
  it('takes whole numbers of 1 or more', () => {
    assert.equal(positiveInt('1', '--runs'), 1);
    assert.equal(positiveInt('500', '--max-downtime'), 500);
  });

  it('refuses 0, negatives, fractions and words with a clear error', () => {
    for (const v of ['0', '-1', '1.5', '1e3', 'ten', '']) {
      assert.throws(
        () => positiveInt(v, '--streams'),
        (e: Error & { code?: string }) =>
          e.code === 'FERRY_E_INPUT_ARGS' &&
          e.message === `--streams takes a whole number of 1 or more, not ${v}`,
        v,
      );
    }
  });

  it('stops the command line before anything is touched', async () => {
    const r = await run(
      ferry,
      ['migrate', 'c1', '--to', 'b', '--max-downtime', '0', '--cluster', '/nonexistent'],
      {
        timeout: 30_000,
      },
    ).catch((e: { code: number; stderr: string }) => e);
    assert.equal((r as { code: number }).code, 2);
    assert.match(r.stderr, /FERRY_E_INPUT_ARGS: --max-downtime takes a whole number of 1 or more, not 0/);
  });
});
