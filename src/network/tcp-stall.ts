// Whether a connection this host opened has stopped making progress, read from the kernel's socket table
// (/proc/net/tcp, no process started: it is polled inside the freeze). A cold dump's connection to the
// destination's page server is CRIU's own socket, so ferry's stall timeout can only watch it from outside.
import { readFile } from 'node:fs/promises';

/** The connections of this network namespace to `address:port`: TCP state and bytes not yet acknowledged. */
export interface TcpEntry {
  /** The kernel's state number: 1 established, 2 SYN sent. */
  state: number;
  /** Bytes sent and not acknowledged yet (for an established socket). */
  txQueue: number;
}

/** IPv4 `a.b.c.d` as /proc/net/tcp prints it: the 32-bit word in host (little-endian) order, in hex. */
export function procAddress(address: string): string {
  const b = address.split('.').map(Number);
  return [b[3], b[2], b[1], b[0]].map((x) => (x ?? 0).toString(16).toUpperCase().padStart(2, '0')).join('');
}

/** The entries of a /proc/net/tcp text whose remote end is `address:port`. */
export function parseTcpTable(text: string, address: string, port: number): TcpEntry[] {
  const remote = `${procAddress(address)}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const out: TcpEntry[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[2] !== remote) continue;
    const tx = (f[4] ?? '').split(':')[0] ?? '0';
    out.push({ state: Number.parseInt(f[3] ?? '0', 16), txQueue: Number.parseInt(tx, 16) || 0 });
  }
  return out;
}

/**
 * Calls `onStall` once when the connections to `address:port` stay stuck for `stallMs`: still in SYN-SENT, or
 * with bytes unacknowledged that do not change (a peer that acknowledges anything changes them; a sender that is
 * busy elsewhere has none outstanding). `read` is the socket table (tests pass their own).
 */
export function watchStall(
  o: { address: string; port: number; stallMs: number; pollMs?: number },
  onStall: () => void,
  read: () => Promise<string> = readTcpTable,
): { stop(): void } {
  let last = '';
  let since = Date.now();
  let stopped = false;
  const poll = async () => {
    if (stopped) return;
    const entries = parseTcpTable(await read().catch(() => ''), o.address, o.port);
    const stuck =
      entries.length > 0 && entries.every((e) => e.state === 2 || (e.state === 1 && e.txQueue > 0));
    const key = stuck ? JSON.stringify(entries) : '';
    if (key !== last || !stuck) {
      last = key;
      since = Date.now();
    } else if (Date.now() - since >= o.stallMs) {
      stopped = true;
      onStall();
      return;
    }
    timer = setTimeout(() => void poll(), o.pollMs ?? 100);
  };
  let timer = setTimeout(() => void poll(), o.pollMs ?? 100);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

function readTcpTable(): Promise<string> {
  return readFile('/proc/net/tcp', 'utf8');
}
