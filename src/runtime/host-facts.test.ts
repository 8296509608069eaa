import assert from 'node:assert/strict';
import { test } from 'node:test';
import { effectiveCapabilities, type HostFacts, hostFlags, PIPE_MAX_NEEDED } from './host-facts.ts';

function facts(over: Partial<HostFacts> = {}): HostFacts {
  return {
    host: 'h',
    kernel: '6.18',
    criuVersion: '4.2.1',
    runcVersion: '1.1.5',
    criuCheck: { ok: true, message: 'Looks good.' },
    features: {
      uffd: { ok: true, message: '' },
      mem_dirty_track: { ok: false, message: 'Dirty tracking is OFF' },
      network_lock_nftables: { ok: true, message: '' },
    },
    pipeMaxSize: PIPE_MAX_NEEDED,
    root: true,
    ...over,
  };
}

test('a capable host: every flag ok but the ones its kernel lacks, each with its reason', () => {
  const f = hostFlags(facts());
  assert.deepEqual(f.criu, { ok: true, version: '4.2.1' });
  assert.equal(f.uffd.ok, true);
  assert.equal(f.nftables.ok, true);
  assert.deepEqual(f.softDirty, {
    ok: false,
    why: 'the kernel lacks soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY)',
  });
  assert.deepEqual(f.pipeMaxSize, { ok: true, value: PIPE_MAX_NEEDED });
});

test('CRIU problems get a code, in the order they matter', () => {
  assert.equal(hostFlags(facts({ criuVersion: undefined as never })).criu.code, 'criu-missing');
  const old = hostFlags(facts({ criuVersion: '3.17' })).criu;
  assert.equal(old.code, 'criu-too-old');
  assert.match(old.why ?? '', /CRIU 3\.17 is older than 4\.2/);
  assert.equal(hostFlags(facts({ runcVersion: undefined as never })).criu.code, 'runc-missing');
  assert.equal(hostFlags(facts({ root: false })).criu.code, 'not-root');
  const check = hostFlags(facts({ criuCheck: { ok: false, message: 'no tcp repair' } })).criu;
  assert.deepEqual(check, {
    ok: false,
    version: '4.2.1',
    code: 'criu-check-failed',
    why: 'criu check failed: no tcp repair',
  });
});

test('a small fs.pipe-max-size says how to raise it', () => {
  const f = hostFlags(facts({ pipeMaxSize: 1 << 20 })).pipeMaxSize;
  assert.equal(f.ok, false);
  assert.match(f.why ?? '', /sysctl -w fs\.pipe-max-size=4194304/);
});

test('a large conntrack table is named with its cost to every dump and the setting that cuts it; none or a small one is fine', () => {
  const big = hostFlags(facts({ conntrackBuckets: 262144 })).conntrack;
  assert.equal(big.ok, false);
  assert.match(big.why ?? '', /twice in every dump.*nf_conntrack_buckets=16384/);
  assert.deepEqual(hostFlags(facts({ conntrackBuckets: 16384 })).conntrack, { ok: true });
  assert.deepEqual(hostFlags(facts()).conntrack, { ok: true }, 'no conntrack in the kernel');
  // with the library a dump walks the table only for a namespace that tracks connections: noted, not a problem
  const skipped = hostFlags(
    facts({
      conntrackBuckets: 262144,
      criuLibraries: [{ name: 'conntrack', path: '/l.so', installed: true, without: '' }],
    }),
  ).conntrack;
  assert.equal(skipped.ok, true);
  assert.match(skipped.why ?? '', /namespace tracks connections.*nf_conntrack_buckets=16384/);
});

test('effective capabilities from /proc/self/status', async () => {
  const caps = await effectiveCapabilities('CapEff:\t0000000000001000\n');
  assert.equal(caps['CAP_NET_ADMIN'], true);
  assert.equal(caps['CAP_SYS_ADMIN'], false);
});
