// The layering of ferry as a check (`make deps`, and in `make test` after the type-check and lint).
//
// A module imports only from its own folder or from a folder of a lower layer. The table below is the one place
// the layers are written down; the rules are generated from it. Test files (`*.test.ts`) and `test/` may reach
// anything (a test of the CLI reads the engine's constants, say), but they are not exempt from cycles.

/** Layer number of each top-level folder of src/ (and of bench/, which sits beside the CLI). */
const LAYERS = {
  core: 0, // errors, names, log
  runtime: 1, // child processes, runc, criu, pki, cgroups, mounts
  transport: 2, // image streams
  network: 2, // netns, firewall, addresses
  images: 2, // CRIU image readers
  archive: 2, // checkpoint archives: Podman's layout plus ferry's metadata and manifest, written and read as streams
  api: 3, // the wire contract shared by both ends: schemas, wire types, the typed client, the server setup
  host: 4, // this host's containers: records, bundles
  migration: 5, // the engine
  agent: 6, // the per-host daemon
  cluster: 6, // the controller
  testbed: 7, // simulated hosts
  probe: 7, // the downtime probe
  workloads: 7, // test programs
  remote: 7, // hosts reached over SSH with no agent: ferry's executable copied there and run through ssh
  cli: 8, // commands, parsing, rendering
  bench: 8, // benchmarks
  web: 9, // the dashboard in the browser: bundled by the controller, never loaded by Node (the rule below)
};

/** Where a folder lives: bench/ is at the top of the repository, every other layer under src/. */
const dir = (name) => (name === 'bench' ? '^bench/' : `^src/${name}/`);
const anyOf = (names) => (names.length ? `(${names.map(dir).join('|')})` : '^$');

/** Test code may import across layers (it checks one layer against another); it is not shipped. */
const TESTS = '(\\.test\\.ts$|^test/)';

const names = Object.keys(LAYERS);

const upward = names
  .map((from) => {
    const higher = names.filter((n) => LAYERS[n] > LAYERS[from]);
    return higher.length
      ? {
          name: `layer-${from}-not-up`,
          severity: 'error',
          comment:
            `${from}/ is layer ${LAYERS[from]}: it may not import ${higher.join(', ')} (higher layers). A lower ` +
            'layer that knows a higher one cannot be tested, replaced or understood without it; pass what it needs ' +
            'down through a constructor instead.',
          from: { path: dir(from), pathNot: TESTS },
          to: { path: anyOf(higher) },
        }
      : undefined;
  })
  .filter(Boolean);

// Two folders of one layer are peers: neither builds on the other. (agent/ and cluster/ have their own rule.)
const sideways = names
  .map((from) => {
    const peers = names.filter(
      (n) =>
        n !== from &&
        LAYERS[n] === LAYERS[from] &&
        !(LAYERS[from] === 6) && // agent <-> cluster: below
        !(from === 'cli' || n === 'cli'), // cli <-> bench: the cli rule and bench-not-cli below
    );
    return peers.length
      ? {
          name: `layer-${from}-not-sideways`,
          severity: 'error',
          comment:
            `${from}/ and ${peers.join(', ')} share layer ${LAYERS[from]}: peers do not import each other; ` +
            'what both need belongs in a lower layer.',
          from: { path: dir(from), pathNot: TESTS },
          to: { path: anyOf(peers) },
        }
      : undefined;
  })
  .filter(Boolean);

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment:
        'A cycle makes two modules one: neither can be loaded, tested or changed alone, and the load order decides ' +
        'which sees the other half-initialised. Tests are not exempt.',
      from: {},
      to: { circular: true },
    },
    ...upward,
    ...sideways,
    {
      name: 'agent-not-cluster',
      severity: 'error',
      comment:
        'The agent must run without a controller (and does, on every host of a testbed without one); what the two ' +
        'share on the wire lives in api/.',
      from: { path: '^src/agent/', pathNot: TESTS },
      to: { path: '^src/cluster/' },
    },
    {
      name: 'cluster-not-agent',
      severity: 'error',
      comment:
        'The controller speaks to agents only over the wire, through the typed client and schemas of api/, so it ' +
        'never depends on how an agent is built.',
      from: { path: '^src/cluster/', pathNot: TESTS },
      to: { path: '^src/agent/' },
    },
    {
      name: 'cli-only-api-core-tools-entries',
      severity: 'error',
      comment:
        'The CLI is a client: it parses, calls the api/ client and prints. It may use core/, the tools of layer 7 ' +
        '(testbed, probe, workloads, remote) and launch the entry modules agent/main.ts, cluster/main.ts and bench/index.ts; ' +
        'reaching into the engine, host, transport, network, runtime or images would make it a second engine.',
      from: { path: '^src/cli/', pathNot: TESTS },
      to: {
        path: '^(src|bench)/',
        pathNot:
          '^(src/(cli|api|core|testbed|probe|workloads|remote)/|src/agent/main\\.ts$|src/cluster/main\\.ts$|bench/index\\.ts$)',
      },
    },
    {
      name: 'web-only-api-types',
      severity: 'error',
      comment:
        'web/ is the dashboard as the browser runs it (bundled by the controller, never loaded by Node): it may ' +
        "import its own folder and the wire types of api/, nothing that needs Node or the host.",
      from: { path: '^src/web/', pathNot: TESTS },
      to: { path: '^(src|bench)/', pathNot: '^src/(web|api)/' },
    },
    {
      name: 'bench-not-cli',
      severity: 'error',
      comment:
        'bench/ measures the product through its layers (and the CLI launches it): importing the CLI back would be a ' +
        'cycle in all but name.',
      from: { path: '^bench/', pathNot: TESTS },
      to: { path: '^src/cli/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^test/fixtures/' },
    // swc parses TypeScript, `import type` included (a type is a dependency too); typescript 7 has no JS API yet
    parser: 'swc',
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.json'] },
  },
};
