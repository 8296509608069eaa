// Tiny servers run INSIDE containers with the host's /usr/bin/python3 (3.11, stdlib only), started as
// `python3 -u -c CODE PORT` (see pythonArgs). They are what the downtime probe (src/probe/session.ts) talks to.
//
// Both print one line `ferry-server listening <port>` on stdout once bound (PORT 0 binds an ephemeral port),
// and a daemon thread writes the current counter to /tmp/counter (atomically, via /tmp/counter.tmp) every
// 50 ms when it changed, so state carried across a migration can be checked from outside. The environment
// variable FERRY_COUNTER_FILE changes that path; set to '' it disables the file.

/**
 * TCP line server on 0.0.0.0:PORT. Per connection (one thread each) it reads lines `<seq>\n` and answers each
 * with `<counter> <seq>\n`, where counter is server-wide: the number of lines answered since the server
 * started, this one included (the first reply carries 1). Replies to the lines of one read are sent at once.
 * SO_REUSEADDR on the listener, TCP_NODELAY on accepted sockets.
 */
export const LINE_COUNTER_PY = `
import os, socket, sys, threading, time

port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
bind_addr = sys.argv[2] if len(sys.argv) > 2 else '0.0.0.0'
lock = threading.Lock()
counter = 0

counter_file = os.environ.get('FERRY_COUNTER_FILE', '/tmp/counter')

def writer():
    last = -1
    while counter_file:
        time.sleep(0.05)
        c = counter
        if c != last:
            try:
                with open(counter_file + '.tmp', 'w') as f:
                    f.write('%d\\n' % c)
                os.replace(counter_file + '.tmp', counter_file)
                last = c
            except OSError:
                pass

def serve(conn):
    global counter
    buf = b''
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = conn.recv(65536)
            if not data:
                break
            buf += data
            if b'\\n' not in buf:
                if len(buf) > 65536:
                    break
                continue
            *lines, buf = buf.split(b'\\n')
            out = []
            for line in lines:
                line = line.strip()
                with lock:
                    counter += 1
                    c = counter
                out.append(b'%d %s\\n' % (c, line))
            conn.sendall(b''.join(out))
    except OSError:
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass

srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((bind_addr, port))
srv.listen(128)
print('ferry-server listening %d' % srv.getsockname()[1], flush=True)
threading.Thread(target=writer, daemon=True).start()
while True:
    try:
        conn, _ = srv.accept()
    except InterruptedError:
        continue
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
`;

/**
 * UDP server on 0.0.0.0:PORT. Answers each datagram `<seq>` with `<counter> <seq>` to its sender, counter being
 * the number of datagrams answered since the server started, this one included (the first reply carries 1).
 */
export const UDP_COUNTER_PY = `
import os, socket, sys, threading, time

port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
bind_addr = sys.argv[2] if len(sys.argv) > 2 else '0.0.0.0'
counter = 0

counter_file = os.environ.get('FERRY_COUNTER_FILE', '/tmp/counter')

def writer():
    last = -1
    while counter_file:
        time.sleep(0.05)
        c = counter
        if c != last:
            try:
                with open(counter_file + '.tmp', 'w') as f:
                    f.write('%d\\n' % c)
                os.replace(counter_file + '.tmp', counter_file)
                last = c
            except OSError:
                pass

srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((bind_addr, port))
print('ferry-server listening %d' % srv.getsockname()[1], flush=True)
threading.Thread(target=writer, daemon=True).start()
while True:
    try:
        data, addr = srv.recvfrom(2048)
    except OSError:
        continue
    counter += 1
    try:
        srv.sendto(b'%d %s' % (counter, data.strip()), addr)
    except OSError:
        pass
`;

/** The line both servers print on stdout once bound; group 1 is the port. */
export const SERVER_READY_RE = /^ferry-server listening (\d+)$/m;

/**
 * argv to run one of the servers above: ['/usr/bin/python3', '-u', '-c', code, port, bind?]. A host-network
 * container binds its floating address, so that its replies leave from it.
 */
export function pythonArgs(code: string, port: number, bind?: string): string[] {
  return ['/usr/bin/python3', '-u', '-c', code, String(port), ...(bind ? [bind] : [])];
}

/**
 * Python that fills `mib` MiB with random bytes (incompressible, no zero pages for CRIU to skip), in 16 MiB steps so
 * that a 4 GiB ballast never needs twice that; '' for 0.
 */
export function randomBallastPy(mib: number): string {
  return mib
    ? `import os\n_b = bytearray(${mib} << 20)\nfor _i in range(0, ${mib} << 20, 1 << 24): _b[_i:_i + (1 << 24)] = os.urandom(min(1 << 24, (${mib} << 20) - _i))\n`
    : '';
}

/** The benchmarks' server: the line counter on `port`, holding `mib` MiB of random memory. */
export function ballastServerArgs(mib: number, port = 7000): string[] {
  return pythonArgs(`${randomBallastPy(mib)}${LINE_COUNTER_PY}`, port);
}

/**
 * Memory writer that checks its own data: holds MIB MiB (argv[1]) where every 4 KiB page starts with its own page
 * number, rewrites a slice of pages each round (argv[2] pages, default 1/64 of them, about every 10 ms: the dirty
 * rate), and verifies every page's number every
 * 10 rounds. Writes `ok <round> <bad pages>` (or `CORRUPT ...`) to /tmp/status. A migration that loses or
 * mixes up pages turns it CORRUPT; one that loses the process stops the round counter.
 */
export const MEMORY_WRITER_PY = `
import os, sys, time
mib = int(sys.argv[1]) if len(sys.argv) > 1 else 64
page = 4096
pages = (mib << 20) // page
buf = bytearray(mib << 20)
for p in range(pages):
    buf[p * page:p * page + 4] = p.to_bytes(4, 'little')
    buf[p * page + 8:p * page + 16] = os.urandom(8)
step = int(sys.argv[2]) if len(sys.argv) > 2 else max(1, pages // 64)
gen = 0
bad = 0
while True:
    gen += 1
    start = (gen * step) % pages
    for p in range(start, min(pages, start + step)):
        buf[p * page + 4:p * page + 8] = gen.to_bytes(4, 'little')
    if gen % 10 == 0:
        bad = sum(1 for p in range(pages) if int.from_bytes(buf[p * page:p * page + 4], 'little') != p)
    with open('/tmp/status.tmp', 'w') as f:
        f.write('%s %d %d\\n' % ('ok' if bad == 0 else 'CORRUPT', gen, bad))
    os.replace('/tmp/status.tmp', '/tmp/status')
    time.sleep(0.01)
`;

/** A container running the memory writer (MIB MiB, `dirty` pages per round) beside the TCP line counter on PORT. */
export function writerWithServerArgs(mib: number, port: number, dirty?: number): string[] {
  return [
    '/bin/busybox',
    'sh',
    '-c',
    '/usr/bin/python3 -c "$0" "$2" $4 & exec /usr/bin/python3 -u -c "$1" "$3"',
    MEMORY_WRITER_PY,
    LINE_COUNTER_PY,
    String(mib),
    String(port),
    ...(dirty !== undefined ? [String(dirty)] : []),
  ];
}

// Redis from the host's package, no persistence: its memory is the state. DEBUG is enabled because the benchmarks
// fill that memory with DEBUG POPULATE.
const REDIS_BASE_ARGS: readonly string[] = [
  '/usr/bin/redis-server',
  '--save',
  '',
  '--appendonly',
  'no',
  '--dir',
  '/tmp',
  '--enable-debug-command',
  'yes',
];

/** Redis on port 6379 of the container's address. */
export const REDIS_SERVER_ARGS: readonly string[] = [
  ...REDIS_BASE_ARGS,
  '--port',
  '6379',
  '--bind',
  '0.0.0.0',
  '--protected-mode',
  'no',
];

/** Redis on a unix socket only (a container without a network). */
export function redisUnixSocketArgs(socket: string): string[] {
  return [...REDIS_BASE_ARGS, '--port', '0', '--unixsocket', socket, '--unixsocketperm', '700'];
}
