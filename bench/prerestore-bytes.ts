// What a post-copy migration sends before the restore, file by file: moves a container with a ballast between two
// testbed hosts with the destination held right before `runc restore` (a test-only fault point), lists what arrived
// in its incoming directory then, and prints it beside the report's byte count.
//
//   node bench/prerestore-bytes.ts [--mib 200] [--strategy postcopy] [--compress on|off|auto]
import { existsSync } from 'node:fs';
import { cp, readdir, rm, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import type { StrategyName } from '../src/api/types.ts';
import { ballastServer, labUp, migrate, removeContainer, startContainer } from './eval/lab.ts';

const { values } = parseArgs({
  options: {
    mib: { type: 'string', default: '200' },
    strategy: { type: 'string', default: 'postcopy' },
    compress: { type: 'string', default: 'auto' },
  },
});
const mib = Number(values.mib);
const log = (m: string) => process.stderr.write(`${m}\n`);
const lab = await labUp(
  'prbyt',
  { hosts: ['a', 'b'], agentEnv: { b: { FERRY_FAULTS: 'hold-at:dest:restoring@pb' } } },
  [join(import.meta.dirname, '..', 'bin', 'ferry')],
  log,
);
async function files(dir: string): Promise<[string, number][]> {
  const out: [string, number][] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => [])) {
    const p = join(e.parentPath, e.name);
    if (e.isFile()) out.push([relative(dir, p), (await stat(p)).size]);
  }
  return out.sort((x, y) => y[1] - x[1]);
}
try {
  await startContainer(lab, 'a', 'pb', ballastServer(mib));
  const hd = join(lab.tb.dir, 'hosts', 'b');
  const held = join(hd, 'faults', 'dest_restoring@pb.held');
  const report = migrate(lab, 'pb', 'a', 'b', {
    strategy: values.strategy as StrategyName,
    compress: values.compress as 'on' | 'off' | 'auto',
  });
  for (let i = 0; !existsSync(held) && i < 600; i++) await new Promise((r) => setTimeout(r, 100));
  const list = (await files(hd)).filter(([f]) => !/^(faults|logs|runc|pki)\//.test(f) && !f.endsWith('.log'));
  let total = 0;
  for (const [f, n] of list) {
    total += n;
    console.log(`${String(n).padStart(10)}  ${f}`);
  }
  console.log(`${String(total).padStart(10)}  (every file on the destination but its logs)`);
  if (process.env['KEEP_IMAGES'])
    await cp(join(hd, 'images'), process.env['KEEP_IMAGES'], {
      recursive: true,
      filter: (src) => !src.endsWith('.socket'),
    });
  await rm(held, { force: true });
  const r = await report;
  console.log(
    JSON.stringify({
      ok: r.ok,
      bytesSent: r.bytesSent,
      zero: r.zeroBytesSkipped,
      streamedDuringDump: r.streamedDuringDump,
      phases: r.phases,
    }),
  );
} finally {
  await removeContainer(lab, 'a', 'pb');
  await removeContainer(lab, 'b', 'pb');
  await lab.down();
}
