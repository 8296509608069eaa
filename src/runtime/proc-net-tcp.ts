// The kernel's TCP socket tables (/proc/net/tcp, tcp6, or a process's /proc/PID/net/tcp), parsed once for every
// reader: the freeze's checks on a container's sockets, who listens on a port, and a dump's stalled connection.

/** One row: addresses as the kernel prints them ("0100007F:22B8"), state in hex ("0A" is LISTEN), queues, inode. */
export interface TcpRow {
  local: string;
  remote: string;
  state: string;
  /** Bytes sent and not acknowledged yet. */
  txQueue: number;
  /** Bytes unread; for a listening socket, the connections waiting to be accepted. */
  rxQueue: number;
  inode: number;
}

/** The rows of a socket table's text (its header line skipped, short lines ignored). */
export function parseTcpRows(text: string): TcpRow[] {
  const rows: TcpRow[] = [];
  for (const line of text.split('\n').slice(1)) {
    // sl, local address, remote address, state, tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout, inode
    const c = line.trim().split(/\s+/);
    if (c.length < 10) continue;
    const [tx = '0', rx = '0'] = c[4]!.split(':');
    rows.push({
      local: c[1]!,
      remote: c[2]!,
      state: c[3]!,
      txQueue: Number.parseInt(tx, 16) || 0,
      rxQueue: Number.parseInt(rx, 16) || 0,
      inode: Number(c[9]),
    });
  }
  return rows;
}

/** A port as the tables print it after the address: 4 upper-case hex digits. */
export function tcpHexPort(port: number): string {
  return port.toString(16).toUpperCase().padStart(4, '0');
}
