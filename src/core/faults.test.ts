// Test-only faults: scoped to one container or not, kill-at and hold-at points.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Faults, holdFileName } from './faults.ts';

test('a fault with @NAME applies to that container only; one without applies to all', () => {
  const f = new Faults(['invalid-bundle@web', 'criu-fail:dump']);
  assert.equal(f.has('invalid-bundle', 'web'), true);
  assert.equal(f.has('invalid-bundle', 'db'), false);
  assert.equal(f.has('criu-fail:dump', 'db'), true);
  assert.equal(f.has('criu-fail:restore', 'web'), false);
});

test('kill-at ends the process at its point, for its container only', async () => {
  let died = 0;
  const f = new Faults(['kill-at:source:transfer@web'], { die: () => died++ });
  await f.reach('source:transfer', 'db');
  assert.equal(died, 0);
  await f.reach('source:transfer', 'web');
  assert.equal(died, 1);
});

test('hold-at waits at its point until its file is removed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-faults-'));
  try {
    const f = new Faults(['hold-at:source:plan@web'], { holdDir: dir });
    let passed = false;
    const reached = f.reach('source:plan', 'web').then(() => {
      passed = true;
    });
    const file = join(dir, holdFileName('source:plan', 'web'));
    while (!existsSync(file)) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(passed, false, 'held');
    rmSync(file);
    await reached;
    assert.equal(passed, true, 'released');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
