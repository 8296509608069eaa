// Whether a connection this host opened has stopped making progress, read from the kernel's socket table
// (/proc/net/tcp, no process started: it is polled inside the freeze), and how to cut it when it has. A cold
// dump's connection to the destination's page server is CRIU's own socket, so ferry's stall timeout can only
// watch it, and end it, from outside.
import { readFile } from 'node:fs/promises';
import type { Runner } from '../runtime/exec.ts';
import { parseTcpRows, tcpHexPort } from '../runtime/proc-net-tcp.ts';

/** The kernel's TCP state numbers the watch looks at; any other (TIME-WAIT of an earlier move, ...) is ignored. */
const ESTABLISHED = 1;
const SYN_SENT = 2;

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
  const remote = `${procAddress(address)}:${tcpHexPort(port)}`;
  return parseTcpRows(text)
    .filter((r) => r.remote === remote)
    .map((r) => ({ state: Number.parseInt(r.state, 16), txQueue: r.txQueue }));
}

/**
 * Calls `onStall` once when the connections to `address:port` stay stuck for `stallMs`: still in SYN-SENT, or
 * with bytes unacknowledged that do not change (a peer that acknowledges anything changes them; a sender that is
 * busy elsewhere has none outstanding). Only live connections count: one an earlier move left in TIME-WAIT or
 * closing says nothing about this one. `read` is the socket table (tests pass their own).
 *
 * An established connection with nothing outstanding is never a stall, whatever it waits for: between connecting
 * and sending pages CRIU seizes and inspects the tasks, and after its last page it waits for the page server's
 * final status with every byte acknowledged. A link cut during that last wait shows nothing here (TCP sends
 * nothing, so nothing goes unacknowledged): the freeze's ceiling ends that dump.
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
    const text = await read().catch(() => '');
    // stopped while the table was read: the dump has ended, a stall now would cut nothing of it
    if (stopped) return;
    const entries = parseTcpTable(text, o.address, o.port).filter(
      (e) => e.state === ESTABLISHED || e.state === SYN_SENT,
    );
    const stuck =
      entries.length > 0 &&
      entries.every((e) => e.state === SYN_SENT || (e.state === ESTABLISHED && e.txQueue > 0));
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

/**
 * Ends this namespace's TCP connections to `address:port` from outside their process (SOCK_DESTROY, through
 * `ss -K`; the kernel needs CONFIG_INET_DIAG_DESTROY): the owner's next read or write fails with ECONNABORTED, a
 * connect in SYN-SENT fails at once, and the peer (if it still hears) gets a reset. CRIU then fails on its own and
 * runs its own cleanup, which a kill would skip.
 */
export async function destroyConnections(runner: Runner, address: string, port: number): Promise<void> {
  await runner.run(['ss', '-K', '-t', '-4', 'dst', address, 'dport', '=', String(port)], {
    label: 'ss -K',
    errorCode: 'FERRY_E_EXEC',
  });
}
