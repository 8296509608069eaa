// ferry testbed up|down
import { FerryError } from '../core/errors.ts';
import { parseHosts } from '../testbed/layout.ts';
import { controlAgent, testbedDown, testbedUp } from '../testbed/testbed.ts';

export async function testbedUpCommand(
  o: {
    hosts: string;
    name: string;
    rate?: string;
    controller?: boolean;
    default?: boolean;
    bundlePolicy?: string;
    ssh?: boolean;
    json?: boolean;
  },
  ferryArgv: string[],
): Promise<void> {
  const hosts = parseHosts(o.hosts);
  const { rate, rates } = parseRates(o.rate, hosts);
  const log = o.json ? undefined : (m: string) => process.stderr.write(`testbed: ${m}\n`);
  const tb = await testbedUp(
    {
      name: o.name,
      hosts,
      ...(rate ? { rate } : {}),
      ...(rates ? { rates } : {}),
      ...(o.controller ? { controller: {} } : {}),
      ...(o.default ? { makeDefault: true } : {}),
      ...(o.bundlePolicy ? { bundlePolicy: parseBundlePolicy(o.bundlePolicy) } : {}),
      ...(o.ssh ? { ssh: true } : {}),
    },
    { ferryArgv, ...(log ? { log } : {}) },
  );
  const out = {
    name: tb.name,
    lan: `${tb.subnet}.0/24`,
    hosts: tb.hosts.map((h) => ({ name: h.name, address: h.address, netns: h.netns })),
    client: { netns: tb.client.netns, address: tb.client.address },
    cluster: tb.clusterFile,
    default: tb.defaultCluster === tb.clusterFile,
    ...(o.controller ? { controller: { address: tb.bridgeAddress, port: 7480 } } : {}),
    ...(tb.ssh ? { ssh: tb.ssh } : {}),
  };
  const other = tb.defaultCluster !== tb.clusterFile ? tb.defaultCluster : undefined;
  process.stdout.write(
    o.json
      ? `${JSON.stringify(out)}\n`
      : `cluster file: ${tb.clusterFile}\n${
          other
            ? `the default cluster stays ${other}: use --cluster ${tb.clusterFile} or FERRY_CLUSTER=${tb.clusterFile} ` +
              '(or bring it up with --default)\n'
            : 'this is the default cluster\n'
        }${tb.ssh ? `ssh: ssh -F ${tb.ssh.config} ${tb.hosts[0]?.name ?? 'HOST'}\n` : ''}`,
  );
}

export async function testbedDownCommand(
  o: { name: string; all?: boolean; json?: boolean },
  ferryArgv: string[],
): Promise<void> {
  const removed = await testbedDown(o.all ? 'all' : o.name, { ferryArgv });
  process.stdout.write(
    o.json ? `${JSON.stringify({ removed })}\n` : `removed: ${removed.join(', ') || '(nothing)'}\n`,
  );
}

export async function testbedAgentCommand(
  action: string,
  host: string,
  o: { name: string; json?: boolean },
  ferryArgv: string[],
): Promise<void> {
  if (action !== 'kill' && action !== 'start' && action !== 'restart')
    throw new FerryError('FERRY_E_INPUT_ARGS', `testbed agent ${action}: use kill, start or restart`, {
      phase: 'input',
    });
  const out = await controlAgent(o.name, action, host, { ferryArgv });
  process.stdout.write(
    o.json
      ? `${JSON.stringify({ host, action, ...out })}\n`
      : `${host}: ${action === 'kill' ? 'agent killed' : `agent running (pid ${out.pid})`}\n`,
  );
}

const RATE_RE = /^\d+(\.\d+)?(bit|kbit|mbit|gbit)$/;

/** `--rate 100mbit` for every link, or `--rate a=1gbit,b=100mbit` per host. */
export function parseRates(
  spec: string | undefined,
  hosts: string[],
): { rate?: string; rates?: Record<string, string> } {
  if (spec === undefined) return {};
  const bad = (what: string) =>
    new FerryError(
      'FERRY_E_INPUT_ARGS',
      `--rate ${what}: use a tc rate such as 100mbit, or host=rate pairs`,
      { phase: 'input' },
    );
  if (!spec.includes('=')) {
    if (!RATE_RE.test(spec)) throw bad(spec);
    return { rate: spec };
  }
  const rates: Record<string, string> = {};
  for (const pair of spec.split(',')) {
    const [h, r] = pair.split('=');
    if (!h || !r || !RATE_RE.test(r)) throw bad(pair);
    if (!hosts.includes(h))
      throw new FerryError('FERRY_E_HOST_UNKNOWN', `--rate names host ${h}, which is not in --hosts`, {
        phase: 'input',
      });
    rates[h] = r;
  }
  return { rates };
}

/** `--bundle-policy JSON`: exceptions written into every agent's config (each agent validates them at start). */
function parseBundlePolicy(text: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    v = undefined;
  }
  if (!v || typeof v !== 'object' || Array.isArray(v))
    throw new FerryError('FERRY_E_INPUT_ARGS', `--bundle-policy: not a JSON object: ${text}`, {
      hint: 'e.g. --bundle-policy \'{"allowMounts":["/usr"]}\' (docs/bundle-policy.md)',
    });
  return v as Record<string, unknown>;
}
