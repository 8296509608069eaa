// The virtual machine of the vm suite: Debian's stock kernel (unpacked by `scripts/setup.sh qemu`, never built) and
// an initramfs assembled here from the host's busybox, redis-server and the libraries it loads, plus the virtio
// network modules; QEMU started on a tap device, and driven over QMP (its JSON protocol on a unix socket); and the
// guest that moves between two QEMU processes (`Vm`). What the host offers it is in vm-host.ts.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { cp, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
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

/** What a host without QEMU or the kernel is told to do. */
export const SETUP = 'run `scripts/setup.sh qemu` (as root) first';

/**
 * The kernel `scripts/setup.sh qemu` unpacked, and its version (the folder of its modules). Its uncompressed copy
 * when there is one: QEMU boots that through its PVH entry, and a guest under TCG does not spend seconds
 * decompressing itself.
 */
export async function findKernel(): Promise<{ kernel: string; kver: string }> {
  const files = await readdir(VM_DIR).catch(() => [] as string[]);
  const k = files.find((f) => f.startsWith('vmlinuz-'));
  if (!k) throw new Error(`the vm suite needs Debian's kernel in ${VM_DIR}: ${SETUP}`);
  const kver = k.slice('vmlinuz-'.length);
  const plain = `vmlinux-${kver}`;
  return { kernel: join(VM_DIR, files.includes(plain) ? plain : k), kver };
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
  // QEMU dies with the bench (setpriv execs it with a parent-death signal): a bench killed outright must not leave
  // a guest emulated on a core, with no one to stop it
  const argv = ['setpriv', '--pdeathsig', 'KILL', '--', ...qemuArgv(s)];
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

export type MigrationMode = 'precopy' | 'postcopy';

/** A guest that boots once and then moves between QEMU processes on two tap devices, one after the other. */
export class Vm {
  private n = 0;
  proc?: QemuProcess;
  qmp?: Qmp;
  tapIndex = 0;
  readonly base: Omit<VmSpec, 'tap' | 'qmpSocket' | 'console' | 'incoming'>;
  readonly work: string;
  readonly taps: [string, string];

  constructor(
    base: Omit<VmSpec, 'tap' | 'qmpSocket' | 'console' | 'incoming'>,
    work: string,
    taps: [string, string],
  ) {
    this.base = base;
    this.work = work;
    this.taps = taps;
  }

  /** The serial console of the QEMU process running the guest now (a kernel panic shows there). */
  console = '';

  private spec(tap: number, incoming?: string): VmSpec {
    const i = this.n++;
    return {
      ...this.base,
      tap: this.taps[tap]!,
      qmpSocket: join(this.work, `vm${i}.qmp`),
      console: join(this.work, `vm${i}.console`),
      ...(incoming ? { incoming } : {}),
    };
  }

  async boot(): Promise<void> {
    await this.stop();
    const s = this.spec(0);
    this.tapIndex = 0;
    this.console = s.console;
    this.proc = startQemu(s);
    this.qmp = await Qmp.open(s.qmpSocket);
  }

  /** Migrates to a new QEMU process on the other tap; QEMU's own report of it. */
  async migrate(mode: MigrationMode, port: number): Promise<MigrateInfo & { wallMs: number }> {
    const src = this.qmp!;
    const srcProc = this.proc!;
    const to = 1 - this.tapIndex;
    const s = this.spec(to, 'defer');
    const dst = startQemu(s);
    const dq = await Qmp.open(s.qmpSocket);
    const caps = [{ capability: 'postcopy-ram', state: mode === 'postcopy' }];
    await dq.cmd('migrate-set-capabilities', { capabilities: caps });
    await src.cmd('migrate-set-capabilities', { capabilities: caps });
    // an unshaped local link, as ferry's side gets: QEMU's default cap (32 MiB/s) would measure the cap
    await src.cmd('migrate-set-parameters', { 'max-bandwidth': 10 * 2 ** 30 });
    await dq.cmd('migrate-incoming', { uri: `tcp:127.0.0.1:${port}` });
    const t0 = performance.now();
    await src.cmd('migrate', { uri: `tcp:127.0.0.1:${port}` });
    let info: MigrateInfo = { status: 'setup' };
    let switched = false;
    for (;;) {
      info = await src.cmd<MigrateInfo>('query-migrate');
      if (mode === 'postcopy' && !switched && info.status === 'active') {
        // straight to post-copy: the guest runs on the destination and pulls its pages, as CRIU's lazy pages do
        await src.cmd('migrate-start-postcopy');
        switched = true;
      }
      if (info.status === 'completed' || info.status === 'failed' || info.status === 'cancelled') break;
      await sleep(20);
    }
    const wallMs = performance.now() - t0;
    if (info.status !== 'completed') {
      await dst.kill();
      dq.close();
      throw new Error(`QEMU migration ${info.status}: ${info['error-desc'] ?? ''}`);
    }
    await src.cmd('quit').catch(() => {});
    src.close();
    await srcProc.kill();
    this.proc = dst;
    this.qmp = dq;
    this.tapIndex = to;
    this.console = s.console;
    return { ...info, wallMs };
  }

  async stop(): Promise<void> {
    this.qmp?.close();
    await this.proc?.kill();
    this.qmp = undefined;
    this.proc = undefined;
  }

  async panicked(): Promise<boolean> {
    return /Kernel panic|BUG: unable to handle/.test(await readFile(this.console, 'utf8').catch(() => ''));
  }
}
