import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CheckpointOptions, StagedCheckpoint } from '../../runtime/runc.ts';
import { finalCheckpoint, type MigrationContext } from './strategy.ts';

/** A context with only what finalCheckpoint reads; `log` records the staged dump's and runc's calls. */
function context(log: string[]): MigrationContext {
  const staged: StagedCheckpoint = {
    go: async (timeoutMs) => {
      log.push(`go ${timeoutMs}`);
      return { ms: 1 };
    },
    cancel: async () => {
      log.push('cancel');
    },
  };
  const runc = {
    checkpoint: async (_id: string, o: CheckpointOptions) => {
      log.push(`checkpoint ${o.parentPath ?? ''}`.trim());
      return { ms: 1 };
    },
  };
  return {
    name: 'c',
    images: '/i',
    tcpEstablished: false,
    dumpTimeoutMs: 700,
    req: {},
    host: { runc },
    stagedDump: staged,
  } as unknown as MigrationContext;
}

test('the final dump releases the staged one with what is left of the freeze ceiling', async () => {
  const log: string[] = [];
  const ctx = context(log);
  await finalCheckpoint(ctx);
  assert.deepEqual(log, ['go 700']);
  assert.equal(ctx.stagedDump, undefined);
});

test('a final dump with a parent cancels the staged one (which has none) before its own', async () => {
  const log: string[] = [];
  const ctx = context(log);
  await finalCheckpoint(ctx, 'round-2');
  assert.deepEqual(log, ['cancel', 'checkpoint round-2']);
  assert.equal(ctx.stagedDump, undefined);
});
