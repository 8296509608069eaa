// Names and addresses of a testbed: every object carries the testbed's prefix (pure, unit-tested).
import { FerryError } from '../core/errors.ts';
import { checkName } from '../core/names.ts';

/** Each simulated host's LAN bridge, inside its namespace: its uplink and its containers' veths are on it. */
export const HOST_BRIDGE = 'br0';

export const TESTBED_NAME_RE = /^[a-z0-9]{1,6}$/;
export const AGENT_PORT = 7470;

export interface HostLayout {
  name: string;
  index: number;
  netns: string;
  vethOuter: string;
  vethInner: string;
  address: string;
  mac: string;
  cgroupParent: string;
}

export interface TestbedLayout {
  name: string;
  prefix: string;
  subnet: string;
  bridge: string;
  bridgeAddress: string;
  bridgeMac: string;
  hosts: HostLayout[];
  client: { netns: string; vethOuter: string; vethInner: string; address: string; mac: string };
}

export function checkTestbedName(name: string): string {
  if (!TESTBED_NAME_RE.test(name)) {
    throw new FerryError(
      'FERRY_E_INPUT_NAME',
      `invalid testbed name ${JSON.stringify(name)}: use 1-6 characters [a-z0-9]`,
      {
        phase: 'input',
      },
    );
  }
  return name;
}

export function parseHosts(spec: string): string[] {
  const hosts = spec
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean);
  if (hosts.length === 0)
    throw new FerryError('FERRY_E_INPUT_ARGS', 'give at least one host (--hosts a,b)', { phase: 'input' });
  if (hosts.length > 50)
    throw new FerryError('FERRY_E_INPUT_ARGS', 'at most 50 hosts in a testbed', { phase: 'input' });
  for (const h of hosts) {
    checkName(h, 'host');
    if (h.length > 40 || h === 'client' || h === 'lan') {
      throw new FerryError(
        'FERRY_E_INPUT_NAME',
        `invalid host name ${h}: at most 40 characters, not 'client' or 'lan'`,
        {
          phase: 'input',
        },
      );
    }
  }
  if (new Set(hosts).size !== hosts.length)
    throw new FerryError('FERRY_E_INPUT_ARGS', 'host names must be unique', { phase: 'input' });
  return hosts;
}

/** Picks 10.213.N.0/24 with N not overlapping any network already in use on this machine. */
export function pickSubnet(inUse: string[]): string {
  const taken = new Set<number>();
  for (const net of inUse) {
    const m = /^10\.213\.(\d+)\./.exec(net);
    if (m?.[1]) taken.add(Number(m[1]));
    if (/^10\.0\.0\.0\/8$/.test(net) || net === '0.0.0.0/0') continue;
  }
  for (let n = 1; n < 255; n++) if (!taken.has(n)) return `10.213.${n}`;
  throw new FerryError('FERRY_E_TESTBED', 'no free 10.213.N.0/24 subnet for a testbed', { phase: 'testbed' });
}

function mac(subnetByte: number, last: number, kind: number): string {
  const h = (n: number) => n.toString(16).padStart(2, '0');
  return `02:fe:${h(subnetByte)}:${h(kind)}:00:${h(last)}`;
}

export function testbedLayout(name: string, hosts: string[], subnet: string): TestbedLayout {
  const prefix = `fy${checkTestbedName(name)}`;
  const sb = Number(subnet.split('.')[2] ?? 0);
  return {
    name,
    prefix,
    subnet,
    bridge: `${prefix}br`,
    bridgeAddress: `${subnet}.254`,
    bridgeMac: mac(sb, 254, 0xff),
    hosts: hosts.map((h, i) => ({
      name: h,
      index: i,
      netns: `${prefix}-${h}`,
      vethOuter: `${prefix}h${i}`,
      vethInner: `${prefix}i${i}`,
      address: `${subnet}.${10 + i}`,
      mac: mac(sb, 10 + i, 0x01),
      cgroupParent: `/${prefix}-${h}`,
    })),
    client: {
      netns: `${prefix}-client`,
      vethOuter: `${prefix}c`,
      vethInner: `${prefix}ci`,
      address: `${subnet}.100`,
      mac: mac(sb, 100, 0x02),
    },
  };
}

/** Objects that belong to some testbed (for `down --all` after a crash). */
export const ANY_TESTBED_NETNS = /^fy[a-z0-9]{1,6}-/;
export const ANY_TESTBED_LINK = /^fy[a-z0-9]{1,6}(br|h\d+|i\d+|c|ci)$/;
