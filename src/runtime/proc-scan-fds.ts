// The rules of the /proc scan (proc-scan.ts) on what a container's tasks hold open: a corked UDP socket, a
// loopback TCP connection with full buffers, connections in flight on a listening TCP socket, a lease on a file
// with content (unix sockets: proc-scan-unix.ts). Each is one of CRIU's refusals, or a step of ferry's own that would break the container, read from
// /proc before anything is frozen.
import { type ProcFs, type ProcTask, type Unmovable, who } from './proc-fs.ts';
import { parseTcpRows } from './proc-net-tcp.ts';

/** Socket inode -> the container's tasks holding it, from /proc/PID/fd. */
export async function socketOwners(
  fs: ProcFs,
  tasks: ProcTask[],
  root = '/proc',
): Promise<Map<number, ProcTask>> {
  const out = new Map<number, ProcTask>();
  for (const t of tasks) {
    for (const fd of await fs.readdir(`${root}/${t.pid}/fd`)) {
      const m = /^socket:\[(\d+)\]$/.exec((await fs.readlink(`${root}/${t.pid}/fd/${fd}`)) ?? '');
      if (m && !out.has(Number(m[1]))) out.set(Number(m[1]), t);
    }
  }
  return out;
}

/** inode -> bytes in the send queue, for the UDP sockets of a network namespace (/proc/PID/net/udp*). */
export async function udpSendQueues(fs: ProcFs, pid: number, root = '/proc'): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const f of ['udp', 'udp6', 'udplite', 'udplite6']) {
    const text = await fs.readFile(`${root}/${pid}/net/${f}`);
    for (const line of (text ?? '').split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10) continue;
      const tx = Number.parseInt(c[4]!.split(':')[0]!, 16);
      out.set(Number(c[9]), tx);
    }
  }
  return out;
}

/**
 * Corked UDP (criu/sk-inet.c: "Can't dump corked dgram socket"). /proc does not show UDP_CORK; it shows the
 * send queue, which only a cork (or MSG_MORE) keeps non-empty: an uncorked datagram leaves at once. The queue
 * is read twice, `resampleMs` apart, so that a datagram on its way out is not taken for a cork.
 */
export async function corkedUdpLimits(
  fs: ProcFs,
  tasks: ProcTask[],
  init: number,
  resampleMs: number,
  root = '/proc',
): Promise<Unmovable[]> {
  const first = await udpSendQueues(fs, init, root);
  const queued = [...first].filter(([, tx]) => tx > 0);
  if (!queued.length) return [];
  const owners = await socketOwners(fs, tasks, root);
  if (!queued.some(([ino]) => owners.has(ino))) return [];
  await new Promise((r) => setTimeout(r, resampleMs));
  const second = await udpSendQueues(fs, init, root);
  const out: Unmovable[] = [];
  for (const [ino, tx] of queued) {
    const t = owners.get(ino);
    if (t && second.get(ino) === tx)
      out.push(
        who(
          t,
          `its UDP socket (inode ${ino}) holds ${tx} bytes held back by UDP_CORK: CRIU cannot dump a corked socket`,
        ),
      );
  }
  return out;
}

/**
 * `maj:min:ino` (device numbers in hex, as /proc/locks prints them) of every lease a read would break: a write
 * lease (`write`) or any lease already being broken (`breaking`).
 */
export function breakableLeases(locks: string): Map<string, 'write' | 'breaking'> {
  const out = new Map<string, 'write' | 'breaking'>();
  for (const line of locks.split('\n')) {
    // "3: LEASE  ACTIVE    WRITE 1234 fd:01:5678 0 EOF"; "->" lines are waiters, not holders
    const m =
      /^\d+:\s+LEASE\s+(ACTIVE|BREAKING)\s+(READ|WRITE|UNLCK)\s+\S+\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/.exec(
        line,
      );
    if (!m) continue;
    // an active read lease lets readers open the file; a write lease, or any lease being broken, does not
    if (m[1] === 'ACTIVE' && m[2] === 'READ') continue;
    out.set(
      `${Number.parseInt(m[3]!, 16)}:${Number.parseInt(m[4]!, 16)}:${m[5]}`,
      m[1] === 'BREAKING' ? 'breaking' : 'write',
    );
  }
  return out;
}

/** glibc's major()/minor() of a device number, as in /proc/locks. */
function devKey(dev: bigint, ino: bigint): string {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n);
  const minor = (dev & 0xffn) | ((dev >> 12n) & 0xffffff00n);
  return `${major}:${minor}:${ino}`;
}

/**
 * Leases (fcntl F_SETLEASE) CRIU moves (--file-locks) but the migration would break:
 * - a write lease on a file with content: ferry copies the rootfs by reading its files, and opening a file under
 *   a write lease breaks the lease (its holder gets SIGIO, whose default action kills it, and the open waits up to
 *   the kernel's lease-break-time). An empty file is sent without being opened, so it does not stand in the way.
 * - a lease being broken (a conflicting open has started its break): CRIU restores it by breaking it once more,
 *   which signals its holder a second time, a lease-break signal for a break it has already been told of. CRIU
 *   does the same without ferry (zdtm's file_lease02 fails a dump and restore on one host).
 */
export async function leaseLimits(fs: ProcFs, tasks: ProcTask[], root = '/proc'): Promise<Unmovable[]> {
  if (!fs.stat) return [];
  const leased = breakableLeases((await fs.readFile(`${root}/locks`)) ?? '');
  if (!leased.size) return [];
  const out: Unmovable[] = [];
  const named = new Set<string>();
  for (const t of tasks) {
    for (const fd of await fs.readdir(`${root}/${t.pid}/fd`)) {
      const link = (await fs.readlink(`${root}/${t.pid}/fd/${fd}`)) ?? '';
      if (!link.startsWith('/')) continue; // sockets, pipes, anonymous inodes
      const st = await fs.stat(`${root}/${t.pid}/fd/${fd}`);
      if (!st?.isFile) continue;
      const key = devKey(st.dev, st.ino);
      const lease = leased.get(key);
      if (!lease || named.has(key)) continue;
      if (lease === 'breaking') {
        named.add(key);
        out.push(
          who(
            t,
            `its lease on ${link} is being broken: CRIU restores such a lease by breaking it again, which signals the process a second time`,
          ),
        );
      } else if (st.size > 0n) {
        named.add(key);
        out.push(
          who(
            t,
            `it holds a write lease on ${link} (${st.size} bytes): ferry copies the rootfs by reading its files, and opening a leased file breaks the lease`,
          ),
        );
      }
    }
  }
  return out;
}

/** Bytes waiting in a loopback connection's receive queue from which the rule below refuses (1 MiB). */
export const LOOPBACK_TCP_QUEUE_LIMIT = 1 << 20;

/** An address of /proc/net/tcp ("0100007F:22B8") as people write it ("127.0.0.1:8888"). */
export function showTcpAddress(hex: string): string {
  const [addr = '', port = '0'] = hex.split(':');
  const words = (addr.match(/.{8}/g) ?? []).map((w) =>
    (w.match(/../g) ?? []).reverse().map((b) => Number.parseInt(b, 16)),
  );
  const p = Number.parseInt(port, 16);
  if (words.length === 1) return `${words[0]!.join('.')}:${p}`;
  const bytes = words.flat();
  // an IPv4 address mapped into IPv6 (::ffff:a.b.c.d) as IPv4
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff)
    return `${bytes.slice(12).join('.')}:${p}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return `[${groups.join(':')}]:${p}`;
}

/** A row of /proc/PID/net/tcp or tcp6: addresses as printed, state, receive queue, inode. */
interface TcpRow {
  local: string;
  remote: string;
  state: string;
  /** Bytes unread; for a listening socket, the connections waiting to be accepted. */
  rx: number;
  inode: number;
}

async function tcpRows(fs: ProcFs, init: number, root: string): Promise<TcpRow[]> {
  const rows: TcpRow[] = [];
  for (const f of ['tcp', 'tcp6']) {
    const text = await fs.readFile(`${root}/${init}/net/${f}`);
    for (const r of parseTcpRows(text ?? ''))
      rows.push({ local: r.local, remote: r.remote, state: r.state, rx: r.rxQueue, inode: r.inode });
  }
  return rows;
}

const TCP_LISTEN = '0A';

/**
 * A TCP connection with both ends in the container (over loopback or to its own address) and a receive queue
 * of at least LOOPBACK_TCP_QUEUE_LIMIT bytes: a reader that has stopped reading, its peer's send queue full
 * behind it (zdtm's socket-tcpbuf-local). CRIU dumps and restores both ends (--tcp-established), but a restored
 * socket starts with the kernel's default MSS of 536 bytes (524 of data beside the timestamp option: CRIU sets
 * the MSS clamp after the repair-mode connect has already sized the segments), so the buffers that were full of
 * large segments now take small ones at several times the memory each: the receiver drops them, and both ends wait on each other's window for minutes.
 * Measured after such a restore: the reader's restored queue is over its receive buffer at once (8392648 bytes
 * held against 8388608), it drops every segment, and both ends back off (7 backoffs, a 29 s timeout) while the
 * program waits on its peer. CRIU alone (`criu dump` and `restore --tcp-established` on one host, no runc, no
 * ferry) stalls the same way: 7 of 7 tries, with the namespace CRIU made or the one it kept. ferry's lock, held
 * until the commit, is not the cause: letting loopback through it at CRIU's post-restore step, where CRIU lifts
 * its own lock, did not prevent it. Both ends are in the same namespace's table: a connection whose reversed
 * address pair is also listed is one of them.
 */
export async function loopbackTcpLimits(
  fs: ProcFs,
  tasks: ProcTask[],
  init: number,
  root = '/proc',
): Promise<Unmovable[]> {
  const rows = (await tcpRows(fs, init, root)).filter((r) => r.state !== TCP_LISTEN);
  const full = rows.filter((r) => r.rx >= LOOPBACK_TCP_QUEUE_LIMIT);
  if (!full.length) return [];
  const pairs = new Set(rows.map((r) => `${r.local}-${r.remote}`));
  const owners = await socketOwners(fs, tasks, root);
  const out: Unmovable[] = [];
  for (const r of full) {
    const t = owners.get(r.inode);
    if (!t || !pairs.has(`${r.remote}-${r.local}`)) continue;
    out.push(
      who(
        t,
        `its TCP connection ${showTcpAddress(r.local)} <-> ${showTcpAddress(r.remote)} has both ends in the container and ${r.rx} bytes unread: CRIU restores such a connection with full buffers stalled (a restored socket starts with a 536-byte MSS)`,
      ),
    );
  }
  return out;
}

/**
 * A listening TCP socket with connections the kernel has completed but the program has not accepted yet
 * (criu/sk-inet.c: "In-flight connection"; /proc/net/tcp gives a listening socket's accept backlog as its
 * receive queue). CRIU drops them only when told to (--skip-in-flight), which ferry does not pass: each client
 * believes it is connected. Usually a moment's state: the migration can be tried again.
 */
export async function inFlightTcpLimits(
  fs: ProcFs,
  tasks: ProcTask[],
  init: number,
  root = '/proc',
): Promise<Unmovable[]> {
  const waiting = (await tcpRows(fs, init, root)).filter((r) => r.state === TCP_LISTEN && r.rx > 0);
  if (!waiting.length) return [];
  const owners = await socketOwners(fs, tasks, root);
  const out: Unmovable[] = [];
  for (const r of waiting) {
    const t = owners.get(r.inode);
    if (t)
      out.push({
        ...who(
          t,
          `its listening TCP socket ${showTcpAddress(r.local)} has ${r.rx} connection(s) not yet accepted: CRIU cannot dump connections in flight (--skip-in-flight drops them)`,
        ),
        rule: 'tcp-in-flight',
      });
  }
  return out;
}
