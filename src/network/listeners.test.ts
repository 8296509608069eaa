import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type AddressInfo, createServer } from 'node:net';
import { test } from 'node:test';
import { listensItself, parseListeners } from './listeners.ts';

const HEAD =
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';

test('the listeners of a port are its LISTEN entries, by inode; connections to it are not', () => {
  const text =
    HEAD +
    '   0: 00000000:6979 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n' +
    '   1: 0100007F:6979 0100007F:B00C 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0 20 4 30 10 -1\n' +
    '   2: 00000000:697A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0 100 0 0 10 0\n';
  assert.deepEqual(parseListeners(text, 27001), ['4242']);
  assert.deepEqual(parseListeners(text, 27003), []);
});

test('a process listens on a port itself only if the listening socket is among its fds', async () => {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const { port } = server.address() as AddressInfo;
    assert.equal(await listensItself(process.pid, port), true);
    assert.equal(await listensItself(process.ppid, port), false, 'the port listens, but not in that process');
  } finally {
    server.close();
  }
});
