// The vm suite's QEMU command line and its choice of accelerator, without QEMU: both ends of a migration must be
// started alike, and a host that rules KVM out must not cost a trial boot.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { accelWithoutTrial } from '../bench/eval/vm-host.ts';
import { qemuArgv, type VmSpec } from '../bench/eval/vm-qemu.ts';

describe('vm suite: QEMU command line', () => {
  const spec: VmSpec = {
    image: { kernel: '/k', initrd: '/i' },
    memoryMiB: 320,
    tap: 'tap0',
    mac: '52:54:00:fe:0a:01',
    ip: '10.0.0.9/24',
    accel: 'tcg',
    qmpSocket: '/q.sock',
    console: '/c.log',
  };

  it('starts the destination like the source, but waiting for the migration', () => {
    const src = qemuArgv(spec);
    const dst = qemuArgv({
      ...spec,
      tap: 'tap1',
      qmpSocket: '/q2.sock',
      console: '/c2.log',
      incoming: 'defer',
    });
    assert.deepEqual(dst.slice(-2), ['-incoming', 'defer']);
    assert.ok(!src.includes('-incoming'));
    const strip = (a: string[]) => a.filter((x) => !/tap[01]|q2?\.sock|c2?\.log|defer|-incoming/.test(x));
    assert.deepEqual(strip(dst), strip(src));
  });

  it('names the accelerator and hands the guest its address', () => {
    const a = qemuArgv({ ...spec, accel: 'kvm' });
    assert.ok(a.includes('q35,accel=kvm'));
    assert.ok(a.some((x) => x.includes('ferryip=10.0.0.9/24')));
    assert.ok(a.some((x) => x.startsWith('tap,id=n0,ifname=tap0,')));
  });
});

describe('vm suite: the accelerator without a trial', () => {
  const cpu = (flags: string) =>
    `processor\t: 0\nmodel name\t: x\nflags\t\t: fpu vme ${flags} sse2\nbugs\t\t: spectre_v1\n`;

  it('picks TCG without /dev/kvm, or on a CPU without vmx/svm, and says why', () => {
    assert.deepEqual(accelWithoutTrial(false, cpu('vmx')), {
      accel: 'tcg',
      why: 'this host has no /dev/kvm',
    });
    const r = accelWithoutTrial(true, cpu('hypervisor'));
    assert.equal(r?.accel, 'tcg');
    assert.match(r?.why ?? '', /no vmx\/svm/);
    // a flag's name inside another's is not the flag
    assert.equal(accelWithoutTrial(true, cpu('vmx_ept_ad svmx'))?.accel, 'tcg');
  });

  it('leaves KVM to a trial boot when the CPU shows vmx or svm', () => {
    assert.equal(accelWithoutTrial(true, cpu('vmx')), undefined);
    assert.equal(accelWithoutTrial(true, cpu('svm')), undefined);
  });
});
