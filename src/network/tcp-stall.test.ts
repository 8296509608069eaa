import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { test } from 'node:test';
import { ProcessRunner } from '../runtime/exec.ts';
import { destroyConnections, parseTcpTable, procAddress, watchStall } from './tcp-stall.ts';

const HEAD =
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const line = (remote: string, st: string, tx: string) =>
  `   0: 0A00000A:9C40 ${remote} ${st} ${tx}:00000000 01:00000014 00000003     0        0 1 1 0 20 4 30 10 -1\n`;

test('the socket table names 10.213.3.11:27001 by its little-endian word and hex port', () => {
  assert.equal(procAddress('10.213.3.11'), '0B03D50A');
  const text = HEAD + line('0B03D50A:6979', '01', '0001F000') + line('0B03D50A:1D2E', '01', '00000000');
  assert.deepEqual(parseTcpTable(text, '10.213.3.11', 27001), [{ state: 1, txQueue: 0x1f000 }]);
});

/** Whether a watch over these successive tables (the last one repeated) reports a stall within `ms`. */
async function watchFor(tables: string[], ms: number): Promise<boolean> {
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
}

test('a connection whose unacknowledged bytes do not move is a stall; one that moves or has none is not', async () => {
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

test('only live connections count: a TIME-WAIT left by an earlier move neither stalls nor hides a stall', async () => {
  const remote = `${procAddress('10.0.0.2')}:6979`;
  const table = HEAD + line(remote, '06', '00000000') + line(remote, '01', '00010000');
  assert.equal(await watchFor([table], 200), true, 'the established one with stuck bytes is the stall');
});

test('no stall is reported once stopped, even by a poll whose read was under way', async () => {
  const remote = `${procAddress('10.0.0.2')}:6979`;
  const table = HEAD + line(remote, '02', '00000001');
  let release: (t: string) => void = () => {};
  let reads = 0;
  let stalled = false;
  const w = watchStall(
    { address: '10.0.0.2', port: 27001, stallMs: 0, pollMs: 1 },
    () => {
      stalled = true;
    },
    // the first read sees the stuck connection; the second, which would call it a stall, is still reading at stop
    () => {
      reads++;
      if (reads === 1) return Promise.resolve(table);
      return new Promise<string>((r) => {
        release = r;
      });
    },
  );
  while (reads < 2) await new Promise((r) => setTimeout(r, 1));
  w.stop();
  release(table);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(stalled, false);
});

test(
  'a connection destroyed from outside fails its writer at once (ss -K)',
  { skip: process.getuid?.() !== 0 && 'needs CAP_NET_ADMIN' },
  async () => {
    // a peer that never reads: the writer's bytes stay unacknowledged, as over a cut link
    const server = createServer((s) => s.pause()).listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    const client: Socket = connect(port, '127.0.0.1');
    try {
      await once(client, 'connect');
      client.write(Buffer.alloc(1 << 20));
      const failed = once(client, 'error');
      await destroyConnections(new ProcessRunner(), '127.0.0.1', port);
      const [err] = (await failed) as [NodeJS.ErrnoException];
      assert.equal(err.code, 'ECONNABORTED');
    } finally {
      client.destroy();
      server.close();
    }
  },
);
