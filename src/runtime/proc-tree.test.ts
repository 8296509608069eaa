import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ProcFs } from './proc-scan.ts';
import { MAX_CMDLINE, readProcesses } from './proc-tree.ts';

function fakeProc(files: Record<string, string>): ProcFs {
  return {
    readFile: async (p) => files[p],
    readlink: async () => undefined,
    readdir: async () => [],
  };
}

const stat = (pid: number, comm: string, state: string, ppid: number) =>
  `${pid} (${comm}) ${state} ${ppid} ${pid} ${pid} 0 -1 4194560 0 0 0 0`;
const status = (nsPid: number, threads: number, rssKib: number) =>
  `Name:\tx\nState:\tS (sleeping)\nNSpid:\t9${nsPid} ${nsPid}\nThreads:\t${threads}\nVmRSS:\t   ${rssKib} kB\n`;

test('readProcesses: pid, parent, command line, state, RSS and threads of each process that still exists', async () => {
  const fs = fakeProc({
    '/proc/10/stat': stat(10, 'sh', 'S', 1),
    '/proc/10/status': status(1, 1, 900),
    '/proc/10/cmdline': 'sh\0-c\0sleep 5 & wait\0',
    '/proc/11/stat': stat(11, 'my (odd) name', 'R', 10),
    '/proc/11/status': status(2, 4, 2048),
    '/proc/11/cmdline': `${'x'.repeat(MAX_CMDLINE + 50)}\0`,
    // 12 exited: no files
  });
  const r = await readProcesses(fs, [11, 10, 12, 10]);
  assert.equal(r.truncated, false);
  assert.deepEqual(
    r.processes.map((p) => [p.pid, p.nsPid, p.ppid, p.comm, p.state, p.rssBytes, p.threads]),
    [
      [10, 1, 1, 'sh', 'S', 900 * 1024, 1],
      [11, 2, 10, 'my (odd) name', 'R', 2048 * 1024, 4],
    ],
  );
  assert.equal(r.processes[0]?.cmdline, 'sh -c sleep 5 & wait');
  assert.equal(r.processes[1]?.cmdline.length, MAX_CMDLINE);
});
