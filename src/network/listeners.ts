// Who listens on a TCP port of this network namespace, read from the kernel's socket tables and a process's file
// descriptors (no process started). "Something listens on the port" is not "the process ferry started listens
// there": another program may hold the port, and a check by port alone would take its socket for ours.
import { readdir, readFile, readlink } from 'node:fs/promises';
import { parseTcpRows, tcpHexPort } from '../runtime/proc-net-tcp.ts';

/** The inodes of the listening sockets on local `port` in a /proc/net/tcp or tcp6 text. */
export function parseListeners(text: string, port: number): string[] {
  const hex = `:${tcpHexPort(port)}`;
  return parseTcpRows(text)
    .filter((r) => r.local.endsWith(hex) && r.state === TCP_LISTEN && r.inode > 0)
    .map((r) => String(r.inode));
}

const TCP_LISTEN = '0A';

/** The inodes of this namespace's sockets listening on TCP `port` (IPv4 and IPv6); empty when none. */
export async function listeningInodes(port: number): Promise<string[]> {
  const out: string[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    out.push(...parseListeners(await readFile(table, 'utf8').catch(() => ''), port));
  }
  return out;
}

/** Whether process `pid` listens on TCP `port` itself: one of the port's listening sockets is among its fds. */
export async function listensItself(pid: number, port: number): Promise<boolean> {
  const inodes = new Set((await listeningInodes(port)).map((i) => `socket:[${i}]`));
  if (inodes.size === 0) return false;
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => []);
  for (const fd of fds) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    if (inodes.has(target)) return true;
  }
  return false;
}
