// Tiny servers run INSIDE containers with the host's /usr/bin/python3 (3.11, stdlib only), started as
// `python3 -u -c CODE PORT` (see pythonArgs). They are what the downtime probe (src/probe/probe.ts) talks to.
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
