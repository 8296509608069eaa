// The layering check bites: the repository's own dependency-cruiser config, run over tiny trees that break
// (or keep) one rule each.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
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

  it('keep the browser code to itself and the wire types of api/', async () => {
    assert.deepEqual(await violations('web'), [
      'layer-cluster-not-up: src/cluster/serve.ts -> src/web/app.ts',
      'web-only-api-types: src/web/app.ts -> src/core/names.ts',
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

describe('docs/architecture.md', () => {
  const doc = readFileSync(`${root}docs/architecture.md`, 'utf8');
  const config = readFileSync(`${root}.dependency-cruiser.cjs`, 'utf8');
  const folders = readdirSync(`${root}src`, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name);

  it('names every folder of src/, and the layer table knows each', () => {
    assert.deepEqual(
      folders.filter((f) => !doc.includes(`src/${f}/`)),
      [],
      'give the folder its line in docs/architecture.md',
    );
    assert.deepEqual(
      folders.filter((f) => !new RegExp(`^\\s+${f}: \\d`, 'm').test(config)),
      [],
      'give the folder its layer in .dependency-cruiser.cjs',
    );
  });

  it('names every module of the engine, so the life of a migration can be followed through the files', () => {
    const modules = readdirSync(`${root}src/migration`, { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && f !== 'types.ts')
      .map((f) => f.replace(/^strategies\//, ''));
    assert.deepEqual(
      modules.filter((m) => !doc.includes(m)),
      [],
      'say in docs/architecture.md what the module does',
    );
  });
});
