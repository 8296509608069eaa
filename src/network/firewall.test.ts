import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ExecResult, Runner } from '../runtime/exec.ts';
import { Firewall, stalePageServerFences } from './firewall.ts';

test("a cold page server's fence names its migration and lets no local process in; post-copy's keeps the loopback", async () => {
  const calls: string[][] = [];
  const runner: Runner = {
    async run(argv: string[]): Promise<ExecResult> {
      calls.push(argv);
      return { argv, code: 0, signal: null, stdout: '', stderr: '', ms: 1 };
    },
  };
  const fw = new Firewall(runner);
  await fw.fencePort(27001, '10.0.0.1', { migration: 'm0123456789ab' });
  await fw.unfencePort(27001, '10.0.0.1', { migration: 'm0123456789ab' });
  await fw.fencePort(27002, '10.0.0.2', { loopback: true });
  const [open, close, postcopy] = calls.map((a) => a.join(' '));
  assert.equal(
    open,
    'iptables -w -I INPUT -p tcp --dport 27001 ! -s 10.0.0.1/32 -m comment --comment ferry:page-server:m0123456789ab -j DROP',
  );
  assert.equal(close, open?.replace(' -I ', ' -D '), 'the removal names the same rule, this migration only');
  assert.match(
    postcopy ?? '',
    /! -s 10\.0\.0\.2\/32 ! -i lo -m comment --comment ferry:page-server -j DROP$/,
  );
});

test("a previous run's cold page server fences are found in iptables -S and deleted by their own arguments; post-copy's and others stay", async () => {
  // as iptables 1.8 prints them
  const listing = [
    '-P INPUT ACCEPT',
    '-A INPUT ! -s 10.0.0.2/32 ! -i lo -p tcp -m tcp --dport 27002 -m comment --comment "ferry:page-server" -j DROP',
    '-A INPUT ! -s 10.0.0.1/32 -p tcp -m tcp --dport 27001 -m comment --comment "ferry:page-server:m0123456789ab" -j DROP',
    '-A INPUT -p tcp -m tcp --dport 22 -m comment --comment "ferry:page-server:" -j ACCEPT',
    '-A INPUT -s 10.9.9.9/32 -j DROP',
  ].join('\n');
  assert.deepEqual(stalePageServerFences(listing), [
    'INPUT ! -s 10.0.0.1/32 -p tcp -m tcp --dport 27001 -m comment --comment ferry:page-server:m0123456789ab -j DROP'.split(
      ' ',
    ),
  ]);
  const calls: string[][] = [];
  const runner: Runner = {
    async run(argv: string[]): Promise<ExecResult> {
      calls.push(argv);
      return { argv, code: 0, signal: null, stdout: argv.includes('-S') ? listing : '', stderr: '', ms: 1 };
    },
  };
  assert.equal(await new Firewall(runner).removeStalePageServerFences(), 1);
  assert.deepEqual(
    calls.map((a) => a.slice(0, 3).join(' ')),
    ['iptables -w -S', 'iptables -w -D'],
  );
});
