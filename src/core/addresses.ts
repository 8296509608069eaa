// IPv4 addresses of containers on the cluster's LAN: the checks the CLI makes before it asks, and the agent makes
// again before it creates (one function, so the two cannot disagree).

/** The address as a 32-bit number, or undefined when it is not a dotted quad of 0-255. */
export function ipv4ToInt(ip: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

/**
 * Why `ip` cannot be a container's address on the LAN that `member` (any address on it) belongs to, or undefined
 * when it can: not an IPv4 address, off the LAN, or the LAN's network or broadcast address.
 */
export function lanAddressProblem(
  ip: string,
  lan: { member: string; prefixLen: number },
): string | undefined {
  const a = ipv4ToInt(ip);
  if (a === undefined) return `${ip} is not an IPv4 address`;
  const base = ipv4ToInt(lan.member);
  if (base === undefined || lan.prefixLen < 1 || lan.prefixLen > 30) return undefined;
  const mask = (0xffffffff << (32 - lan.prefixLen)) >>> 0;
  const net = (base & mask) >>> 0;
  const text = `${intToIpv4(net)}/${lan.prefixLen}`;
  if ((a & mask) >>> 0 !== net) return `${ip} is not on the LAN ${text}`;
  if (a === net) return `${ip} is the network address of the LAN ${text}`;
  if (a === (net | ~mask) >>> 0) return `${ip} is the broadcast address of the LAN ${text}`;
  return undefined;
}

export function intToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}
