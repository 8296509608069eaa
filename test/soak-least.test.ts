import assert from 'node:assert/strict';
import { test } from 'node:test';
import { leastOf } from '../bench/soak.ts';
import type { HostFootprint, TestbedFootprint } from '../src/testbed/footprint.ts';

const host = (fds: number, pid = 10): HostFootprint => ({
  host: 'a',
  agentPid: pid,
  fds,
  threads: 11,
  mounts: 6,
  rssBytes: fds * 2 ** 20,
  cgroups: 10,
  stateEntries: 0,
  stateBytes: 0,
  hostFiles: 27,
  rules: 0,
});
const bed = (h: HostFootprint, netns = 4): TestbedFootprint => ({ hosts: [h], netns, containerRules: 0 });

test("the soak's settled figures are each count's least over its looks: a descriptor open at one look is not a leak", () => {
  const l = leastOf(bed(host(32), 5), bed(host(30), 4));
  assert.equal(l.hosts[0]!.fds, 30);
  assert.equal(l.hosts[0]!.rssBytes, 30 * 2 ** 20);
  assert.equal(l.netns, 4);
  // an agent that restarted between the looks is not mixed with its predecessor
  assert.equal(leastOf(bed(host(20, 9)), bed(host(30, 10))).hosts[0]!.fds, 30);
});
