import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firstCriuError } from './criu-log.ts';

test('skips the harmless RLIMIT_NOFILE line and returns the first real error', () => {
  const log = [
    '(00.000010) Version: 4.2.1',
    "(00.046628) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted",
    '(00.050000) Error (criu/files-reg.c:2101): File tmp/x has bad size 10 (expect 20)',
    '(00.060000) Error (criu/cr-restore.c:2400): Restoring FAILED.',
  ].join('\n');
  assert.equal(firstCriuError(log), 'Error (criu/files-reg.c:2101): File tmp/x has bad size 10 (expect 20)');
});

test('no error line gives undefined', () => {
  assert.equal(firstCriuError('(00.1) Dumping finished successfully\n'), undefined);
});
