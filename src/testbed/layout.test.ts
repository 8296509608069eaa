import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ANY_TESTBED_LINK, ANY_TESTBED_NETNS, parseHosts, pickSubnet, testbedLayout } from './layout.ts';

test('every object of a testbed carries its prefix and fits the kernel name limits', () => {
  const l = testbedLayout('t1abc', ['a', 'stuttgart', 'b'], '10.213.7');
  assert.equal(l.prefix, 'fyt1abc');
  for (const h of l.hosts) {
    assert.ok(h.netns.startsWith('fyt1abc-'));
    assert.ok(h.vethOuter.length <= 15 && h.vethInner.length <= 15);
    assert.ok(ANY_TESTBED_NETNS.test(h.netns));
    assert.ok(ANY_TESTBED_LINK.test(h.vethOuter));
    assert.ok(h.cgroupParent.startsWith('/fyt1abc-'));
  }
  assert.equal(l.hosts[1]!.address, '10.213.7.11');
  assert.equal(l.client.address, '10.213.7.100');
  assert.ok(ANY_TESTBED_LINK.test(l.bridge));
  assert.equal(new Set(l.hosts.map((h) => h.mac)).size, 3);
});

test('subnets already in use are skipped', () => {
  assert.equal(pickSubnet([]), '10.213.1');
  assert.equal(pickSubnet(['10.213.1.254/24', '10.213.2.0/24', '192.168.1.0/24']), '10.213.3');
});

test('host lists: names checked, duplicates and reserved names refused', () => {
  assert.deepEqual(parseHosts('a, b,c'), ['a', 'b', 'c']);
  assert.throws(() => parseHosts(''), /at least one host/);
  assert.throws(() => parseHosts('a,a'), /unique/);
  assert.throws(() => parseHosts('a,../x'), /invalid host name/);
  assert.throws(() => parseHosts('client'), /not 'client'/);
  assert.throws(() => testbedLayout('Bad!', ['a'], '10.213.1'), /invalid testbed name/);
});
