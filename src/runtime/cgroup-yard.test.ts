import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cgroupYardFor, yardDirName } from './cgroup-yard.ts';

// a host with v1 controllers beside v2 (the test machine's layout)
const HYBRID_CGROUP = ['2:cpu,cpuacct:/a', '1:name=systemd:/a', '0::/a', ''].join('\n');
const mount = (id: number, point: string, fs: string, opts: string) =>
  `${id} 31 0:${id} / ${point} rw,relatime shared:${id} - ${fs} ${fs} ${opts}`;
const HYBRID_MOUNTS = [
  '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
  mount(32, '/sys/fs/cgroup/cpu,cpuacct', 'cgroup', 'rw,cpu,cpuacct'),
  mount(40, '/sys/fs/cgroup/systemd', 'cgroup', 'rw,name=systemd'),
  mount(41, '/sys/fs/cgroup/unified', 'cgroup2', 'rw'),
].join('\n');

describe('cgroupYardFor', () => {
  it('names directories as CRIU does: controllers as listed, a named hierarchy by its name, v2 "unified"', () => {
    assert.equal(yardDirName('cpu,cpuacct'), 'cpu,cpuacct');
    assert.equal(yardDirName('name=systemd'), 'systemd');
    assert.equal(yardDirName(''), 'unified');
  });

  it('takes /sys/fs/cgroup when every hierarchy is mounted there under that name', () => {
    assert.equal(cgroupYardFor(HYBRID_CGROUP, HYBRID_MOUNTS), '/sys/fs/cgroup');
  });

  it('refuses a layout CRIU would not find its way in: a hierarchy missing, elsewhere, or of another kind', () => {
    const without = (point: string) =>
      HYBRID_MOUNTS.split('\n')
        .filter((l) => !l.includes(` ${point} `))
        .join('\n');
    assert.equal(cgroupYardFor(HYBRID_CGROUP, without('/sys/fs/cgroup/unified')), undefined);
    assert.equal(cgroupYardFor(HYBRID_CGROUP, without('/sys/fs/cgroup/systemd')), undefined);
    // cpu and cpuacct mounted apart: no "cpu,cpuacct" directory
    const apart = `${without('/sys/fs/cgroup/cpu,cpuacct')}\n${mount(50, '/sys/fs/cgroup/cpu', 'cgroup', 'rw,cpu')}`;
    assert.equal(cgroupYardFor(HYBRID_CGROUP, apart), undefined);
    // a v1 mount where the v2 hierarchy should be
    const wrong = HYBRID_MOUNTS.replace('cgroup2 cgroup2 rw', 'cgroup cgroup rw,pids');
    assert.equal(cgroupYardFor(HYBRID_CGROUP, wrong), undefined);
    // a bind of a sub-cgroup is not the hierarchy's root
    assert.equal(cgroupYardFor(HYBRID_CGROUP, HYBRID_MOUNTS.replace('0:41 / ', '0:41 /sub ')), undefined);
  });

  it('gives a host with v2 alone no yard (CRIU mounts its one hierarchy)', () => {
    const v2 = '35 23 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate';
    assert.equal(cgroupYardFor('0::/user.slice\n', v2), undefined);
  });
});
