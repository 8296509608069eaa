// The SDN experiment of the paper on Docker checkpoint/restore, on a testbed: an OpenFlow controller (an os-ken
// learning switch) in a ferry container, two Open vSwitch bridges in the testbed's client namespace connected to
// it, and four simulated hosts behind them. The controller is migrated back and forth with the strategies asked
// for, while
// - h1 sends unicast datagrams to h3 every 10 ms through the flows the controller installed (none may be lost),
// - h2 broadcasts a datagram every 20 ms to h4: broadcasts never get a flow, so each one goes to the controller
//   as a packet-in on both bridges and reaches h4 only by its packet-outs; the longest gap at h4 during a move is
//   the downtime as the switches saw it.
// After each move the flows to h4 are deleted and h2 sends to h4 again: a new flow must appear on both bridges
// (the moved controller handles new packet-ins). Each bridge must stay connected: OVS's log shows no new
// connection attempt and `sec_since_connect` is never reset.
// Used by the docker-paper suite and by the integration test (test/integration/sdn.test.ts).
import type { ClusterClients } from '../../src/api/cluster-clients.ts';
import type { MigrationOptions } from '../../src/api/types.ts';
import { type BackgroundProcess, type Runner, startBackground } from '../../src/runtime/exec.ts';
import type { TestbedState } from '../../src/testbed/testbed.ts';
import { type BridgeStatus, SdnFabric } from '../../src/workloads/sdn-fabric.ts';
import {
  controllerArgs,
  longestGap,
  lost,
  OPENFLOW_PORT,
  parseReceived,
  TRAFFIC_PY,
} from '../../src/workloads/sdn-programs.ts';
import { sleep, waitForPort } from '../common.ts';

export interface SdnMove {
  strategy: string;
  from: string;
  to: string;
  ok: boolean;
  note?: string;
  freezeMs: number;
  totalMs: number;
  /** Longest gap between broadcasts arriving at h4 (each one two packet-ins and two packet-outs) during the move. */
  packetInGapMs: number;
  /** Every bridge connected after the move, with no new connection attempt and a `sec_since_connect` not reset. */
  stayedConnected: boolean;
  /** When a bridge did not stay connected: each bridge's state before and after, as OVS reported it. */
  detail?: string;
  /** New connection attempts in ovs-vswitchd's log during the move, over all bridges. */
  reconnects: number;
  /** After the move: the flows to h4 deleted, h2 sends to h4; ms until both bridges have a new flow (NaN: never). */
  newFlowMs: number;
}

export interface SdnResult {
  moves: SdnMove[];
  unicast: { sent: number; lost: number };
  /** The longest gap between broadcasts over a quiet stretch before the first move (the baseline). */
  quietGapMs: number;
  disconnects: string[];
}

export interface SdnScenarioOptions {
  ctx: ClusterClients;
  tb: TestbedState;
  runner: Runner;
  /** 2-6 characters [a-z0-9]: the fabric's names. */
  prefix: string;
  /** The controller's container name and address on the testbed's LAN. */
  name: string;
  ip: string;
  /** One migration per entry, alternating between hosts a and b, starting on a. */
  strategies: string[];
  /** OVS's inactivity probe, ms (default: OVS's 5 s); see FabricOptions. */
  inactivityProbeMs?: number;
  /**
   * A smoke run: a short quiet stretch and short pauses (the baseline and the windows after each move then show
   * that they are measured, not what they measure).
   */
  brief?: boolean;
  log: (m: string) => void;
}

const UNICAST_PORT = 7101;
const BROADCAST_PORT = 7102;
const QUIET_MS = 3000;
const SETTLE_MS = 1500;
/** o.brief: the quiet stretch, the settling after a move, and the pauses for the traffic's processes. */
const BRIEF = { quietMs: 500, settleMs: 300, pauseMs: 200 };

export async function sdnScenario(o: SdnScenarioOptions): Promise<SdnResult> {
  const { ctx, runner, log } = o;
  const { quietMs, settleMs, pauseMs } = o.brief
    ? BRIEF
    : { quietMs: QUIET_MS, settleMs: SETTLE_MS, pauseMs: 1000 };
  const fabric = new SdnFabric(runner, {
    prefix: o.prefix,
    switchNetns: o.tb.client.netns,
    controller: `${o.ip}:${OPENFLOW_PORT}`,
    ...(o.inactivityProbeMs !== undefined ? { inactivityProbeMs: o.inactivityProbeMs } : {}),
  });
  const [h1, h2, h3, h4] = fabric.hosts as [
    (typeof fabric.hosts)[0],
    (typeof fabric.hosts)[0],
    (typeof fabric.hosts)[0],
    (typeof fabric.hosts)[0],
  ];
  const py = (netns: string, ...args: string[]): BackgroundProcess =>
    startBackground(['ip', 'netns', 'exec', netns, '/usr/bin/python3', '-u', '-c', TRAFFIC_PY, ...args]);
  const procs: BackgroundProcess[] = [];
  let host = 'a';
  try {
    await ctx.client('a').create({ name: o.name, command: controllerArgs(), net: 'own', ip: o.ip });
    await waitForPort(o.ip, OPENFLOW_PORT, 120_000);
    await fabric.up();
    await fabric.waitConnected();
    log(`switches ${fabric.bridges.join(', ')} connected to the controller at ${o.ip}`);

    const recvUni = py(h3.netns, 'recv', String(UNICAST_PORT));
    const recvBc = py(h4.netns, 'recv', String(BROADCAST_PORT));
    await sleep(pauseMs);
    const sendUni = py(h1.netns, 'send', h3.ip, String(UNICAST_PORT), '10');
    const sendBc = py(h2.netns, 'send', '10.213.0.255', String(BROADCAST_PORT), '20');
    procs.push(sendUni, sendBc, recvUni, recvBc);
    // the unicast flows are in place once h1's first datagrams (and h3's ARP reply) went through the controller
    const deadline = performance.now() + 30_000;
    while (
      (await fabric.flowsTo(fabric.bridges[1]!, h3.mac)) < 1 ||
      (await fabric.flowsTo(fabric.bridges[0]!, h3.mac)) < 1
    ) {
      if (performance.now() > deadline) throw new Error('no flow to h3 was installed within 30 s');
      await sleep(200);
    }
    const quietFrom = Date.now();
    await sleep(quietMs);
    const quietTo = Date.now();
    const unicastFrom = quietFrom;

    const windows: { from: number; to: number }[] = [];
    const moves: SdnMove[] = [];
    for (const strategy of o.strategies) {
      const to = host === 'a' ? 'b' : 'a';
      const before = await fabric.status();
      const attemptsBefore = await fabric.connectAttempts();
      const lostBefore = (await fabric.disconnectLines()).length;
      const m: SdnMove = {
        strategy,
        from: host,
        to,
        ok: false,
        freezeMs: Number.NaN,
        totalMs: Number.NaN,
        packetInGapMs: Number.NaN,
        stayedConnected: false,
        reconnects: 0,
        newFlowMs: Number.NaN,
      };
      const from = Date.now();
      const t0 = performance.now();
      const rep = await ctx
        .client(host)
        .migrate(o.name, { to: ctx.host(to), strategy: strategy as MigrationOptions['strategy'] });
      m.totalMs = performance.now() - t0;
      m.freezeMs = rep.freezeMs;
      m.ok = rep.ok;
      if (rep.ok) host = to;
      else m.note = rep.error ? `${rep.error.code}: ${rep.error.message}` : 'the migration failed';
      await sleep(settleMs);
      windows.push({ from, to: Date.now() });
      const attemptsAfter = await fabric.connectAttempts();
      // A bridge kept its connection when it is connected and its connection is not younger than before the move.
      // ovs-vswitchd writes `is_connected` and `sec_since_connect` into its database only when connectivity changes,
      // so both can be stale: `sec_since_connect` may read the same value as before (not lower: a new connection
      // restarts it), and "not connected" may linger while a controller slowed by the move answers OVS's echo. With no
      // new connection attempt in the log the connection never dropped: look again for a few seconds.
      const kept = (s: BridgeStatus) => {
        const b = before.find((x) => x.bridge === s.bridge);
        return s.connected && b !== undefined && s.secSinceConnect >= b.secSinceConnect;
      };
      let after = await fabric.status();
      for (let i = 0; i < 10 && !(after.length === fabric.bridges.length && after.every(kept)); i++) {
        if (fabric.bridges.some((b) => (attemptsAfter[b] ?? 0) !== (attemptsBefore[b] ?? 0))) break;
        await sleep(500);
        after = await fabric.status();
      }
      m.reconnects = fabric.bridges.reduce(
        (n, b) => n + (attemptsAfter[b] ?? 0) - (attemptsBefore[b] ?? 0),
        0,
      );
      m.stayedConnected = m.reconnects === 0 && after.length === fabric.bridges.length && after.every(kept);
      if (!m.stayedConnected)
        m.detail = after
          .map((s) => {
            const b = before.find((x) => x.bridge === s.bridge);
            return `${s.bridge}: connected ${s.connected}, sec_since_connect ${b?.secSinceConnect ?? '?'} -> ${s.secSinceConnect}`;
          })
          .join('; ');
      m.newFlowMs = await newFlow(fabric, py, h2.netns, h4);
      // OVS's own words for a lost connection (an inactivity probe unanswered, a reset), for the log
      for (const line of (await fabric.disconnectLines()).slice(lostBefore)) log(`ovs-vswitchd: ${line}`);
      if (m.ok && !m.stayedConnected) {
        m.ok = false;
        m.note = `a switch lost its controller (${m.reconnects} new connection attempts; ${m.detail ?? ''})`;
      } else if (m.ok && !Number.isFinite(m.newFlowMs)) {
        m.ok = false;
        m.note = 'no new flow was installed after the move';
      }
      moves.push(m);
      log(
        `move ${moves.length}/${o.strategies.length} ${strategy} ${m.from}→${m.to}: freeze ${Math.round(m.freezeMs)} ms, ` +
          `connected ${m.stayedConnected ? 'yes' : 'NO'}, new flow after ${Math.round(m.newFlowMs)} ms` +
          `${m.ok ? '' : ` FAILED: ${m.note ?? ''}`}`,
      );
      if (!rep.ok) break;
    }

    const sent = JSON.parse((await sendUni.stop()).stdout.trim().split('\n').pop() ?? '{}') as {
      sent: number;
    };
    await sendBc.stop();
    await sleep(pauseMs);
    const uni = parseReceived((await recvUni.stop()).stdout);
    const bc = parseReceived((await recvBc.stop()).stdout);
    procs.length = 0;
    // unicast counted from the first datagram after the flows were in place
    const firstIdx = uni.t.findIndex((t) => t >= unicastFrom);
    const firstSeq = firstIdx >= 0 ? uni.seq[firstIdx]! : 0;
    const unicast = {
      sent: sent.sent - firstSeq,
      lost: lost(
        uni.seq.filter((s) => s >= firstSeq).map((s) => s - firstSeq),
        sent.sent - firstSeq,
      ),
    };
    for (const [i, w] of windows.entries()) moves[i]!.packetInGapMs = longestGap(bc.t, w.from, w.to);
    return {
      moves,
      unicast,
      quietGapMs: longestGap(bc.t, quietFrom, quietTo),
      disconnects: await fabric.disconnectLines(),
    };
  } finally {
    for (const p of procs) await p.stop('SIGKILL').catch(() => {});
    await fabric.down().catch((e: Error) => log(`fabric down: ${e.message}`));
    for (const h of ['a', 'b'])
      await ctx
        .client(h)
        .remove(o.name)
        .catch(() => {});
  }
}

/** Deletes the flows to `dst` and has `netns` send to it until both bridges have a new one; ms it took (NaN: none in 20 s). */
async function newFlow(
  fabric: SdnFabric,
  py: (netns: string, ...args: string[]) => BackgroundProcess,
  netns: string,
  dst: { ip: string; mac: string },
): Promise<number> {
  await fabric.forget(dst.mac, [netns]);
  const t0 = performance.now();
  // to a port nobody listens on: the datagram only has to cross the switches
  const sender = py(netns, 'send', dst.ip, '7109', '100');
  try {
    while (performance.now() - t0 < 20_000) {
      const counts = await Promise.all(fabric.bridges.map((b) => fabric.flowsTo(b, dst.mac)));
      if (counts.every((c) => c > 0)) return performance.now() - t0;
      await sleep(50);
    }
    return Number.NaN;
  } finally {
    await sender.stop();
  }
}
