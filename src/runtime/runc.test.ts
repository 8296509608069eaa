import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
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

test('a dump with skipInFlight hands CRIU a config file of its own that says so, removed afterwards', async () => {
  const seen: { file?: string; text?: string }[] = [];
  const r: Runner = {
    run: async (argv, o) => {
      const file = o?.env?.['CRIU_CONFIG_FILE'];
      seen.push(file ? { file, text: readFileSync(file, 'utf8') } : {});
      return { argv, code: 0, signal: null, stdout: '', stderr: '', ms: 1 };
    },
  };
  const runc = new Runc(r, { root: '/run/x' });
  await runc.checkpoint('c', { imagePath: '/i', workPath: '/w', skipInFlight: true });
  await runc.checkpoint('c', { imagePath: '/i', workPath: '/w' });
  assert.equal(seen[0]!.text, 'skip-in-flight\n');
  assert.equal(existsSync(seen[0]!.file!), false, 'removed after the dump');
  assert.deepEqual(seen[1], {}, 'no file without the option');
});
