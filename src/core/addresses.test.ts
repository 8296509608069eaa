import assert from 'node:assert/strict';
import { test } from 'node:test';
import { intToIpv4, ipv4ToInt, lanAddressProblem } from './addresses.ts';

test('addresses: parsed strictly, checked against the LAN', () => {
  assert.equal(ipv4ToInt('10.0.0.1'), 0x0a000001);
  assert.equal(intToIpv4(0x0a000001), '10.0.0.1');
  for (const bad of ['10.0.0', '10.0.0.256', '1e3.0.0.1', ' 10.0.0.1', '10.0.0.1/24', ''])
    assert.equal(ipv4ToInt(bad), undefined, bad);
  const lan = { member: '10.77.3.1', prefixLen: 24 };
  assert.equal(lanAddressProblem('10.77.3.60', lan), undefined);
  assert.match(lanAddressProblem('10.77.4.60', lan)!, /not on the LAN 10\.77\.3\.0\/24/);
  assert.match(lanAddressProblem('8.8.8.8', lan)!, /not on the LAN/);
  assert.match(lanAddressProblem('10.77.3.0', lan)!, /network address/);
  assert.match(lanAddressProblem('10.77.3.255', lan)!, /broadcast address/);
  assert.match(lanAddressProblem('nope', lan)!, /not an IPv4 address/);
});
