// ferry <command>: parses, calls the agents (or the testbed), prints for humans or --json for scripts.
// Over 400 lines because it is the one table of every command, its options and help texts (what the help test
// holds to the code); each action only parses and hands over to the command's own module.
//
// A command's module is imported when that command runs, never here: scripts start ferry many times, and a static
// import of every command would load the engine, the agent, the testbed and their libraries (about 530 modules)
// for each `ferry --version` or `ferry ps`. So this file imports only what parsing and printing errors need, and
// states its defaults as literals, as it does for every other default: help.test.ts holds each one to the value
// the code uses. start.test.ts checks what a start loads.
import { realpathSync } from 'node:fs';
import { isSea } from 'node:sea';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import { asFerryError, FerryError } from '../core/errors.ts';
import type { ProbeCliOptions } from '../probe/cli.ts';
import { versionLine } from './build-info.ts';
import type { CaInitOptions, IssueCommandOptions } from './ca-commands.ts';
import { completionScript, SHELLS } from './completion.ts';
import { EXIT_STATUS_HELP, exitStatusOfError, MIGRATE_EXIT_STATUS_HELP } from './exit-status.ts';
import type { InstallOptions } from './install.ts';
import { commandPath, usageError } from './usage.ts';

/**
 * How to start this CLI again (agents are started by the testbed with the same node and flags). The single
 * executable is Node and ferry in one file: its own path is the whole command.
 */
export function ferryArgv(): string[] {
  if (isSea()) return [process.execPath];
  const main = realpathSync(fileURLToPath(import.meta.url));
  return [process.execPath, ...process.execArgv, main];
}

export function fail(err: unknown, json: boolean): never {
  const fe = asFerryError(err);
  if (json) {
    process.stdout.write(`${JSON.stringify({ ok: false, error: fe.toJSON() })}\n`);
  } else {
    // one line, as the CLI contract says; the hint rides along
    process.stderr.write(`ferry: ${fe.code}: ${fe.message}${fe.hint ? ` (hint: ${fe.hint})` : ''}\n`);
  }
  process.exit(exitStatusOfError(fe));
}

function wrap<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    const opts = args.find(
      (a) => a && typeof a === 'object' && !Array.isArray(a) && !(a instanceof Command),
    ) as { json?: boolean } | undefined;
    try {
      await fn(...args);
    } catch (err) {
      fail(err, opts?.json === true);
    }
  };
}

/** Options of `ferry agent` and `ferry controller`. */
export interface DaemonOptions {
  config: string;
}

/** Options of `ferry agent`: a config file, or (the temporary agent of an agentless migration) standard input. */
export interface AgentOptions {
  config?: string;
  stdin?: boolean;
}

/** Options of `ferry demo`. */
export interface DemoOptions {
  dashboard?: boolean;
  json?: boolean;
}

/** Options of `ferry bench`. */
export interface BenchOptions {
  runs?: number;
  json?: boolean;
  /** zdtm only: comma-separated. */
  strategies?: string;
  tests?: string;
  quick?: boolean;
  big?: boolean;
  /** archive: MiB of values in Redis. */
  size?: number;
}

/** Builds the whole command tree; parses nothing and starts nothing (the help test walks it). */
export function buildProgram(): Command {
  const program = new Command('ferry')
    .description('live migration of running containers between hosts (runc + CRIU)')
    .option(
      '--cluster <file>',
      'cluster file (default: $FERRY_CLUSTER or the default cluster, which the first testbed up sets and testbed up --default replaces); ' +
        'commands say on stderr which cluster they act on unless --cluster names it',
    )
    .version(
      versionLine(),
      '-V, --version',
      'print the version, the commit it was built from and how it runs',
    )
    .addHelpText('after', `\n${EXIT_STATUS_HELP}`)
    // a usage error is one line (main() prints it), never the whole help
    .configureOutput({ outputError: () => {}, writeErr: () => {} })
    .exitOverride();

  const tb = program.command('testbed').description('simulated hosts on this machine');
  tb.command('up')
    .description('build a LAN bridge, one network namespace and agent per host, and a client namespace')
    .option('--hosts <list>', 'comma-separated host names', 'a,b')
    .option('--name <name>', 'testbed name (1-6 of [a-z0-9]); prefixes everything it creates', 'tb')
    .option(
      '--rate <rate>',
      "bandwidth of the hosts' links (tc tbf): one rate for all, e.g. 100mbit, or per host, e.g. a=1gbit,b=100mbit " +
        '(hosts left out are not limited)',
    )
    .option('--controller', 'also start a controller on the LAN bridge, with every agent reporting to it')
    .option(
      '--default',
      'make it the cluster that commands act on without --cluster even if another testbed is (otherwise only when ' +
        "none is: a testbed never silently redirects another user's commands)",
    )
    .option(
      '--bundle-policy <json>',
      'exceptions to every agent\'s bundle policy, e.g. \'{"allowMounts":["/usr"]}\' (docs/bundle-policy.md)',
    )
    .option(
      '--ssh',
      "also run an OpenSSH server on every host (root by key; keys, known_hosts and an ssh_config made under the testbed's directory; ssh -F CONFIG HOST)",
    )
    .option('--json', 'print JSON')
    .action(wrap(async (o) => (await import('./testbed-commands.ts')).testbedUpCommand(o, ferryArgv())));
  tb.command('down')
    .description('remove a testbed and everything it created')
    .option('--name <name>', 'testbed name', 'tb')
    .option('--all', 'remove every testbed, and any leftover with a testbed prefix')
    .option('--json', 'print JSON')
    .action(wrap(async (o) => (await import('./testbed-commands.ts')).testbedDownCommand(o, ferryArgv())));
  tb.command('agent')
    .description(
      "kill (SIGKILL, its runc and CRIU left as a crash leaves them), start or restart one host's agent, " +
        'to drive faults by hand',
    )
    .argument('<action>', 'kill, start or restart')
    .argument('<host>', 'the host whose agent it is')
    .option('--name <name>', 'testbed name', 'tb')
    .option('--json', 'print JSON')
    .action(
      wrap(async (action: string, host: string, o) =>
        (await import('./testbed-commands.ts')).testbedAgentCommand(action, host, o, ferryArgv()),
      ),
    );

  program
    .command('hosts')
    .description('list the hosts and whether their agents answer')
    .option('--json', 'print JSON')
    .action(wrap(async (o) => (await import('./commands.ts')).hostsCommand({ ...program.opts(), ...o })));

  program
    .command('run')
    .description('start a container: ferry run --host a --name N -- CMD ARGS...  or  --bundle DIR')
    .option(
      '--host <host>',
      'host to run on (default: where the controller places it, the up host with the most remaining capacity; ' +
        'without a controller, the reachable host with the fewest containers)',
    )
    .requiredOption('--name <name>', 'container name')
    .option('--bundle <dir>', 'an OCI bundle (config.json + rootfs); copied to the host')
    .addOption(
      new Option(
        '--net <mode>',
        "own: its own namespace and address on the LAN; host: the host's network with a floating --ip; none: isolated",
      )
        .choices(['none', 'own', 'host'])
        .default('own'),
    )
    .option('--ip <addr>', 'container address on the LAN (default: the first free one)')
    .option('--json', 'print JSON')
    .argument('[command...]', 'command to run (after --)')
    .action(
      wrap(async (cmd: string[], o) =>
        (await import('./commands.ts')).runCommand(cmd, { ...program.opts(), ...o }),
      ),
    );

  program
    .command('ps')
    .description('list containers')
    .option('--host <host>', 'only this host')
    .option('--json', 'print JSON')
    .action(wrap(async (o) => (await import('./commands.ts')).psCommand({ ...program.opts(), ...o })));

  program
    .command('rm')
    .description('stop and remove a container')
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(
      wrap(async (name: string, o) =>
        (await import('./commands.ts')).rmCommand(name, { ...program.opts(), ...o }),
      ),
    );

  program
    .command('migrate')
    .description('move a running container to another host')
    .argument('<name>')
    .requiredOption(
      '--to <host>',
      'destination: a host of the cluster, or ssh://[user@]host[:port], a host with no agent (see below)',
    )
    .addOption(
      new Option(
        '--strategy <s>',
        'auto: cold while its estimated freeze fits --max-downtime (without it given: and post-copy would not ' +
          'freeze much less); else pre-copy where its rounds are cheap ' +
          '(soft-dirty) and converge at the measured dirty and link rates; else postcopy; else precopy; else cold. ' +
          'cold: dump (streamed while it is written), restore. postcopy: restore at once, memory follows on ' +
          "demand; CAUTION: from the restore until the last page arrives the container's memory is split between " +
          'the hosts, and losing either host then loses the container (ferry stops the damaged copy and says so). ' +
          'precopy: rounds while it runs, then only pages whose content changed (without soft-dirty tracking ' +
          'every round is a full dump). hybrid: soft-dirty pre-dump rounds, then post-copy for the rest (needs ' +
          'soft-dirty tracking; ferry check says where it works)',
      )
        .choices(['auto', 'cold', 'precopy', 'postcopy', 'hybrid'])
        .default('auto'),
    )
    .option(
      '--max-downtime <ms>',
      "downtime budget in ms that auto plans against, and pre-copy stops at (QEMU's default downtime limit; default: 300)",
      (v) => positiveInt(v, '--max-downtime'),
    )
    .option(
      '--threshold <bytes>',
      'pre-copy: switch over once a round sends at most this many bytes (default: what the measured link sends within ' +
        '--max-downtime)',
      (v) => positiveInt(v, '--threshold'),
    )
    .option('--max-rounds <n>', 'pre-copy: at most this many rounds (default: 5)', (v) =>
      positiveInt(v, '--max-rounds'),
    )
    .addOption(
      new Option(
        '--compress <mode>',
        'zstd on the image stream; auto: when the measured link is slower than 100 MB/s',
      )
        .choices(['auto', 'on', 'off'])
        .default('auto'),
    )
    .option(
      '--streams <n>',
      'parallel connections for large image files (default: cores - 1, at most 4; 1 when zstd is on); ' +
        "a cold move between agents sends its pages through the destination's CRIU page server instead",
      (v) => positiveInt(v, '--streams'),
    )
    .option(
      '--skip-in-flight',
      'drop TCP connections a listening socket has not accepted yet (their clients see a reset) instead of ' +
        'refusing the migration (CRIU cannot move them)',
    )
    .option('--json', 'print the report as JSON')
    .option(
      '--events',
      'with --json: every event as it happens (phases; progress of the dump, pre-copy rounds, transfer and ' +
        'post-copy pages; docs/events.md), one JSON object a line, the last one {"type": "result", "report": ...}',
    )
    .option(
      '--runc-root <dir>',
      'with --to ssh://: the runc state root the container runs in, for one started by hand with plain runc run ' +
        "(default: /run/runc); its record is derived from runc's state and its bundle's config.json",
    )
    .option(
      '--ssh-config <file>',
      'with --to ssh://: this ssh_config instead of ~/.ssh/config (e.g. the one ferry testbed up --ssh writes)',
    )
    .addHelpText('after', `\n${MIGRATE_AGENTLESS_HELP}\n\n${MIGRATE_EXIT_STATUS_HELP}`)
    .action(
      wrap(async (name: string, o) =>
        (await import('./migrate-command.ts')).migrateCommand(name, { ...program.opts(), ...o }),
      ),
    );

  program
    .command('checkpoint')
    .description(
      "checkpoint a container into an archive file (Podman's layout: checkpointctl reads it); without " +
        '--leave-running the container stays frozen until the archive is written and verified, then stops',
    )
    .argument('<name>')
    .option('--host <host>', 'the host it runs on (default: the host the cluster finds it on)')
    .requiredOption(
      '--export <file>',
      'the archive to write (mode 0600: it holds process memory; replaced atomically)',
    )
    .option('--leave-running', 'keep the container running after the checkpoint (a short freeze)')
    .addOption(
      new Option('--compress <mode>', 'zstd or an uncompressed tar')
        .choices(['zstd', 'none'])
        .default('zstd'),
    )
    .option('--json', 'print JSON')
    .action(
      wrap(async (name: string, o) =>
        (await import('./archive-commands.ts')).checkpointCommand(name, { ...program.opts(), ...o }),
      ),
    );

  program
    .command('restore')
    .description(
      'restore a container from an archive (ferry checkpoint --export): checked whole first; under another name or ' +
        'address its established TCP connections are closed (and it says so)',
    )
    .requiredOption('--import <file>', 'the archive')
    .option('--host <host>', 'host to restore on (default: the reachable host with the fewest containers)')
    .option('--name <name>', "restore under this name (default: the archive's)")
    .option(
      '--ip <addr>',
      "container address on the LAN (default: the archive's, or the first free one when that is taken)",
    )
    .option('--json', 'print JSON')
    .action(
      wrap(async (o) => (await import('./archive-commands.ts')).restoreCommand({ ...program.opts(), ...o })),
    );

  program
    .command('inspect')
    .description(
      'what a checkpoint archive (FILE) or a running container (NAME: dumped while it keeps running, after a ' +
        'short freeze) holds: processes, memory, files, sockets, mounts, namespaces, sizes, versions',
    )
    .argument('<target>', 'FILE | NAME')
    .option(
      '--host <host>',
      'the agent that decodes a FILE, or the host a NAME runs on (default: the reachable host with the fewest containers for a FILE, where the cluster finds NAME)',
    )
    .option('--ps-tree', 'the process tree: pid, command, state, threads, memory')
    .option('--files', 'open files of every process')
    .option('--sockets', 'sockets with their TCP states and addresses')
    .option('--mounts', "the container's mounts")
    .option('--json', 'print the whole report as JSON')
    .action(
      wrap(async (target: string, o) =>
        (await import('./archive-commands.ts')).inspectCommand(target, { ...program.opts(), ...o }),
      ),
    );

  program
    .command('check')
    .description('what this host (or --host) can do, and which strategies work')
    .option(
      '--host <host>',
      "ask this host's agent instead of checking locally; or ssh://[user@]host[:port], a host with no agent: " +
        "ferry copies its single executable there when it is missing or of another build (verified by SHA-256, into the remote user's ~/.cache/ferry/bin) and runs the check with it",
    )
    .option(
      '--ssh-config <file>',
      'for ssh:// hosts: this ssh_config instead of ~/.ssh/config (e.g. the one ferry testbed up --ssh writes)',
    )
    .option('--json', 'print JSON')
    .action(wrap(async (o) => (await import('./check.ts')).checkCommand({ ...program.opts(), ...o })));

  program
    .command('agent')
    .description('run a host agent (HTTPS API with mutual TLS)')
    .option('--config <file>', 'agent config (JSON); required unless --stdin')
    .option(
      '--stdin',
      'the temporary destination agent of ferry migrate --to ssh:// (started by it over ssh): its config and TLS ' +
        'material as one JSON line on standard input; it exits, aborting what is not committed, when standard input closes',
    )
    .action(
      wrap(async (o: AgentOptions) => {
        if (o.stdin) {
          const { runTemporary } = await import('../agent/main.ts');
          await runTemporary(process.stdin, process.stdout);
          process.exit(0);
        }
        if (!o.config)
          throw new FerryError('FERRY_E_INPUT_ARGS', 'ferry agent needs --config FILE (or --stdin)', {
            phase: 'input',
          });
        const { loadAgentConfig, startAgent } = await import('../agent/main.ts');
        const agent = await startAgent(await loadAgentConfig(o.config));
        const stop = async () => {
          await agent.close();
          process.exit(0);
        };
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
      }),
    );

  program
    .command('probe')
    .description(
      'hold one connection to a server and measure the longest gap in its replies (runs in the testbed client namespace)',
    )
    .argument('<kind>', 'tcp | udp | redis')
    .argument('<target>', 'ADDR:PORT')
    .option('--interval <ms>', 'request interval in ms (1-1000)', '2')
    .option('--duration <s>', 'stop after this many seconds (default: at Ctrl-C / SIGTERM)')
    .option(
      '--reply-timeout <ms>',
      'a request unanswered this long counts as lost (10-3600000; default: 10000)',
    )
    .option(
      '--json',
      'print {ok, replies, errors, resets, lost, maxGapMs, p99GapMs, gaps, serverValues?, errorsDetail?}; ' +
        'the exit status is 1 after an error or a reset',
    )
    .action(
      wrap(async (kind: string, target: string, o: ProbeCliOptions) => {
        const { probeCommand, parseTarget } = await import('../probe/cli.ts');
        parseTarget(target);
        if (process.env['FERRY_IN_CLIENT_NETNS'] !== '1') {
          const { loadClusterFile, resolveClusterPath } = await import('../core/cluster-file.ts');
          const file = await resolveClusterPath(program.opts()['cluster'])
            .then(loadClusterFile)
            .catch(() => undefined);
          if (file?.client) {
            const { runInClientNetns } = await import('../probe/launch.ts');
            const code = await runInClientNetns(
              file.client.netns,
              [...ferryArgv(), ...process.argv.slice(2)],
              {
                ...process.env,
                FERRY_IN_CLIENT_NETNS: '1',
              },
            );
            process.exit(code);
          }
        }
        await probeCommand(kind, target, o);
      }),
    );

  program
    .command('cluster')
    .description('hosts (up/down, load, capacity) and their containers, as the controller sees them')
    .option('--json', 'print JSON')
    .action(
      wrap(async (o) => (await import('./cluster-commands.ts')).clusterCommand({ ...program.opts(), ...o })),
    );

  program
    .command('rebalance')
    .description('move containers off hosts above the target load (greedy policy), by live migration')
    .option('--dry-run', 'print the migration map with loads before and after; move nothing')
    .option(
      '--target <pct>',
      "target utilisation, 1-100 (default: the controller's targetPercent, 80 unless configured)",
    )
    .option('--json', 'print JSON')
    .action(
      wrap(async (o) =>
        (await import('./cluster-commands.ts')).rebalanceCommand({ ...program.opts(), ...o }),
      ),
    );

  program
    .command('drain')
    .description('move every container off a host (maintenance), respecting capacity; exits 1 when one stays')
    .argument('<host>')
    .option('--json', 'print JSON')
    .action(
      wrap(async (host: string, o) =>
        (await import('./cluster-commands.ts')).drainCommand(host, { ...program.opts(), ...o }),
      ),
    );

  program
    .command('dashboard')
    .description("print a one-time login URL for the controller's web dashboard (valid 5 minutes, once)")
    .option('--open', "also open it in the desktop's browser (xdg-open)")
    .option('--json', 'print JSON: {url, expiresAt}')
    .action(
      wrap(async (o) =>
        (await import('./dashboard-command.ts')).dashboardCommand({ ...program.opts(), ...o }),
      ),
    );

  const ca = program
    .command('ca')
    .description("the cluster's certificate authority: one certificate per agent, controller and user");
  ca.command('init')
    .description('create a cluster CA in <dir> (keeps the one there), with its revocation list ca.crl')
    .argument('<dir>', 'directory of the CA and the certificates it issues (keys 0600)')
    .option('--json', 'print JSON')
    .action(
      wrap(async (dir: string, o: CaInitOptions) => {
        const c = await import('./ca-commands.ts');
        c.printCa(await c.caInit(dir), o.json);
      }),
    );
  const subjectOptions = (cmd: Command) =>
    cmd
      .argument('<dir>', 'directory of the cluster CA')
      .option('--host <name>', "a host's agent (role agent)")
      .option('--controller <name>', 'the controller (role controller)')
      .option('--user <name>', 'a CLI user (role client)')
      .option('--address <ip...>', 'IP addresses the agent or controller is dialled at')
      .option('--dns <name...>', 'DNS names besides <name> (agent or controller)')
      .option(
        '--days <n>',
        'validity in days (default: 90 for agents and the controller, 30 for users)',
        (v) => positiveInt(v, '--days'),
      )
      .option('--json', 'print JSON');
  subjectOptions(
    ca
      .command('issue')
      .description(
        'issue the certificate of an agent, the controller or a user (kept while it still fits); one it replaces is ' +
          "revoked in the CA's ca.crl unless it only renews it",
      ),
  ).action(
    wrap(async (dir: string, o: IssueCommandOptions) => {
      const c = await import('./ca-commands.ts');
      c.printCa(await c.caIssue(dir, o), o.json);
    }),
  );
  subjectOptions(
    ca
      .command('rotate')
      .description(
        'replace a certificate with a new key, for the same role, addresses and DNS names unless given, and revoke the old ' +
          "one in the CA's ca.crl; restart its daemon after, and copy ca.crl to every host",
      ),
  ).action(
    wrap(async (dir: string, o: IssueCommandOptions) => {
      const c = await import('./ca-commands.ts');
      c.printCa(await c.caRotate(dir, o), o.json);
    }),
  );

  program
    .command('controller')
    .description('run the cluster controller (HTTPS API with mutual TLS, heartbeats, rebalancing)')
    .requiredOption('--config <file>', 'controller config (JSON)')
    .action(
      wrap(async (o: DaemonOptions) => {
        const { loadControllerConfig, startController } = await import('../cluster/main.ts');
        const c = await startController(await loadControllerConfig(o.config));
        const stop = async () => {
          await c.close();
          process.exit(0);
        };
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
      }),
    );

  program
    .command('bench')
    .description(
      'run a benchmark suite: strategies, network and switchover print medians and ratios of ferry and the ' +
        "hand-driven migration, measured interleaved (switchover: the client's gap against the floor and the " +
        'freeze, beside Podman 5 when installed, and nginx under load; it rewrites its section of ' +
        'docs/benchmarks.md); zdtm runs ' +
        "CRIU's zdtm static tests through a migration per strategy; soak migrates Redis under a client 200 times " +
        'and checks that nothing the agents hold grows (docs/reliability.md); archive checkpoints a Redis into a ' +
        'file and restores it, ferry against Podman 5 (scripts/setup.sh podman); agentless migrates a container ' +
        'over ssh:// and between agents on the same link, and prints the ratio; thesis, talk, runc-blog and ucsd ' +
        'reproduce published evaluations of container live migration beside their figures and rewrite their ' +
        'sections of docs/evaluation.md; vm migrates the same Redis as a QEMU virtual machine beside ferry ' +
        '(scripts/setup.sh qemu); docker-paper checkpoints a counter into archives and moves an OpenFlow controller ' +
        'while its Open vSwitch bridges stay connected (scripts/setup.sh sdn) (evaluation: all of those; all: ' +
        'strategies, network, switchover, soak and the evaluation)',
    )
    .argument(
      '<suite>',
      'strategies | network | switchover | zdtm | soak | archive | agentless | thesis | vm | talk | runc-blog | ' +
        'docker-paper | ucsd | evaluation | all',
    )
    .option('--runs <n>', 'repetitions of each measurement (default: 5)', (v) => positiveInt(v, '--runs'))
    .option('--json', 'print the raw figures as JSON')
    .option('--strategies <list>', 'zdtm: comma-separated strategies (default: cold,postcopy,precopy,auto)')
    .option(
      '--tests <list>',
      'zdtm: comma-separated tests, e.g. env00,maps00; a run of all of them rewrites docs/conformance.md, a run ' +
        'of some with every strategy replaces their rows in it (default: every test zdtm itself would run here)',
    )
    .option(
      '--quick',
      'switchover: one run of an empty container, ferry cold and the recipe; archive: one run of 16 MiB; ' +
        'agentless: one of 64 MiB; those three leaving docs/benchmarks.md alone; the evaluation suites: one run of small ' +
        'sizes that leaves docs/evaluation.md alone (smoke tests)',
    )
    .option(
      '--size <mib>',
      'archive: MiB of values in Redis; agentless: MiB of memory (default: 1024)',
      (v) => positiveInt(v, '--size'),
    )
    .option('--big', 'switchover: a 4 GiB container too')
    .action(
      wrap(async (suite: string, o: BenchOptions) => {
        const { SUITES, GROUPS } = await import('../../bench/index.ts');
        const names = GROUPS[suite] ?? [suite];
        const out: Record<string, unknown> = {};
        for (const n of names) {
          const run = SUITES[n];
          if (!run)
            throw new FerryError(
              'FERRY_E_INPUT_ARGS',
              `unknown suite ${n}: ${[...Object.keys(SUITES), ...Object.keys(GROUPS)].join(', ')}`,
            );
          out[n] = await run({
            ferryArgv: ferryArgv(),
            ...(o.runs ? { runs: o.runs } : {}),
            ...(o.json ? { json: true } : {}),
            ...(o.strategies ? { strategies: o.strategies.split(',').filter(Boolean) } : {}),
            ...(o.tests ? { tests: o.tests.split(',').filter(Boolean) } : {}),
            ...(o.quick ? { quick: true } : {}),
            ...(o.big ? { big: true } : {}),
            ...(o.size ? { sizeMiB: o.size } : {}),
          });
        }
        if (o.json) process.stdout.write(`${JSON.stringify(out)}\n`);
      }),
    );

  program
    .command('install')
    .description(
      "install the systemd unit of a host's agent and/or the controller (checked with systemd-analyze verify), and " +
        'the directories /etc/ferry/pki and /var/lib/ferry; the config files are yours to write (docs/configuration.md)',
    )
    .option('--agent', 'the agent: ferry-agent.service, starting ferry agent --config /etc/ferry/agent.json')
    .option(
      '--controller',
      'the controller: ferry-controller.service, starting ferry controller --config /etc/ferry/controller.json',
    )
    .option(
      '--root <dir>',
      'install under this directory instead of / (a package build); systemd is not reloaded',
    )
    .option('--json', 'print JSON')
    .action(wrap(async (o: InstallOptions) => (await import('./install.ts')).installCommand(o)));

  program
    .command('completion')
    .description(
      'print a shell completion script: bash (save as /usr/share/bash-completion/completions/ferry), zsh (as _ferry ' +
        'in $fpath), fish (as ~/.config/fish/completions/ferry.fish)',
    )
    .argument('<shell>', SHELLS.join(' | '))
    .action(
      wrap(async (shell: string) => {
        process.stdout.write(completionScript(program, shell));
      }),
    );

  program
    .command('demo')
    .description(
      'the around-the-world tour: four simulated hosts on links of 1 Gbit/s down to 100 Mbit/s, a TCP service ' +
        'with a client holding one connection, migrated (auto) through every host and home; a table of the hops',
    )
    .option(
      '--dashboard',
      'also run a controller, print its dashboard URL, move through the controller so the browser shows each hop, and leave the testbed up',
    )
    .option(
      '--json',
      'narrate on stderr; print {ok, hops:[{from, to, ok, strategy, bytesSent, freezeMs, totalMs, clientGapMs}], client} on stdout',
    )
    .action(wrap(async (o: DemoOptions) => (await import('./demo.ts')).demoCommand(ferryArgv(), o)));

  return program;
}

/** `ferry migrate --help`: what --to ssh:// does. */
export const MIGRATE_AGENTLESS_HELP = [
  'Agentless (--to ssh://[user@]host[:port]), run on the source host as root: the source half runs in this',
  'command, on a container of the local runc root (--runc-root); the destination half is a temporary ferry agent',
  "started over the system's ssh with ferry's single executable (copied there when missing), on the remote's",
  'loopback, reached through the ssh connection, authenticated by a CA made for this migration alone. Host keys',
  'are checked as ssh checks them. The temporary agent ends with its ssh session; the container it received stays',
  'in the runc root /var/lib/ferry/agentless/runc there. A dropped connection before the commit rolls back.',
].join('\n');

/** Parses a count or a size given on the command line: a whole number of 1 or more (0 would mean nothing). */
export function positiveInt(v: string, flag: string): number {
  const n = /^\s*\d+\s*$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 1)
    throw new FerryError('FERRY_E_INPUT_ARGS', `${flag} takes a whole number of 1 or more, not ${v}`, {
      phase: 'input',
    });
  return n;
}

export async function main(argv = process.argv): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0) process.exit(0);
      fail(usageError(err, commandPath(program, argv.slice(2))), argv.includes('--json'));
    }
    fail(err, argv.includes('--json'));
  }
}

// not a top-level await: the single executable's bundle is CommonJS (scripts/dist.sh)
if (isSea() || realpathSync(process.argv[1] ?? '') === realpathSync(fileURLToPath(import.meta.url))) {
  void main();
}
