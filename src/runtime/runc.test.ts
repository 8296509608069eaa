import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ExecOptions, ExecResult, Runner } from './exec.ts';
import { Runc } from './runc.ts';

class Recorder implements Runner {
  calls: string[][] = [];
  async run(argv: string[], _o?: ExecOptions): Promise<ExecResult> {
    this.calls.push(argv);
    return { argv, code: 0, signal: null, stdout: '', stderr: '', ms: 1 };
  }
}

test('checkpoint and restore move file locks unless told not to', async () => {
  const r = new Recorder();
  const runc = new Runc(r, { root: '/run/x' });
  await runc.checkpoint('c', { imagePath: '/i', workPath: '/w' });
  await runc.restore('c', { bundle: '/b', imagePath: '/i', workPath: '/w' });
  await runc.checkpoint('c', { imagePath: '/i', workPath: '/w', fileLocks: false });
  await runc.checkpoint('c', { imagePath: '/i', workPath: '/w', preDump: true });
  const has = (i: number) => r.calls[i]!.includes('--file-locks');
  assert.deepEqual([has(0), has(1), has(2), has(3)], [true, true, false, false]);
});
