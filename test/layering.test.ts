// The layering check bites: the repository's own dependency-cruiser config, run over tiny trees that break
// (or keep) one rule each.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { cruise, type ICruiseResult } from 'dependency-cruiser';
import extractDepcruiseOptions from 'dependency-cruiser/config-utl/extract-depcruise-options';

const root = fileURLToPath(new URL('..', import.meta.url));
const fixtures = fileURLToPath(new URL('fixtures/layering/', import.meta.url));

async function violations(fixture: string, dirs = ['src']): Promise<string[]> {
  const options = await extractDepcruiseOptions(`${root}.dependency-cruiser.cjs`);
  const result = await cruise(dirs, { ...options, validate: true, baseDir: `${fixtures}${fixture}` });
  const out = result.output as ICruiseResult;
  return (out.summary.violations ?? []).map((v) => `${v.rule.name}: ${v.from} -> ${v.to}`).sort();
}

describe('layering rules', () => {
  it('refuse an import from a lower layer to a higher one', async () => {
    assert.deepEqual(await violations('upward'), ['layer-core-not-up: src/core/x.ts -> src/cli/y.ts']);
  });

  it('refuse agent/ -> cluster/ and the CLI reaching below api/', async () => {
    assert.deepEqual(await violations('sideways'), [
      'agent-not-cluster: src/agent/heartbeat.ts -> src/cluster/stats.ts',
      'cli-only-api-core-tools-entries: src/cli/ps.ts -> src/host/records.ts',
    ]);
  });

  it('refuse cycles, in test code too', async () => {
    const found = await violations('cycle', ['src', 'test']);
    assert.ok(found.includes('no-circular: src/core/a.ts -> src/core/b.ts'), found.join('\n'));
    assert.ok(found.includes('no-circular: test/support/s.ts -> test/support/u.ts'), found.join('\n'));
  });

  it('let a clean tree through (a test file may cross layers)', async () => {
    assert.deepEqual(await violations('clean'), []);
  });
});
