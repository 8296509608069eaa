// The programs of the SDN experiment (a paper on Docker checkpoint/restore migrated an OpenFlow controller while
// its switches stayed connected): an OpenFlow 1.3 learning switch for os-ken (Debian's python3-os-ken ships no
// sample apps), and a UDP sender/receiver pair that the simulated hosts behind the switches run.

/**
 * A learning switch for OpenFlow 1.3, as an os-ken app. A table-miss entry sends every unknown packet to the
 * controller; a packet whose destination has been learned installs a flow (no timeouts, so installed flows keep
 * forwarding whatever happens to the controller), anything else is flooded by a packet-out and never gets a flow
 * (broadcasts therefore always take the packet-in path, which is what the experiment times).
 */
export const LEARNING_SWITCH_PY = `from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import ethernet, packet
from os_ken.ofproto import ofproto_v1_3


class LearningSwitch13(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.macs = {}

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def features(self, ev):
        dp = ev.msg.datapath
        p, o = dp.ofproto_parser, dp.ofproto
        self.flow(dp, 0, p.OFPMatch(), [p.OFPActionOutput(o.OFPP_CONTROLLER, o.OFPCML_NO_BUFFER)])

    def flow(self, dp, prio, match, actions):
        p, o = dp.ofproto_parser, dp.ofproto
        inst = [p.OFPInstructionActions(o.OFPIT_APPLY_ACTIONS, actions)]
        dp.send_msg(p.OFPFlowMod(datapath=dp, priority=prio, match=match, instructions=inst))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        p, o = dp.ofproto_parser, dp.ofproto
        port = msg.match['in_port']
        eth = packet.Packet(msg.data).get_protocol(ethernet.ethernet)
        if eth is None:
            return
        table = self.macs.setdefault(dp.id, {})
        table[eth.src] = port
        out = table.get(eth.dst, o.OFPP_FLOOD)
        actions = [p.OFPActionOutput(out)]
        if out != o.OFPP_FLOOD:
            self.flow(dp, 1, p.OFPMatch(in_port=port, eth_dst=eth.dst, eth_src=eth.src), actions)
        data = msg.data if msg.buffer_id == o.OFP_NO_BUFFER else None
        dp.send_msg(p.OFPPacketOut(datapath=dp, buffer_id=msg.buffer_id, in_port=port, actions=actions, data=data))
`;

/** The controller's OpenFlow port. */
export const OPENFLOW_PORT = 6653;

/**
 * argv of the controller in a container: the container sees the host's /usr read-only but has a /tmp of its own,
 * so the app is written there first and os-ken's manager is exec'd on it (its own process: what is migrated).
 */
export function controllerArgs(port = OPENFLOW_PORT): string[] {
  const boot = [
    'import os, sys',
    "open('/tmp/learning_switch.py', 'w').write(sys.argv[1])",
    "os.execv('/usr/bin/python3', ['/usr/bin/python3', '-m', 'os_ken.cmd.manager', '--ofp-tcp-listen-port', sys.argv[2], '/tmp/learning_switch.py'])",
  ].join('\n');
  return ['/usr/bin/python3', '-c', boot, LEARNING_SWITCH_PY, String(port)];
}

/**
 * `send ADDRESS PORT INTERVAL_MS`: one datagram every interval (a sequence number), broadcast allowed, until
 * SIGINT; then prints `{"sent": N}`. `recv PORT`: takes datagrams until SIGINT, then prints
 * `{"t": [arrival ms since the epoch...], "seq": [...]}`, read by `parseReceived`.
 */
export const TRAFFIC_PY = `import json, socket, sys, time
mode = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if mode == 'send':
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    dst = (sys.argv[2], int(sys.argv[3]))
    step = float(sys.argv[4]) / 1000
    n = 0
    nxt = time.monotonic()
    try:
        while True:
            try:
                s.sendto(str(n).encode(), dst)
                n += 1
            except OSError:
                pass
            nxt += step
            time.sleep(max(0, nxt - time.monotonic()))
    except KeyboardInterrupt:
        print(json.dumps({'sent': n}), flush=True)
else:
    s.bind(('0.0.0.0', int(sys.argv[2])))
    t, seq = [], []
    try:
        while True:
            d = s.recv(64)
            t.append(round(time.time() * 1000, 1))
            try:
                seq.append(int(d))
            except ValueError:
                seq.append(-1)
    except KeyboardInterrupt:
        print(json.dumps({'t': t, 'seq': seq}), flush=True)
`;

export interface Received {
  /** Arrival times, ms since the epoch. */
  t: number[];
  seq: number[];
}

export function parseReceived(stdout: string): Received {
  const line = stdout.trim().split('\n').pop() ?? '';
  const r = JSON.parse(line) as Received;
  if (!Array.isArray(r.t) || !Array.isArray(r.seq))
    throw new Error(`not a receiver's summary: ${line.slice(0, 200)}`);
  return r;
}

/** The longest gap between arrivals within [fromMs, toMs] (its edges count as arrivals: a silent window is one gap). */
export function longestGap(t: number[], fromMs: number, toMs: number): number {
  let last = fromMs;
  let gap = 0;
  for (const x of t) {
    if (x < fromMs) continue;
    if (x > toMs) break;
    gap = Math.max(gap, x - last);
    last = x;
  }
  return Math.max(gap, toMs - last);
}

/** How many of 0..sent-1 never arrived. */
export function lost(seq: number[], sent: number): number {
  const got = new Set(seq.filter((n) => n >= 0 && n < sent));
  return sent - got.size;
}
