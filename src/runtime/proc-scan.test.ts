// The /proc scan against trees captured from the real kernel (test/fixtures/proc/capture.py): CRIU's own
// zdtm tests that CRIU cannot move (pthread02, vfork00, session02, socket_udp-corked) and ones it
// can (zombie00, pthread00, session01, stopped), each started as a container's init starts its program.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  describeUnmovable,
  type ProcFs,
  parseStat,
  parseStatus,
  scanUnmovable,
  type Unmovable,
} from './proc-scan.ts';
import { breakableLeases, showTcpAddress } from './proc-scan-fds.ts';
import { parseUnixDiag } from './proc-scan-unix.ts';

interface Fixture {
  name: string;
  init: number;
  pids: number[];
  files: Record<string, string>;
  links: Record<string, string>;
  /** stat(2) of each /proc/PID/fd link (fixtures captured since the lease rule). */
  stats?: Record<string, { dev: string; ino: string; size: string; isFile: boolean }>;
  /** `ss -H -x -a -e`, the tree's rows (fixtures captured since the rule on unix connections in flight). */
  unix?: string;
}

function fixture(name: string, withDiag = true): { fx: Fixture; fs: ProcFs } {
  const fx = JSON.parse(
    readFileSync(new URL(`../../test/fixtures/proc/${name}.json`, import.meta.url), 'utf8'),
  ) as Fixture;
  const stats = fx.stats ?? {};
  const fs: ProcFs = {
    readFile: async (p) => fx.files[p],
    readlink: async (p) => fx.links[p],
    readdir: async (p) => [
      ...new Set(
        [...Object.keys(fx.links), ...Object.keys(fx.files)]
          .filter((k) => k.startsWith(`${p}/`))
          .map((k) => k.slice(p.length + 1).split('/')[0]!),
      ),
    ],
    stat: async (p) => {
      const st = stats[p];
      return st && { dev: BigInt(st.dev), ino: BigInt(st.ino), size: BigInt(st.size), isFile: st.isFile };
    },
    ...(withDiag ? { unixSockets: async () => fx.unix ?? '' } : {}),
  };
  return { fx, fs };
}

async function scan(name: string, withDiag = true): Promise<{ fx: Fixture; found: Unmovable[] }> {
  const { fx, fs } = fixture(name, withDiag);
  return { fx, found: await scanUnmovable(fs, { init: fx.init, pids: fx.pids, resampleMs: 1 }) };
}

describe('parseStat and parseStatus', () => {
  it('reads a command name with spaces and parentheses up to the last parenthesis', () => {
    const s = parseStat('42 (a (b) c) Z 7 42 40 0 -1 4194560 0');
    assert.deepEqual(s, { comm: 'a (b) c', state: 'Z', ppid: 7, pgid: 42, sid: 40 });
  });

  it('takes the innermost pid namespace ids and counts the levels', () => {
    const s = parseStatus('Name:\tx\nTracerPid:\t0\nNSpid:\t4242\t7\nNSsid:\t4000\t0\nThreads:\t3\n');
    assert.deepEqual(s, { nsLevels: 2, threads: 3, tracerPid: 0, nsPid: 7, nsSid: 0 });
  });
});

describe('scanUnmovable on captured trees', () => {
  for (const name of ['zombies', 'threads', 'sessions', 'loopback-tcp']) {
    it(`finds nothing in a tree CRIU moves (${name})`, async () => {
      assert.deepEqual((await scan(name)).found, []);
    });
  }

  it('names a zombie whose threads still run (pthread02)', async () => {
    const { fx, found } = await scan('threaded-zombie');
    assert.equal(found.length, 1);
    assert.equal(found[0]!.pid, fx.pids[1]);
    assert.equal(found[0]!.comm, 'pthread02');
    assert.match(
      found[0]!.limit,
      /main thread has exited while 1 other thread\(s\) run.*zombie with threads/,
    );
  });

  it('names a loopback TCP connection whose reader stopped with its buffers full (socket-tcpbuf-local)', async () => {
    const { found } = await scan('loopback-tcp-full');
    assert.equal(found.length, 1);
    assert.equal(found[0]!.comm, 'socket-tcpbuf-l');
    assert.match(
      found[0]!.limit,
      /TCP connection 127\.0\.0\.1:8880 <-> 127\.0\.0\.1:37400 has both ends in the container and \d+ bytes unread/,
    );
  });

  it('names a listening socket with a connection not yet accepted (socket-tcp-skip-in-flight)', async () => {
    const { found } = await scan('tcp-in-flight');
    assert.equal(found.length, 1);
    assert.equal(found[0]!.comm, 'socket-tcp-skip');
    assert.match(
      found[0]!.limit,
      /listening TCP socket 0\.0\.0\.0:9990 has 1 connection\(s\) not yet accepted/,
    );
  });

  it('names a listening unix socket whose connection in flight holds data its client sent (sk-unix-listen02)', async () => {
    const { found } = await scan('unix-in-flight-data');
    assert.equal(found.length, 1);
    assert.equal(found[0]!.comm, 'sk-unix-listen0');
    assert.match(
      found[0]!.limit,
      /listening unix socket sk-unix-listen02\.sock has a connection not yet accepted holding 768 bytes its client sent/,
    );
  });

  it('names a listening unix socket whose connection in flight its client has closed (sk-unix-listen04)', async () => {
    const { found } = await scan('unix-in-flight-closed');
    assert.equal(found.length, 1);
    assert.match(
      found[0]!.limit,
      /listening unix socket sk-unix-listen04\.sock has 1 connection\(s\) not yet accepted whose client has closed its end/,
    );
  });

  it('lets an empty unix connection in flight whose client is open go: CRIU moves it', async () => {
    const { found } = await scan('unix-in-flight');
    assert.deepEqual(found, []);
  });

  it('names every listening unix socket with a connection in flight when sock_diag cannot be asked', async () => {
    const { found } = await scan('unix-in-flight', false);
    assert.equal(found.length, 1);
    assert.match(
      found[0]!.limit,
      /ok\.sock has 1 connection\(s\) not yet accepted, and the kernel's socket diagnostics/,
    );
  });

  it("reads ss rows with spaces in a path and a listener's peers", () => {
    const rows = parseUnixDiag(
      'u_seq LISTEN 2 16 /run/a b.sock 71 * 0 <-> ino:9 dev:0/1 peers: 0 72\n' +
        'u_str ESTAB 0 768 * 72 * 0 <->\n' +
        'u_dgr UNCONN 0 0 /dev/log 5 * 0 <->\n',
    );
    assert.deepEqual(rows, [
      { state: 'LISTEN', sendQ: 16, name: '/run/a b.sock', inode: 71, peers: [0, 72] },
      { state: 'ESTAB', sendQ: 768, name: '*', inode: 72 },
    ]);
  });

  it('writes /proc/net/tcp addresses as people do', () => {
    assert.equal(showTcpAddress('0100007F:22B0'), '127.0.0.1:8880');
    assert.equal(showTcpAddress('0000000000000000FFFF00000100007F:0050'), '127.0.0.1:80');
    assert.equal(showTcpAddress('00000000000000000000000001000000:0016'), '[0:0:0:0:0:0:0:1]:22');
  });

  it('names a task with a SIGTRAP pending (sigtrap)', async () => {
    const { fx, found } = await scan('pending-sigtrap');
    assert.equal(found.length, 1);
    assert.equal(found[0]!.pid, fx.pids[1]);
    assert.equal(found[0]!.comm, 'sigtrap');
    assert.match(found[0]!.limit, /a SIGTRAP is pending for it/);
  });

  it('names a write lease on a file with content, not one on an empty file', async () => {
    const { found } = await scan('lease');
    assert.equal(found.length, 1);
    assert.equal(found[0]!.comm, 'python3');
    assert.match(found[0]!.limit, /holds a write lease on \/tmp\/ferry-lease-data \(100 bytes\)/);
  });

  it('names every lease being broken, on empty files too (file_lease02)', async () => {
    const { found } = await scan('breaking-lease');
    assert.equal(found.length, 3);
    for (const u of found) {
      assert.equal(u.comm, 'file_lease02');
      assert.match(u.limit, /its lease on \/tmp\/fzt\/lease\.[012] is being broken/);
    }
  });

  it('leaves the lease rule out where /proc cannot be stat-ed', async () => {
    const { fx, fs } = fixture('lease');
    const { stat: _stat, ...noStat } = fs;
    const found = await scanUnmovable(noStat, {
      init: fx.init,
      pids: fx.pids,
      resampleMs: 1,
    });
    assert.deepEqual(found, []);
  });

  it('reads the leases a read would break from /proc/locks: write leases and any being broken', () => {
    const leases = breakableLeases(
      [
        '1: POSIX  ADVISORY  WRITE 10 fe:00:100 0 EOF',
        '2: LEASE  ACTIVE    READ 11 fe:00:101 0 EOF',
        '3: LEASE  ACTIVE    WRITE 12 fe:00:102 0 EOF',
        '4: LEASE  BREAKING  READ 13 08:11:103 0 EOF',
        '4: -> LEASE  BREAKER  READ 14 08:11:103 0 EOF',
        '',
      ].join('\n'),
    );
    assert.deepEqual(
      [...leases],
      [
        ['254:0:102', 'write'],
        ['8:17:103', 'breaking'],
      ],
    );
  });

  it('names a parent waiting in vfork() (vfork00)', async () => {
    const { found } = await scan('vfork');
    assert.equal(found.length, 1);
    assert.equal(found[0]!.comm, 'vfork00');
    assert.match(found[0]!.limit, /waits in vfork\(\)/);
  });

  it('names the tasks whose session leader exited and is none of their ancestors (session02)', async () => {
    const { found } = await scan('session-leader-gone');
    // CRIU stops at the first; the scan names every task it would stop at, in CRIU's order
    assert.match(found[0]!.limit, /session's leader \(pid \d+\) has exited and was none of its ancestors/);
    assert.equal(found.length, 4);
    for (const u of found) {
      assert.equal(u.comm, 'session02');
      assert.match(u.limit, /session/);
    }
  });

  it('names a task whose session leader is outside the container (runc exec)', async () => {
    const { fx, found } = await scan('session-outside');
    assert.equal(found.length, 1);
    assert.equal(found[0]!.pid, fx.init);
    assert.match(found[0]!.limit, /session's leader \(pid \d+\) is outside the container/);
  });

  it('names a UDP socket whose send queue a cork holds (socket_udp-corked)', async () => {
    const { found } = await scan('corked-udp');
    assert.equal(found.length, 1);
    assert.equal(found[0]!.comm, 'socket_udp-cork');
    assert.match(found[0]!.limit, /UDP socket \(inode \d+\) holds 832 bytes held back by UDP_CORK/);
  });

  it('takes a send queue that empties between two reads for a datagram on its way out', async () => {
    const { fx, fs } = fixture('corked-udp');
    let reads = 0;
    const draining: ProcFs = {
      ...fs,
      readFile: async (p) => {
        const text = await fs.readFile(p);
        if (!p.endsWith('/net/udp') || reads++ === 0) return text;
        return text?.replace(/ 00000340:00000000 /, ' 00000000:00000000 ');
      },
    };
    const found = await scanUnmovable(draining, {
      init: fx.init,
      pids: fx.pids,
      resampleMs: 1,
    });
    assert.deepEqual(found, []);
  });

  it('lets a stopped task go (stopped): CRIU seizes it with ptrace alone', async () => {
    assert.deepEqual((await scan('stopped')).found, []);
  });

  it('names a traced task (strace -p)', async () => {
    const { fx, found } = await scan('traced');
    assert.equal(found.length, 1);
    assert.equal(found[0]!.comm, 'sleep');
    assert.match(found[0]!.limit, new RegExp(`traced by pid ${fx.pids[2]}`));
  });

  it('names a task of another uid when CRIU cannot read its rlimits (no CAP_SYS_RESOURCE)', async () => {
    const { fx, fs } = fixture('other-uid');
    const o = { init: fx.init, pids: fx.pids, resampleMs: 1 };
    const found = await scanUnmovable(fs, { ...o, dumper: { uid: 0, gid: 0, capSysResource: false } });
    assert.equal(found.length, 1);
    assert.equal(found[0]!.comm, 'sleep');
    assert.match(found[0]!.limit, /runs as uid 18943 and this host's agent lacks CAP_SYS_RESOURCE/);
    assert.deepEqual(await scanUnmovable(fs, { ...o, dumper: { uid: 0, gid: 0, capSysResource: true } }), []);
  });

  it('skips a task that exited since the pids were listed', async () => {
    const { fx, fs } = fixture('threaded-zombie');
    const found = await scanUnmovable(fs, { init: fx.init, pids: [...fx.pids, 999999] });
    assert.equal(found.length, 1);
  });
});

describe('processes joined with runc exec', () => {
  /** A task's /proc files: host pid, pid in the container, parent, session, command line. */
  const task = (pid: number, nsPid: number, ppid: number, sid: number, cmd: string[]) => ({
    [`/proc/${pid}/stat`]: `${pid} (${cmd[0]}) S ${ppid} ${pid} ${sid} 0 -1 0`,
    [`/proc/${pid}/status`]: `Name:\t${cmd[0]}\nTracerPid:\t0\nNSpid:\t${pid}\t${nsPid}\nNSsid:\t${sid}\t${nsPid}\nThreads:\t1\n`,
    [`/proc/${pid}/cmdline`]: `${cmd.join('\0')}\0`,
  });
  const files: Record<string, string> = {
    // init (its parent is runc's, outside), a child of it, and a process runc exec started with a child of its own
    ...task(100, 1, 50, 100, ['sh', '-c', 'loop']),
    ...task(101, 2, 100, 100, ['sleep', '1']),
    ...task(200, 9, 1, 200, ['sleep', '1000']),
    ...task(201, 10, 200, 200, ['cat']),
  };
  const fs: ProcFs = {
    readFile: async (p) => files[p],
    readlink: async () => undefined,
    readdir: async () => [],
  };

  it('names each process that is no descendant of the init, with its command line, and nothing else', async () => {
    const found = await scanUnmovable(fs, {
      init: 100,
      pids: [100, 101, 200, 201],
      resampleMs: 1,
    });
    assert.deepEqual(
      found.map((u) => [u.pid, u.nsPid, u.comm]),
      [
        [200, 9, 'sleep'],
        [201, 10, 'cat'],
      ],
    );
    assert.match(found[0]!.limit, /started in the container by runc exec \("sleep 1000"\), not by its init/);
    assert.match(found[0]!.limit, /would be left behind/);
  });

  it('finds nothing when every process descends from the init', async () => {
    assert.deepEqual(await scanUnmovable(fs, { init: 100, pids: [100, 101], resampleMs: 1 }), []);
  });
});

describe('describeUnmovable', () => {
  it('gives the pid inside the container first, the host pid beside it', () => {
    assert.equal(
      describeUnmovable({ pid: 4242, nsPid: 7, comm: 'pthread02', limit: 'why' }),
      'pid 7 (host pid 4242, pthread02): why',
    );
    assert.equal(describeUnmovable({ pid: 4242, comm: 'x', limit: 'why' }), 'pid 4242 (x): why');
  });
});
