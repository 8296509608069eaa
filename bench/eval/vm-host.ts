// What this host offers the vm suite: whether QEMU and the kernel `scripts/setup.sh qemu` unpacks are there, and
// which accelerator runs the guest (KVM or TCG).
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Runner } from '../../src/runtime/exec.ts';
import { sleep } from '../common.ts';
import { findKernel, Qmp, SETUP, startQemu, VM_DIR, type VmImage, type VmSpec } from './vm-qemu.ts';

/**
 * Why this host cannot run the vm suite (QEMU or the kernel missing), or undefined. Checked before anything is
 * set up: without it a missing QEMU surfaces only as QMP sockets that never appear, after their timeouts.
 */
export async function vmPrerequisiteMissing(runner: Runner): Promise<string | undefined> {
  const q = await runner
    .run(['qemu-system-x86_64', '--version'], { allowFail: true, timeoutMs: 30_000 })
    .catch(() => undefined);
  if (q?.code !== 0) return `the vm suite needs qemu-system-x86_64: ${SETUP}`;
  try {
    const { kver } = await findKernel();
    await readdir(join(VM_DIR, 'modules', kver, 'kernel'));
  } catch {
    return `the vm suite needs Debian's kernel and its modules in ${VM_DIR}: ${SETUP}`;
  }
  return undefined;
}

export interface Accel {
  accel: 'kvm' | 'tcg';
  why: string;
}

/** TCG when the host's facts rule KVM out (no /dev/kvm, or a CPU without vmx/svm); undefined: KVM is worth a try. */
export function accelWithoutTrial(devKvm: boolean, cpuinfo: string): Accel | undefined {
  if (!devKvm) return { accel: 'tcg', why: 'this host has no /dev/kvm' };
  const flags = cpuinfo.match(/^flags\s*:(.*)$/m)?.[1] ?? '';
  if (/\b(vmx|svm)\b/.test(flags)) return undefined;
  return {
    accel: 'tcg',
    why: "/dev/kvm is there, but this CPU shows no vmx/svm, which KVM needs to run Debian's stock kernel as a guest",
  };
}

/**
 * KVM or TCG. Without /dev/kvm, or on a CPU that shows neither vmx nor svm (a KVM there, such as a paravirtual
 * one, runs no stock guest kernel), TCG at once. Otherwise the VM is booted with KVM and must print its init's
 * first line: /dev/kvm that QEMU accepts may still run nothing.
 */
export async function pickAccel(
  image: VmImage,
  work: string,
  tap: string,
  mac: string,
  ip: string,
): Promise<Accel> {
  const known = accelWithoutTrial(
    (await stat('/dev/kvm').catch(() => undefined)) !== undefined,
    await readFile('/proc/cpuinfo', 'utf8').catch(() => ''),
  );
  if (known) return known;
  const spec: VmSpec = {
    image,
    memoryMiB: 128,
    tap,
    mac,
    ip,
    accel: 'kvm',
    qmpSocket: join(work, 'kvm.qmp'),
    console: join(work, 'kvm.console'),
  };
  const q = startQemu(spec);
  try {
    const qmp = await Qmp.open(spec.qmpSocket, 15_000);
    const kvm = await qmp.cmd<{ enabled: boolean; present: boolean }>('query-kvm');
    qmp.close();
    if (!kvm.enabled) return { accel: 'tcg', why: 'QEMU could not enable KVM' };
    const limit = 30_000;
    const t0 = performance.now();
    while (performance.now() - t0 < limit) {
      const text = await readFile(spec.console, 'utf8').catch(() => '');
      if (text.includes('ferry-vm:')) return { accel: 'kvm', why: 'KVM runs the guest' };
      await sleep(500);
    }
    return {
      accel: 'tcg',
      why: `/dev/kvm is there and QEMU enables KVM, but the guest printed nothing within ${limit / 1000} s`,
    };
  } catch (err) {
    return { accel: 'tcg', why: `KVM failed: ${(err as Error).message}` };
  } finally {
    await q.kill();
  }
}
