// How many bytes a local TCP server has delivered to its peers, read from the kernel's tcp_info (`ss -ti`):
// post-copy's page server is CRIU's own, so the only place its progress shows is its socket.
import type { Runner } from '../runtime/exec.ts';

/**
 * Sums `bytes_acked` over the established connections whose local port is `port` (bytes the peer has
 * acknowledged, so they arrived); undefined when there is none or ss cannot tell.
 */
export async function bytesAckedOnPort(runner: Runner, port: number): Promise<number | undefined> {
  const r = await runner.run(['ss', '-tinH', 'state', 'established', `( sport = :${port} )`], {
    allowFail: true,
    timeoutMs: 5000,
    label: 'ss -ti',
  });
  return r.code === 0 ? parseBytesAcked(r.stdout) : undefined;
}

/** The sum of every `bytes_acked:N` in ss -ti's output; undefined when none is there. */
export function parseBytesAcked(text: string): number | undefined {
  let sum: number | undefined;
  for (const m of text.matchAll(/\bbytes_acked:(\d+)/g)) sum = (sum ?? 0) + Number(m[1]);
  return sum;
}
