// The TCP congestion control of the testbed's simulated hosts. A new network namespace takes the machine's default,
// and a machine may run BBR by default; over the testbed's links (veth pairs through bridges, no wire) BBR keeps
// retransmitting segments that were never lost: a 1 GiB post-copy moved 2106 segments twice (1721 of them reported
// back as duplicates), stalled 40-70 ms about ten times a second and ran at 250-400 MB/s, where reno moved the same
// pages at 1.0-1.6 GB/s with no retransmission at all (cubic measured the same as reno). A stock Linux host runs
// cubic, so the testbed's hosts and client get cubic when a namespace may take it (the machine's
// net.ipv4.tcp_allowed_congestion_control), else reno, which every namespace may; a machine whose default is
// already cubic or reno is left as it is. `UpOptions.congestionControl` picks another one (bbr, to measure with it).
import { readFile } from 'node:fs/promises';
import { FerryError } from '../core/errors.ts';
import type { Runner } from '../runtime/exec.ts';

const STOCK = ['cubic', 'reno'];

/** What the testbed's namespaces get: `wanted`, else the machine's default when stock, else cubic or reno. */
export async function testbedCongestionControl(
  wanted: string | undefined,
  read: (path: string) => Promise<string> = (p) => readFile(p, 'utf8'),
): Promise<string | undefined> {
  if (wanted !== undefined) {
    if (!/^[a-z0-9_]{1,15}$/.test(wanted))
      throw new FerryError('FERRY_E_INPUT_ARGS', `congestion control ${JSON.stringify(wanted)}: not a name`, {
        phase: 'testbed',
      });
    return wanted;
  }
  const current = (await read('/proc/sys/net/ipv4/tcp_congestion_control').catch(() => '')).trim();
  if (current === '' || STOCK.includes(current)) return undefined;
  const allowed = (await read('/proc/sys/net/ipv4/tcp_allowed_congestion_control').catch(() => '')).split(
    /\s+/,
  );
  return allowed.includes('cubic') ? 'cubic' : 'reno';
}

/** Sets a namespace's default congestion control (the sockets opened there from now on). */
export async function setCongestionControl(runner: Runner, netns: string, name: string): Promise<void> {
  await runner.run(
    ['ip', 'netns', 'exec', netns, 'sysctl', '-q', '-w', `net.ipv4.tcp_congestion_control=${name}`],
    {
      errorCode: 'FERRY_E_TESTBED',
      phase: 'testbed',
    },
  );
}
