import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ExecOptions, ExecResult, Runner } from '../runtime/exec.ts';
import { LOCK_CHAIN, LOCK_TABLE, NetnsLock, nftLockRules, XT_UNLOCK, xtLockRules } from './netns-lock.ts';

/** A runner whose x_tables programs work or fail as told; it records each program and its input. */
function fakeRunner(o: { xtables: boolean; jumps?: boolean }) {
  const calls: { prog: string; argv: string[]; input?: string }[] = [];
  const runner: Runner = {
    async run(argv: string[], opts?: ExecOptions): Promise<ExecResult> {
      const prog = argv[argv.indexOf('--') + 1] ?? '';
      calls.push({ prog, argv, ...(typeof opts?.input === 'string' ? { input: opts.input } : {}) });
      const fails = prog.includes('legacy') && (!o.xtables || (argv.includes('-C') && !o.jumps));
      return { argv, code: fails ? 1 : 0, signal: null, stdout: '', stderr: '', ms: 1 };
    },
  };
  return { runner, calls };
}

test("the lock's rules: CRIU's marked packets pass, everything else is dropped, both ways", () => {
  const xt = xtLockRules(true);
  assert.match(
    xt,
    new RegExp(`^:${LOCK_CHAIN} - \\[0:0\\]$`, 'm'),
    'declared, so emptied before it is filled',
  );
  assert.match(xt, new RegExp(`-A ${LOCK_CHAIN} -m mark --mark 0xc114 -j RETURN\\n-A ${LOCK_CHAIN} -j DROP`));
  assert.match(xt, /-I INPUT 1 -j ferry-lock\n-I OUTPUT 1 -j ferry-lock\nCOMMIT/);
  assert.doesNotMatch(xtLockRules(false), /-I (INPUT|OUTPUT)/, 'the jumps once only');
  assert.equal(XT_UNLOCK, `*filter\n-F ${LOCK_CHAIN}\nCOMMIT\n`);
  for (const chain of ['in', 'out'])
    assert.match(
      nftLockRules(),
      new RegExp(`chain ${chain} \\{[^}]*policy drop;[^}]*meta mark 0xc114 accept;`),
    );
});

test('with x_tables the lock is its chain in both families, and the unlock empties it: no nftables', async () => {
  const { runner, calls } = fakeRunner({ xtables: true });
  const lock = new NetnsLock(runner);
  await lock.lock('ns1');
  const restores = calls.filter((c) => c.prog.endsWith('-legacy-restore'));
  assert.deepEqual(
    restores.map((c) => [c.prog, c.input]),
    [
      ['iptables-legacy-restore', xtLockRules(true)],
      ['ip6tables-legacy-restore', xtLockRules(true)],
    ],
  );
  assert.ok(calls.every((c) => c.argv.slice(0, 2).join(' ') === 'nsenter --net=/run/netns/ns1'));
  calls.length = 0;
  await lock.unlock('ns1');
  assert.deepEqual(
    calls.map((c) => [c.prog, c.input]),
    [
      ['iptables-legacy-restore', XT_UNLOCK],
      ['ip6tables-legacy-restore', XT_UNLOCK],
    ],
  );
});

test('where the jumps are there already, locking again only fills the chain', async () => {
  const { runner, calls } = fakeRunner({ xtables: true, jumps: true });
  await new NetnsLock(runner).lock('ns1');
  assert.ok(calls.filter((c) => c.input).every((c) => c.input === xtLockRules(false)));
});

test('without x_tables the lock is the nftables table, and its unlock deletes the table', async () => {
  const { runner, calls } = fakeRunner({ xtables: false });
  const lock = new NetnsLock(runner);
  await lock.lock('ns1');
  assert.equal(calls.at(-1)?.prog, 'nft');
  assert.equal(calls.at(-1)?.input, nftLockRules());
  calls.length = 0;
  await lock.unlock('ns1');
  assert.deepEqual(
    calls.map((c) => c.argv.slice(3).join(' ')),
    [`nft delete table inet ${LOCK_TABLE}`],
  );
});

test('an unlock this agent did not lock (a restarted agent, a lock of an earlier version) removes both kinds', async () => {
  const { runner, calls } = fakeRunner({ xtables: true });
  await new NetnsLock(runner).unlock('ns1');
  assert.deepEqual(
    calls.map((c) => c.prog),
    ['iptables-legacy-restore', 'ip6tables-legacy-restore', 'nft'],
  );
});
