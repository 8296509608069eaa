import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseTcpTable, procAddress, watchStall } from './tcp-stall.ts';

const HEAD =
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const line = (remote: string, st: string, tx: string) =>
  `   0: 0A00000A:9C40 ${remote} ${st} ${tx}:00000000 01:00000014 00000003     0        0 1 1 0 20 4 30 10 -1\n`;

test('the socket table names 10.213.3.11:27001 by its little-endian word and hex port', () => {
  assert.equal(procAddress('10.213.3.11'), '0B03D50A');
  const text = HEAD + line('0B03D50A:6979', '01', '0001F000') + line('0B03D50A:1D2E', '01', '00000000');
  assert.deepEqual(parseTcpTable(text, '10.213.3.11', 27001), [{ state: 1, txQueue: 0x1f000 }]);
});

test('a connection whose unacknowledged bytes do not move is a stall; one that moves or has none is not', async () => {
  const watchFor = async (tables: string[], ms: number) => {
    let i = 0;
    let stalled = false;
    const w = watchStall(
      { address: '10.0.0.2', port: 27001, stallMs: 60, pollMs: 5 },
      () => {
        stalled = true;
      },
      async () => tables[Math.min(i++, tables.length - 1)]!,
    );
    await new Promise((r) => setTimeout(r, ms));
    w.stop();
    return stalled;
  };
  const remote = `${procAddress('10.0.0.2')}:6979`;
  assert.equal(await watchFor([HEAD + line(remote, '01', '00010000')], 200), true, 'stuck bytes');
  assert.equal(await watchFor([HEAD + line(remote, '02', '00000001')], 200), true, 'stuck in SYN-SENT');
  assert.equal(await watchFor([HEAD + line(remote, '01', '00000000')], 200), false, 'nothing outstanding');
  assert.equal(await watchFor([HEAD], 200), false, 'no connection');
  const moving = Array.from(
    { length: 100 },
    (_, k) => HEAD + line(remote, '01', (k + 1).toString(16).padStart(8, '0')),
  );
  assert.equal(await watchFor(moving, 200), false, 'acknowledgements arrive');
});
