// A load generator for the switchover benchmark's nginx scenario, run as its own process in the testbed's client
// namespace: `node bench/http-load.ts HOST PORT CONNECTIONS INTERVAL_MS`. It holds CONNECTIONS keep-alive HTTP/1.1
// connections, and on each sends one GET every INTERVAL_MS (one outstanding at a time). A request's latency runs
// from when it was due, not from when it left: a request held up behind a frozen server counts the whole wait, and
// so do the ones that were due while it waited (a closed loop that only timed what it sent would count the freeze
// once per connection and hide it from every percentile). Every socket error and every connection that closed is
// recorded; a closed connection is opened again, and counted. Prints `ready` once every connection is up; on
// SIGTERM prints one JSON line ({ samples: [due epoch ms, latency ms][], errors, reconnects }) and exits.
import { connect, type Socket } from 'node:net';

const [host = '127.0.0.1', portArg = '80', connsArg = '8', intervalArg = '10'] = process.argv.slice(2);
const port = Number(portArg);
const conns = Number(connsArg);
const intervalMs = Number(intervalArg);
const REQUEST = `GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: keep-alive\r\n\r\n`;

const samples: [number, number][] = [];
const errors: { at: number; conn: number; error: string }[] = [];
let reconnects = 0;
let up = 0;
let stopping = false;

function open(id: number, first: boolean): void {
  let due = 0;
  let buf = '';
  let timer: NodeJS.Timeout | undefined;
  let opened = false;
  const sock: Socket = connect({ host, port, noDelay: true });
  const send = () => {
    timer = undefined;
    if (!stopping) sock.write(REQUEST);
  };
  sock.setEncoding('latin1');
  sock.on('connect', () => {
    opened = true;
    if (first && ++up === conns) process.stdout.write('ready\n');
    due = Date.now();
    send();
  });
  sock.on('data', (d: string) => {
    buf += d;
    // one response at a time: headers, then Content-Length bytes of body
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const len = Number(/content-length:\s*(\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
      if (buf.length < end + 4 + len) return;
      const status = buf.slice(9, 12);
      buf = buf.slice(end + 4 + len);
      const now = Date.now();
      if (status !== '200') errors.push({ at: now, conn: id, error: `HTTP ${status}` });
      samples.push([due, now - due]);
      due += intervalMs;
      // behind schedule (after a stall): the next request goes now, and its latency still counts from its due time
      timer = setTimeout(send, Math.max(0, due - now));
    }
  });
  sock.on('error', (e: NodeJS.ErrnoException) => {
    errors.push({ at: Date.now(), conn: id, error: e.code ?? e.message });
  });
  sock.on('close', () => {
    if (timer) clearTimeout(timer);
    if (stopping) return;
    if (opened) errors.push({ at: Date.now(), conn: id, error: 'connection closed' });
    reconnects++;
    setTimeout(() => open(id, first && !opened), 100);
  });
}

for (let i = 0; i < conns; i++) open(i, true);

process.on('SIGTERM', () => {
  stopping = true;
  process.stdout.write(`${JSON.stringify({ samples, errors, reconnects })}\n`, () => process.exit(0));
});
