// A container started by hand with plain `runc run`: its record comes from runc's state and config.json, and
// what cannot move (not running, the host's network, a joined namespace) is refused before anything is touched.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { RuncContainerState, RuncLike } from '../runtime/runc.ts';
import { adoptRuncContainer, netModeOf, receivedContainerDir } from './runc-root.ts';

function fakeRunc(states: RuncContainerState[]): RuncLike {
  return { state: async (id: string) => states.find((s) => s.id === id) } as unknown as RuncLike;
}

test('a plain runc container: record from its state and config.json, cgroup from /proc', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-runc-root-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const bundle = join(dir, 'bundle');
  await mkdir(join(bundle, 'rootfs'), { recursive: true });
  const config = {
    root: { path: 'rootfs' },
    process: { args: ['/bin/sh', '-c', 'sleep 1000'] },
    mounts: [],
    linux: { namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'mount' }] },
  };
  await writeFile(join(bundle, 'config.json'), JSON.stringify(config));
  await mkdir(join(dir, 'proc', '42'), { recursive: true });
  await writeFile(join(dir, 'proc', '42', 'cgroup'), '1:cpu:/c1\n0::/user.slice/c1\n');
  const runc = fakeRunc([
    { id: 'c1', pid: 42, status: 'running', bundle },
    { id: 'c2', pid: 0, status: 'stopped', bundle },
  ]);
  const a = await adoptRuncContainer(runc, 'c1', '/run/runc', { procRoot: join(dir, 'proc') });
  assert.equal(a.record.name, 'c1');
  assert.equal(a.record.net, 'none');
  assert.deepEqual(a.record.command, ['/bin/sh', '-c', 'sleep 1000']);
  assert.deepEqual(a.record.origin, { kind: 'run' });
  assert.equal(a.bundle, bundle);
  assert.equal(a.cgroup, '/user.slice/c1');
  await assert.rejects(adoptRuncContainer(runc, 'nope', '/run/runc'), {
    code: 'FERRY_E_CONTAINER_UNKNOWN',
    message: /runc root \/run\/runc/,
  });
  await assert.rejects(adoptRuncContainer(runc, 'c2', '/run/runc'), {
    code: 'FERRY_E_CONTAINER_NOT_RUNNING',
  });
  await assert.rejects(adoptRuncContainer(runc, '../x', '/run/runc'), { code: 'FERRY_E_INPUT_NAME' });
});

test('network: a namespace of its own moves; the host network or a joined namespace is refused', () => {
  assert.deepEqual(netModeOf({ linux: { namespaces: [{ type: 'network' }] } }, 'c'), { mode: 'none' });
  assert.deepEqual(
    netModeOf({ linux: { namespaces: [{ type: 'network', path: '/run/netns/fy-a-c-web' }] } }, 'web'),
    {
      mode: 'own',
      netns: 'fy-a-c-web',
      prefix: 'fy-a-c',
    },
  );
  assert.throws(() => netModeOf({ linux: { namespaces: [{ type: 'pid' }] } }, 'c'), {
    code: 'FERRY_E_INPUT_ARGS',
    message: /host's network/,
  });
  assert.throws(
    () => netModeOf({ linux: { namespaces: [{ type: 'network', path: '/run/netns/x' }] } }, 'c'),
    {
      code: 'FERRY_E_INPUT_ARGS',
      message: /\/run\/netns\/x/,
    },
  );
});

test('a namespace ferry made: address and MAC from its eth0; one without them is refused', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-runc-root-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const bundle = join(dir, 'bundle');
  await mkdir(join(bundle, 'rootfs'), { recursive: true });
  await writeFile(
    join(bundle, 'config.json'),
    JSON.stringify({
      root: { path: 'rootfs' },
      process: { args: ['redis-server'] },
      linux: { namespaces: [{ type: 'network', path: '/run/netns/fy-a-c-web' }] },
    }),
  );
  const runc = fakeRunc([{ id: 'web', pid: 1, status: 'running', bundle }]);
  const net = {
    eth0: async (ns: string) =>
      ns === 'fy-a-c-web' ? { ip: '10.1.0.50', prefixLen: 24, mac: '02:FC:0A:01:00:32' } : undefined,
    linkExists: async (l: string) => l === 'fvweb',
  };
  const a = await adoptRuncContainer(runc, 'web', '/r', { net, hostVeth: (n) => `fv${n}` });
  assert.equal(a.record.net, 'own');
  assert.equal(a.record.ip, '10.1.0.50');
  assert.equal(a.record.mac, '02:fc:0a:01:00:32');
  assert.deepEqual(a.network, { netnsPrefix: 'fy-a-c', prefixLen: 24 });
  await assert.rejects(adoptRuncContainer(runc, 'web', '/r', { net, hostVeth: (n) => `other${n}` }), {
    code: 'FERRY_E_INPUT_ARGS',
  });
});

test("a container an earlier agentless migration brought: its directory is ferry's; a user's bundle is not", () => {
  assert.equal(
    receivedContainerDir(
      '/var/lib/ferry/agentless/runc',
      'c1',
      '/var/lib/ferry/agentless/containers/c1/bundle',
    ),
    '/var/lib/ferry/agentless/containers/c1',
  );
  assert.equal(receivedContainerDir('/run/runc', 'c1', '/home/u/c1'), undefined);
  assert.equal(receivedContainerDir('/x/runc', 'c1', '/x/containers/c2/bundle'), undefined);
});
