import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultConfig, placeConfig } from './bundle.ts';

test("placeConfig keeps namespaces, cgroup path and stdio ferry's, whatever the bundle said", () => {
  const user = defaultConfig(['/bin/sh'], 'x');
  user.process.terminal = true;
  user.linux.cgroupsPath = '/system.slice/evil';
  user.linux.namespaces = [{ type: 'network', path: '/proc/1/ns/net' }, { type: 'uts' }, { type: 'ipc' }];
  const before = structuredClone(user);

  const own = placeConfig(user, {
    cgroupsPath: '/ferry/c1',
    net: { netnsPath: '/run/netns/c1' },
    hostname: 'c1',
  });
  assert.equal(own.process.terminal, false, 'stdio is /dev/null, never a terminal');
  assert.equal(own.linux.cgroupsPath, '/ferry/c1');
  assert.equal(own.hostname, 'c1');
  assert.deepEqual(own.linux.namespaces, [
    { type: 'uts' },
    { type: 'ipc' },
    { type: 'pid' },
    { type: 'mount' },
    { type: 'network', path: '/run/netns/c1' },
  ]);

  const fresh = placeConfig(user, { cgroupsPath: '/ferry/c1', net: 'fresh' });
  assert.deepEqual(
    fresh.linux.namespaces.filter((n: { type: string }) => n.type === 'network'),
    [{ type: 'network' }],
  );
  const host = placeConfig(user, { cgroupsPath: '/ferry/c1', net: 'host' });
  assert.equal(
    host.linux.namespaces.some((n: { type: string }) => n.type === 'network'),
    false,
  );
  assert.deepEqual(user, before, 'the input is not modified');
});
