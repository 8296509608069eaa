// ferry testbed up|down
import { FerryError } from '../core/errors.ts';
import type { Runner } from '../runtime/exec.ts';
import { parseHosts } from '../testbed/layout.ts';
import { testbedDown, testbedUp } from '../testbed/testbed.ts';

export async function testbedUpCommand(
  o: { hosts: string; name: string; rate?: string; controller?: boolean; json?: boolean },
  runner: Runner,
  ferryArgv: string[],
): Promise<void> {
  if (o.controller) {
    throw new FerryError('FERRY_E_INPUT_ARGS', '--controller is not available in this version of ferry', {
      phase: 'input',
    });
  }
  if (o.rate !== undefined && !/^\d+(\.\d+)?(bit|kbit|mbit|gbit)$/.test(o.rate)) {
    throw new FerryError('FERRY_E_INPUT_ARGS', `--rate ${o.rate}: use a tc rate such as 100mbit or 1gbit`, {
      phase: 'input',
    });
  }
  const hosts = parseHosts(o.hosts);
  const log = o.json ? undefined : (m: string) => process.stderr.write(`testbed: ${m}\n`);
  const tb = await testbedUp(
    { name: o.name, hosts, ...(o.rate ? { rate: o.rate } : {}) },
    { runner, ferryArgv, ...(log ? { log } : {}) },
  );
  const out = {
    name: tb.name,
    lan: `${tb.subnet}.0/24`,
    hosts: tb.hosts.map((h) => ({ name: h.name, address: h.address, netns: h.netns })),
    client: { netns: tb.client.netns, address: tb.client.address },
    cluster: tb.clusterFile,
  };
  process.stdout.write(o.json ? `${JSON.stringify(out)}\n` : `cluster file: ${tb.clusterFile}\n`);
}

export async function testbedDownCommand(
  o: { name: string; all?: boolean; json?: boolean },
  runner: Runner,
  ferryArgv: string[],
): Promise<void> {
  const removed = await testbedDown(o.all ? 'all' : o.name, { runner, ferryArgv });
  process.stdout.write(
    o.json ? `${JSON.stringify({ removed })}\n` : `removed: ${removed.join(', ') || '(nothing)'}\n`,
  );
}
