import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ExecOptions, ExecResult, Runner } from '../runtime/exec.ts';
import { parseTbfStats, TrafficHold } from './hold.ts';

const SHOW = `qdisc tbf 8001: root refcnt 3 rate 8bit burst 1514b lat 2.28e+03s
 Sent 1514 bytes 1 pkt (dropped 2, overlimits 15 requeues 0)
 backlog 1330b 15p requeues 0
`;

test('the figures of a hold are read from tc -s', () => {
  assert.deepEqual(parseTbfStats(SHOW), {
    bytes: 1514,
    packets: 1,
    dropped: 2,
    backlogBytes: 1330,
    backlogPackets: 15,
  });
  assert.equal(parseTbfStats('qdisc noqueue 0: root refcnt 2\n'), undefined);
});

test('a hold is a tbf at 8 bit/s whose bucket holds one full frame of the device', async () => {
  const calls: string[][] = [];
  const runner: Runner = {
    async run(argv: string[], _o?: ExecOptions): Promise<ExecResult> {
      calls.push(argv);
      const stdout = argv.includes('link') ? '5: fv0: <BROADCAST> mtu 9000 qdisc noqueue' : '';
      return { argv, code: 0, signal: null, stdout, stderr: '', ms: 1 };
    },
  };
  const hold = new TrafficHold(runner);
  // (no tbf to read back: prime() gives up, and removes nothing itself: the caller drops the hold)
  await assert.rejects(hold.prime('fv0'), /could not be primed/);
  const tbf = calls.find((c) => c.includes('tbf'));
  assert.deepEqual(tbf?.slice(0, 12), [
    'tc',
    'qdisc',
    'replace',
    'dev',
    'fv0',
    'root',
    'tbf',
    'rate',
    '8bit',
    'burst',
    '9014',
    'limit',
  ]);
});
