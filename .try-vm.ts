import { mkdtemp } from 'node:fs/promises';
import { ProcessRunner } from './src/runtime/exec.ts';
import { buildVmImage, startQemu, Qmp } from './bench/eval/vm-qemu.ts';
const runner = new ProcessRunner();
const work = await mkdtemp('/tmp/evalb/vm-');
const image = await buildVmImage(runner, work);
const sh = (c: string) => runner.run(['sh', '-c', c], { allowFail: true });
await sh('ip link add evbtbr type bridge forward_delay 0 stp_state 0; ip addr add 10.215.0.1/24 dev evbtbr; ip link set evbtbr up; for t in evbtap0 evbtap1; do ip tuntap add $t mode tap; ip link set $t master evbtbr up; done');
const base = { image, memoryMiB: 128, mac: '52:54:00:fe:00:01', ip: '10.215.0.2/24', accel: 'tcg' as const };
const q = startQemu({ ...base, tap: 'evbtap0', qmpSocket: `${work}/a.qmp`, console: `${work}/a.log` });
const t1 = performance.now();
const ping = async (label: string) => {
  for (let i = 0; i < 400; i++) {
    const r = await sh('redis-cli -h 10.215.0.2 ping');
    if (r.stdout.includes('PONG')) { console.log(label, 'PONG after', Math.round(performance.now() - t1), 'ms'); return true; }
    await new Promise((r) => setTimeout(r, 500));
  }
  return false;
};
let d;
try {
  const qa = await Qmp.open(`${work}/a.qmp`);
  await ping('boot');
  d = startQemu({ ...base, tap: 'evbtap1', qmpSocket: `${work}/b.qmp`, console: `${work}/b.log`, incoming: 'defer' });
  const qb = await Qmp.open(`${work}/b.qmp`);
  await qa.cmd('migrate-set-parameters', { 'max-bandwidth': 10 * 2 ** 30 });
  await qb.cmd('migrate-incoming', { uri: 'tcp:127.0.0.1:49999' });
  await qa.cmd('migrate', { uri: 'tcp:127.0.0.1:49999' });
  for (;;) { const i: any = await qa.cmd('query-migrate'); if (i.status !== 'active' && i.status !== 'setup') { console.log(i.status, i['total-time'], i.downtime); break; } await new Promise((r) => setTimeout(r, 50)); }
  console.log('dst status', await qb.cmd('query-status'));
  console.log((await sh('bridge fdb show br evbtbr | grep -i 52:54')).stdout);
  await qa.cmd('quit').catch(() => {});
  await q.kill();
  const t2 = performance.now();
  await ping('after migration');
  console.log('after-migration wait', Math.round(performance.now() - t2));
  console.log((await sh('bridge fdb show br evbtbr | grep -i 52:54; ip -s link show evbtap1')).stdout);
} finally {
  await q.kill(); await d?.kill();
  console.log(q.stderr().slice(-300), d?.stderr().slice(-300));
  await sh('ip link del evbtap0; ip link del evbtap1; ip link del evbtbr');
}
