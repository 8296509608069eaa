// Reading a /metrics answer in tests. Prometheus' own promtool (`promtool check metrics`: its parser and its
// linter of the naming conventions) checks the text as a Prometheus server would take it; a small reader then
// looks up sample values (promtool does not print them).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

/** Why promtool cannot run here, or undefined when it can (make setup installs it with Debian's prometheus). */
export function promtoolMissing(): string | undefined {
  const r = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  return r.error ? 'needs promtool (make setup installs Debian prometheus)' : undefined;
}

/**
 * Fails unless promtool parses the text and finds nothing to say about ferry's own families (the Node.js
 * runtime's families of prom-client are not ferry's to rename: promtool's remarks on those are ignored).
 */
export function assertPromtoolAccepts(text: string): void {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(r.error, undefined, 'promtool runs');
  const out = `${r.stdout}${r.stderr}`;
  assert.doesNotMatch(out, /parsing error|error while linting/, out);
  const ours = out.split('\n').filter((l) => l.startsWith('ferry_'));
  assert.deepEqual(ours, [], 'promtool lints ferry_ families');
  // 0: no remark at all; 3: remarks (all on others' families, checked above); anything else is a failure
  assert.ok(r.status === 0 || r.status === 3, `promtool exit ${r.status}: ${out}`);
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Every sample line: `name{label="value",...} number [timestamp]`. */
export function samples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample of `name` whose labels include `labels` (0 when there is none). */
export function value(all: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = all.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  assert.ok(found.length <= 1, `${name} ${JSON.stringify(labels)}: ${found.length} samples`);
  return found[0]?.value ?? 0;
}

/** Whether the text declares a family of that name (`# TYPE name kind`). */
export function hasFamily(text: string, name: string, kind?: string): boolean {
  return new RegExp(`^# TYPE ${name} ${kind ?? '\\w+'}$`, 'm').test(text);
}
