// The rule of the /proc scan (proc-scan.ts) on unix connections in flight, which /proc shows only in part: the
// kernel's half of each connection a listener has not accepted yet. The rest (which client, what it sent) comes
// from the kernel's sock_diag, through `ss`, only when /proc shows such a connection.
import { type ProcFs, type ProcTask, type Unmovable, who } from './proc-fs.ts';
import { socketOwners } from './proc-scan-fds.ts';

/** A row of /proc/PID/net/unix: flags (listening: 0x10000), state (St), inode (0: no file), path. */
interface UnixRow {
  listening: boolean;
  st: number;
  inode: number;
  path: string;
}

function unixRows(text: string): UnixRow[] {
  const rows: UnixRow[] = [];
  for (const line of text.split('\n').slice(1)) {
    // "0000000088709264: 00000002 00000000 00010000 0001 01 5106005 /run/x.sock" (the path may hold spaces)
    const m =
      /^\s*[0-9a-f]+:\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+(\d+)(?: (.*))?$/i.exec(
        line,
      );
    if (!m) continue;
    rows.push({
      listening: (Number.parseInt(m[1]!, 16) & 0x10000) !== 0,
      st: Number.parseInt(m[3]!, 16),
      inode: Number(m[4]),
      path: m[5] ?? '',
    });
  }
  return rows;
}

/** A stream or seqpacket unix socket as `ss -H -x -a -e` prints it. */
export interface UnixDiagRow {
  state: string;
  /** Bytes sent and not yet read by the peer (udiag_wqueue); for a listener, its backlog. */
  sendQ: number;
  name: string;
  inode: number;
  /** For a listener: the inode of the client of each connection in flight, 0 for one its client has closed. */
  peers?: number[];
}

/** The stream and seqpacket rows of `ss -H -x -a -e`. */
export function parseUnixDiag(text: string): UnixDiagRow[] {
  const rows: UnixDiagRow[] = [];
  for (const line of text.split('\n')) {
    // "u_str LISTEN 1 16 /run/x.sock 5115226 * 0 <-> ino:2146983 dev:0/65024 peers: 5115227"
    const m =
      /^u_(?:str|seq)\s+(\S+)\s+\d+\s+(\d+)\s+(.+?)\s+(\d+)\s+(?:.+?)\s+\d+\s+(?:<->|-->|<--|---)(.*)$/.exec(
        line.trim(),
      );
    if (!m) continue;
    const peers = /\bpeers:((?:\s+\d+)+)/.exec(m[5]!)?.[1];
    rows.push({
      state: m[1]!,
      sendQ: Number(m[2]),
      name: m[3]!,
      inode: Number(m[4]),
      ...(peers ? { peers: peers.trim().split(/\s+/).map(Number) } : {}),
    });
  }
  return rows;
}

/**
 * Unix connections in flight: a client has connected to a listening socket of the container and the program has
 * not accepted the connection yet. CRIU moves such a connection (it connects it again at restore) except in two
 * cases, where its dump fails inside the freeze (criu/sk-unix.c): the client has already closed its end ("Found a
 * closed in-flight socket"), or it has sent data that waits in the connection ("Non-empty write queue on an
 * in-flight socket"); CRIU has no way to take data out of a connection nobody has accepted.
 * /proc/net/unix lists the kernel's half of each connection in flight (no inode, state 02, the listener's path)
 * but neither its client nor what it holds; the kernel's sock_diag does (the listener's in-flight peers, each
 * client's send queue), asked only when /proc shows a connection in flight. Where sock_diag cannot be asked,
 * every listener with a connection in flight is refused, and the reason says so.
 */
export async function inFlightUnixLimits(
  fs: ProcFs,
  tasks: ProcTask[],
  init: number,
  root = '/proc',
): Promise<Unmovable[]> {
  const rows = unixRows((await fs.readFile(`${root}/${init}/net/unix`)) ?? '');
  // SS_CONNECTING with no file: a connection the kernel made for a listener, not yet accepted
  const waiting = rows.filter((r) => r.inode === 0 && r.st === 2 && !r.listening);
  if (!waiting.length) return [];
  const owners = await socketOwners(fs, tasks, root);
  const listeners = rows.filter((r) => r.listening && owners.has(r.inode));
  if (!listeners.length) return [];
  const name = (path: string) => (path ? path : '(unnamed)');
  const diag = fs.unixSockets ? await fs.unixSockets(init) : undefined;
  const out: Unmovable[] = [];
  if (diag === undefined) {
    for (const l of listeners) {
      const n = waiting.filter((w) => w.path === l.path).length;
      if (n)
        out.push(
          who(
            owners.get(l.inode)!,
            `its listening unix socket ${name(l.path)} has ${n} connection(s) not yet accepted, and the kernel's socket diagnostics (ss) cannot be asked whether one was closed by its client or holds data: CRIU cannot dump such a connection in flight`,
          ),
        );
    }
    return out;
  }
  const diagRows = parseUnixDiag(diag);
  const byInode = new Map(diagRows.map((r) => [r.inode, r]));
  for (const l of diagRows) {
    const t = owners.get(l.inode);
    if (l.state !== 'LISTEN' || !t || !l.peers) continue;
    const closed = l.peers.filter((p) => p === 0).length;
    const queued = l.peers.map((p) => byInode.get(p)).filter((c) => c !== undefined && c.sendQ > 0);
    if (closed)
      out.push(
        who(
          t,
          `its listening unix socket ${name(l.name)} has ${closed} connection(s) not yet accepted whose client has closed its end: CRIU cannot dump a closed connection in flight`,
        ),
      );
    else if (queued.length)
      out.push(
        who(
          t,
          `its listening unix socket ${name(l.name)} has a connection not yet accepted holding ${queued[0]!.sendQ} bytes its client sent: CRIU cannot dump the data of a connection in flight`,
        ),
      );
  }
  return out;
}
