import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ExecOptions, ExecResult, Runner } from '../runtime/exec.ts';
import { Firewall } from './firewall.ts';

test("the namespace lock drops everything but CRIU's marked packets, both ways", async () => {
  const inputs: string[] = [];
  const runner: Runner = {
    async run(argv: string[], o?: ExecOptions): Promise<ExecResult> {
      if (typeof o?.input === 'string') inputs.push(o.input);
      return { argv, code: 0, signal: null, stdout: '', stderr: '', ms: 1 };
    },
  };
  await new Firewall(runner).lockNetns('ns1');
  const rules = inputs.join('\n');
  for (const chain of ['in', 'out'])
    assert.match(rules, new RegExp(`chain ${chain} \\{[^}]*policy drop;[^}]*meta mark 0xc114 accept;`));
});
