// The virtual machine of the vm suite: Debian's stock kernel (unpacked by `scripts/setup.sh qemu`, never built) and
// an initramfs assembled here from the host's busybox, redis-server and the libraries it loads, plus the virtio
// network modules; QEMU started on a tap device, and driven over QMP (its JSON protocol on a unix socket).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { cp, mkdir, readdir, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { basename, dirname, join } from 'node:path';
import type { Runner } from '../../src/runtime/exec.ts';
import { sleep } from '../common.ts';

/** Where `scripts/setup.sh qemu` puts the kernel and its modules. */
export const VM_DIR = '/opt/ferry/vm';

/** The network modules the stock kernel builds as modules, in the order they load (found with modinfo). */
const WANTED = ['virtio_pci', 'virtio_net'];

export interface VmImage {
  kernel: string;
  initrd: string;
}

async function findKernel(): Promise<{ kernel: string; kver: string }> {
  const k = (await readdir(VM_DIR).catch(() => [])).find((f) => f.startsWith('vmlinuz-'));
  if (!k) throw new Error(`no kernel in ${VM_DIR}: run scripts/setup.sh qemu (as root) first`);
  return { kernel: join(VM_DIR, k), kver: k.slice('vmlinuz-'.length) };
}

/** Module files in load order: each one's dependencies (modinfo's `depends`) before it. */
async function moduleOrder(runner: Runner, kver: string): Promise<string[]> {
  const root = join(VM_DIR, 'modules', kver, 'kernel');
  const r = await runner.run(['find', root, '-name', '*.ko*']);
  const byName = new Map(
    r.stdout
      .split('\n')
      .filter(Boolean)
      .map((f) => [basename(f).replace(/\.ko.*$/, ''), f]),
  );
  const order: string[] = [];
  const visit = async (name: string): Promise<void> => {
    const file = byName.get(name) ?? byName.get(name.replace(/-/g, '_'));
    if (!file || order.includes(file)) return; // built in, or already placed
    const deps = (await runner.run(['modinfo', '-F', 'depends', file])).stdout.trim();
    for (const d of deps.split(',').filter(Boolean)) await visit(d);
    order.push(file);
  };
  for (const m of WANTED) await visit(m);
  return order;
}

const INIT = (modules: string[]) => `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
${modules.map((m) => `insmod /lib/modules/${m}`).join('\n')}
ip=$(sed -n 's/.*ferryip=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
ip link set lo up
ip addr add "$ip" dev eth0
ip link set eth0 up
echo "ferry-vm: eth0 $ip"
exec /usr/bin/redis-server --port 6379 --bind 0.0.0.0 --protected-mode no --save '' --appendonly no --dir /tmp
`;

/** Builds the initramfs into `work` (gzip'd newc cpio) and returns it with the kernel. */
export async function buildVmImage(runner: Runner, work: string): Promise<VmImage> {
  const { kernel, kver } = await findKernel();
  const root = join(work, 'root');
  await mkdir(join(root, 'bin'), { recursive: true });
  for (const d of ['proc', 'sys', 'dev', 'tmp', 'etc', 'lib/modules'])
    await mkdir(join(root, d), { recursive: true });
  await cp('/usr/bin/busybox', join(root, 'bin/busybox'));
  // Debian's redis-server is redis-check-rdb under another name: the binary decides what it is by its name
  const redis = '/usr/bin/redis-check-rdb';
  const ldd = await runner.run(['ldd', redis]);
  const libs = [...new Set(ldd.stdout.match(/(\/\S+)\s\(0x/g)?.map((m) => m.split(' ')[0]!) ?? [])];
  await mkdir(join(root, 'usr/bin'), { recursive: true });
  await cp(redis, join(root, 'usr/bin/redis-server'), { dereference: true });
  for (const l of libs) {
    await mkdir(join(root, dirname(l)), { recursive: true });
    await cp(l, join(root, l), { dereference: true });
  }
  const modules = await moduleOrder(runner, kver);
  for (const m of modules) await cp(m, join(root, 'lib/modules', basename(m)));
  await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/:/bin/sh\n');
  await writeFile(join(root, 'init'), INIT(modules.map((m) => basename(m))), { mode: 0o755 });
  const initrd = join(work, 'initrd.gz');
  await runner.run([
    'sh',
    '-c',
    'cd "$1" && find . | busybox cpio -o -H newc | gzip -1 > "$2"',
    'sh',
    root,
    initrd,
  ]);
  return { kernel, initrd };
}

export interface VmSpec {
  image: VmImage;
  memoryMiB: number;
  tap: string;
  mac: string;
  /** ADDRESS/PREFIX of the guest's eth0. */
  ip: string;
  accel: 'kvm' | 'tcg';
  qmpSocket: string;
  console: string;
  /** `tcp:HOST:PORT`: start as a migration's destination. */
  incoming?: string;
}

/** QEMU's argv: the same on both ends of a migration but for -incoming. */
export function qemuArgv(s: VmSpec): string[] {
  return [
    'qemu-system-x86_64',
    '-machine',
    `q35,accel=${s.accel}`,
    '-m',
    String(s.memoryMiB),
    '-smp',
    '1',
    '-nodefaults',
    '-display',
    'none',
    '-kernel',
    s.image.kernel,
    '-initrd',
    s.image.initrd,
    '-append',
    `console=ttyS0 quiet panic=-1 ferryip=${s.ip}`,
    '-serial',
    `file:${s.console}`,
    '-netdev',
    `tap,id=n0,ifname=${s.tap},script=no,downscript=no`,
    '-device',
    `virtio-net-pci,netdev=n0,mac=${s.mac}`,
    '-qmp',
    `unix:${s.qmpSocket},server=on,wait=off`,
    '-no-reboot',
    ...(s.incoming ? ['-incoming', s.incoming] : []),
  ];
}

export interface QemuProcess {
  pid: number;
  exited: Promise<number | null>;
  stderr(): string;
  kill(): Promise<void>;
}

export function startQemu(s: VmSpec): QemuProcess {
  const argv = qemuArgv(s);
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const exited = new Promise<number | null>((resolve) => {
    child.on('close', (code) => resolve(code));
    child.on('error', () => resolve(null));
  });
  return {
    pid: child.pid ?? 0,
    exited,
    stderr: () => err,
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** A QMP connection: one command at a time, events dropped. */
export class Qmp {
  private buf = '';
  private waiting: ((msg: Record<string, unknown>) => void)[] = [];
  private readonly sock: Socket;

  private constructor(sock: Socket) {
    this.sock = sock;
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      for (let i = this.buf.indexOf('\n'); i >= 0; i = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        if (!line.trim()) continue;
        const msg = JSON.parse(line) as Record<string, unknown>;
        if ('event' in msg) continue;
        this.waiting.shift()?.(msg);
      }
    });
  }

  /** Connects (retrying while QEMU creates its socket) and leaves capability negotiation. */
  static async open(path: string, timeoutMs = 30_000): Promise<Qmp> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      try {
        const sock = connect(path);
        await once(sock, 'connect');
        const q = new Qmp(sock);
        await q.next(); // the greeting
        await q.cmd('qmp_capabilities');
        return q;
      } catch (err) {
        if (performance.now() > deadline) throw new Error(`QMP at ${path}: ${(err as Error).message}`);
        await sleep(100);
      }
    }
  }

  private next(): Promise<Record<string, unknown>> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  async cmd<T = unknown>(execute: string, args?: Record<string, unknown>): Promise<T> {
    const reply = this.next();
    this.sock.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
    const msg = await reply;
    if ('error' in msg) throw new Error(`QMP ${execute}: ${JSON.stringify(msg['error'])}`);
    return msg['return'] as T;
  }

  close(): void {
    this.sock.destroy();
  }
}

export interface MigrateInfo {
  status: string;
  'total-time'?: number;
  downtime?: number;
  'setup-time'?: number;
  ram?: { transferred: number; total: number; 'postcopy-requests'?: number; 'dirty-sync-count'?: number };
  'error-desc'?: string;
}
