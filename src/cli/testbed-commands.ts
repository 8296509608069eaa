// ferry testbed up|down
import { FerryError } from '../core/errors.ts';
import { parseHosts } from '../testbed/layout.ts';
import { testbedDown, testbedUp } from '../testbed/testbed.ts';

export async function testbedUpCommand(
  o: { hosts: string; name: string; rate?: string; controller?: boolean; json?: boolean },
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
    },
    { ferryArgv, ...(log ? { log } : {}) },
  );
  const out = {
    name: tb.name,
    lan: `${tb.subnet}.0/24`,
    hosts: tb.hosts.map((h) => ({ name: h.name, address: h.address, netns: h.netns })),
    client: { netns: tb.client.netns, address: tb.client.address },
    cluster: tb.clusterFile,
    ...(o.controller ? { controller: { address: tb.bridgeAddress, port: 7480 } } : {}),
  };
  process.stdout.write(o.json ? `${JSON.stringify(out)}\n` : `cluster file: ${tb.clusterFile}\n`);
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
