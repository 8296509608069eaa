// The agent's configuration: one schema, one defaults object, validated once at start (docs/configuration.md
// documents every field; a test holds the page to the schema). Unknown fields are refused, not ignored: a typo
// must not leave an option at its default unnoticed.
import { isIPv4 } from 'node:net';
import { normalize } from 'node:path';
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { readConfigFile, schemaProblem } from '../core/config-file.ts';
import { FerryError } from '../core/errors.ts';
import { LOG_LEVELS } from '../core/log.ts';
import { NAME_PATTERN } from '../core/names.ts';
import { DEFAULT_DEADLINES } from '../migration/defaults.ts';
import { type BundlePolicy, DEFAULT_BUNDLE_POLICY } from '../runtime/bundle-policy.ts';

const STRICT = { additionalProperties: false } as const;

export const AgentConfigSchema = Type.Object(
  {
    host: Type.String({ pattern: NAME_PATTERN }),
    listen: Type.Object(
      { address: Type.String({ minLength: 1 }), port: Type.Integer({ minimum: 1, maximum: 65535 }) },
      STRICT,
    ),
    /**
     * The IPv4 address other hosts and the controller reach this agent at (its LAN address); its listen address
     * unless that is 0.0.0.0, when it must be given.
     */
    advertise: Type.Optional(Type.String({ minLength: 1 })),
    stateDir: Type.String({ minLength: 1 }),
    imagesDir: Type.String({ minLength: 1 }),
    cgroupParent: Type.String({ pattern: '^/[a-zA-Z0-9_.-]+$' }),
    network: Type.Object(
      {
        bridge: Type.String({ pattern: '^[a-zA-Z0-9_.-]{1,15}$' }),
        netnsPrefix: Type.String({ pattern: '^[a-zA-Z0-9_.-]{1,64}$' }),
        prefixLen: Type.Integer({ minimum: 8, maximum: 32 }),
      },
      STRICT,
    ),
    tls: Type.Object(
      {
        cert: Type.String({ minLength: 1 }),
        key: Type.String({ minLength: 1 }),
        ca: Type.String({ minLength: 1 }),
      },
      STRICT,
    ),
    criuPath: Type.String(),
    runcPath: Type.String(),
    logLevel: Type.Union(LOG_LEVELS.map((l) => Type.Literal(l))),
    faults: Type.Array(Type.String()),
    /** Keep CRIU's restore log of a migration that succeeded too (a failed one's is always kept). */
    keepLogs: Type.Boolean(),
    /**
     * The other hosts of the cluster, as the CLI's cluster file names them: the only agents this one takes
     * migrations from and sends them to (their certificates must carry these names), and, when there is no
     * controller, the agents a create claims its name and address on. None by default: an agent alone takes no
     * migration.
     */
    peers: Type.Array(
      Type.Object(
        {
          name: Type.String({ pattern: NAME_PATTERN }),
          address: Type.String({ minLength: 1 }),
          port: Type.Integer({ minimum: 1, maximum: 65535 }),
        },
        { additionalProperties: false },
      ),
      { maxItems: 4096 },
    ),
    /** The controller to report to, if any. */
    controller: Type.Optional(
      Type.Object(
        {
          name: Type.String({ pattern: NAME_PATTERN }),
          address: Type.String({ minLength: 1 }),
          port: Type.Integer({ minimum: 1, maximum: 65535 }),
        },
        STRICT,
      ),
    ),
    /** LAN addresses no container may take besides this host's own (a gateway, a client). */
    reservedAddresses: Type.Array(Type.String(), { maxItems: 1000 }),
    /** Bundles uploaded for a create: the largest accepted, and how long one waits for its create. */
    uploads: Type.Object(
      {
        limitBytes: Type.Integer({ minimum: 1 }),
        maxAgeMs: Type.Integer({ minimum: 1000, maximum: 86_400_000 }),
      },
      STRICT,
    ),
    heartbeat: Type.Object(
      {
        intervalMs: Type.Integer({ minimum: 100, maximum: 600_000 }),
        fullEvery: Type.Integer({ minimum: 1, maximum: 1000 }),
        cpuDeltaPercent: Type.Number({ minimum: 0 }),
        memoryDeltaBytes: Type.Integer({ minimum: 0 }),
      },
      STRICT,
    ),
    /** Phase deadlines (ms); defaults in migration/defaults.ts. */
    deadlines: Type.Object(
      {
        /** A destination drops a restored copy not committed this long after the restore was asked. */
        commitMs: Type.Integer({ minimum: 1000, maximum: 3_600_000 }),
        /** The freeze's hard ceiling: past it the source gives up and thaws (the dump's CRIU is killed). */
        freezeMs: Type.Integer({ minimum: 1000, maximum: 3_600_000 }),
        /** Prepare (the destination reserves and stages) and pre-copy's rounds: past them the migration rolls back. */
        prepareMs: Type.Integer({ minimum: 1000, maximum: 3_600_000 }),
        roundsMs: Type.Integer({ minimum: 1000, maximum: 86_400_000 }),
        /** A request or stream between agents without progress this long fails (FERRY_E_PEER_TIMEOUT). */
        stallMs: Type.Integer({ minimum: 500, maximum: 600_000 }),
      },
      STRICT,
    ),
    /** CRIU options written into the file runc hands CRIU (runtime/criu-config.ts); each defaults to on / 64 MiB. */
    criu: Type.Optional(
      Type.Object(
        {
          linkRemap: Type.Optional(Type.Boolean()),
          extUnixSk: Type.Optional(Type.Boolean()),
          ghostLimitMiB: Type.Optional(Type.Integer({ minimum: 0, maximum: 65_536 })),
        },
        { additionalProperties: false },
      ),
    ),
    /** What this host offers the scheduler; declared, so that simulated hosts on one machine have capacities. */
    capacity: Type.Optional(
      Type.Object(
        { cores: Type.Number({ exclusiveMinimum: 0 }), memoryBytes: Type.Integer({ minimum: 1 }) },
        STRICT,
      ),
    ),
    /** Exceptions to the policy every uploaded bundle passes (docs/bundle-policy.md); all off by default. */
    bundlePolicy: Type.Object(
      {
        allowHooks: Type.Boolean(),
        allowMounts: Type.Array(Type.String({ pattern: '^/' })),
        allowCapabilities: Type.Array(Type.String({ pattern: '^CAP_[A-Z_]+$' })),
        allowDevices: Type.Boolean(),
      },
      { additionalProperties: false },
    ),
  },
  STRICT,
);

export type AgentConfig = Static<typeof AgentConfigSchema>;

export const AGENT_DEFAULTS = {
  listen: { address: '0.0.0.0', port: 7470 },
  stateDir: '/var/lib/ferry/agent',
  imagesDir: '/run/ferry/images',
  cgroupParent: '/ferry',
  network: { bridge: 'br0', netnsPrefix: 'ferry', prefixLen: 24 },
  criuPath: 'criu',
  runcPath: 'runc',
  logLevel: 'info',
  faults: [] as string[],
  keepLogs: false,
  peers: [] as { name: string; address: string; port: number }[],
  reservedAddresses: [] as string[],
  uploads: { limitBytes: 8 * 1024 ** 3, maxAgeMs: 10 * 60_000 },
  heartbeat: { intervalMs: 3000, fullEvery: 10, cpuDeltaPercent: 5, memoryDeltaBytes: 16 << 20 },
  bundlePolicy: DEFAULT_BUNDLE_POLICY as BundlePolicy,
  deadlines: { ...DEFAULT_DEADLINES },
};

/**
 * An on/off environment variable as a user means it: `0`, `false` (any case) or empty is off, anything else on
 * (`FERRY_KEEP_LOGS=0` keeping logs would surprise everyone).
 */
export function envFlag(value: string): boolean {
  const v = value.trim().toLowerCase();
  return v !== '' && v !== '0' && v !== 'false';
}

/** The agent config file when none is named (`ferry install --agent` writes it). */
export const AGENT_CONFIG_PATH = '/etc/ferry/agent.json';

export function parseAgentConfig(
  raw: unknown,
  env: NodeJS.ProcessEnv = process.env,
  source = 'agent config',
): AgentConfig {
  const invalid = (what: string) =>
    new FerryError('FERRY_E_INPUT_ARGS', `${source}: ${what}`, { phase: 'input' });
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw invalid('not a JSON object');
  const merged = { ...AGENT_DEFAULTS, ...(raw as object) } as Record<string, unknown>;
  // the policy's fields default one by one: allowing hooks alone keeps every other refusal
  const policy = merged['bundlePolicy'];
  if (policy && typeof policy === 'object' && !Array.isArray(policy))
    merged['bundlePolicy'] = { ...DEFAULT_BUNDLE_POLICY, ...policy };
  // (one deadline may be set alone)
  const deadlines = (raw as { deadlines?: unknown } | undefined)?.deadlines;
  if (deadlines && typeof deadlines === 'object')
    merged['deadlines'] = { ...AGENT_DEFAULTS.deadlines, ...deadlines };
  if (env['FERRY_CRIU_PATH']) merged['criuPath'] = env['FERRY_CRIU_PATH'];
  if (env['FERRY_FAULTS']) merged['faults'] = env['FERRY_FAULTS'].split(',').filter(Boolean);
  if (env['FERRY_KEEP_LOGS'] !== undefined) merged['keepLogs'] = envFlag(env['FERRY_KEEP_LOGS']);
  // FERRY_DEADLINES: JSON over the config's deadlines (tests shorten them without a config file of their own)
  if (env['FERRY_DEADLINES']) {
    try {
      merged['deadlines'] = { ...(merged['deadlines'] as object), ...JSON.parse(env['FERRY_DEADLINES']) };
    } catch {
      throw new FerryError('FERRY_E_INPUT_ARGS', 'FERRY_DEADLINES is not JSON');
    }
  }
  if (!Value.Check(AgentConfigSchema, merged)) throw invalid(schemaProblem(AgentConfigSchema, merged));
  const cfg = merged as AgentConfig;
  const badPeer = cfg.peers.find((p) => !isIPv4(p.address));
  if (badPeer)
    throw invalid(`/peers peer ${badPeer.name} has no IPv4 address (${JSON.stringify(badPeer.address)})`);
  const bad = cfg.bundlePolicy.allowMounts.find((p) => normalize(p) !== p || p.includes('/../'));
  if (bad !== undefined)
    throw invalid(`/bundlePolicy/allowMounts ${JSON.stringify(bad)} is not a plain absolute path`);
  if (!isIPv4(cfg.listen.address))
    throw invalid(`/listen/address ${cfg.listen.address} is not an IPv4 address`);
  if (cfg.advertise !== undefined && (!isIPv4(cfg.advertise) || cfg.advertise === '0.0.0.0'))
    throw invalid(`/advertise ${cfg.advertise} is not an IPv4 address of this host`);
  if (cfg.listen.address === '0.0.0.0' && cfg.advertise === undefined)
    throw invalid(
      '/advertise is missing: an agent listening on 0.0.0.0 must say which address other hosts reach it at',
    );
  return cfg;
}

/** The address other hosts and the controller reach this agent at. */
export function advertisedAddress(cfg: Pick<AgentConfig, 'advertise' | 'listen'>): string {
  return cfg.advertise ?? cfg.listen.address;
}

export async function loadAgentConfig(
  path: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<AgentConfig> {
  return parseAgentConfig(await readConfigFile(path, 'agent'), env, path);
}
