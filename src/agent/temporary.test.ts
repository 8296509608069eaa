// The temporary agent of an agentless migration: its config and TLS material from one line of standard input,
// this host's own settings merged under them, ready said on standard output, and at the end of its input (the ssh
// session's end) everything uncommitted aborted and its private files gone.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import type { AgentConfig } from './config.ts';
import { READY_LINE, runTemporaryAgent, type StartAgent } from './temporary.ts';

const isRoot = process.getuid?.() === 0;

test(
  'config from standard input, ready on standard output, everything gone when the input ends',
  { skip: !isRoot },
  async (t) => {
    const state = await mkdtemp(join(tmpdir(), 'ferry-temporary-'));
    t.after(() => rm(state, { recursive: true, force: true }));
    await writeFile(join(state, 'agent.json'), JSON.stringify({ cgroupParent: '/mine', host: 'ignored' }));
    const seen: { cfg?: AgentConfig; tls?: string; closed?: boolean; aborted?: boolean } = {};
    const start: StartAgent = async (cfg) => {
      seen.cfg = cfg;
      seen.tls = await readFile(cfg.tls.key, 'utf8');
      return {
        close: async () => {
          seen.closed = true;
        },
        abortUncommitted: async () => {
          seen.aborted = true;
          return [];
        },
      };
    };
    const input = new PassThrough();
    const output = new PassThrough();
    let said = '';
    output.on('data', (d: Buffer) => {
      said += String(d);
    });
    const done = runTemporaryAgent(start, input, output, { FERRY_AGENTLESS_DIR: state });
    input.write(
      `${JSON.stringify({
        config: { host: 'b', listen: { address: '127.0.0.1', port: 23456 }, peers: [] },
        tls: { key: 'KEY', cert: 'CERT', ca: 'CA' },
      })}\n`,
    );
    while (!said.includes('\n')) await new Promise((r) => setTimeout(r, 10));
    assert.equal(said, `${READY_LINE} 23456\n`);
    assert.equal(seen.cfg?.host, 'b', "the session's name wins over the host's file");
    assert.equal(seen.cfg?.cgroupParent, '/mine', "the host's own setting");
    assert.equal(seen.cfg?.stateDir, state);
    assert.equal(seen.tls, 'KEY');
    const run = seen.cfg!.imagesDir.replace(/\/images$/, '');
    assert.ok(existsSync(run));
    input.end();
    await done;
    assert.ok(seen.closed && seen.aborted);
    assert.ok(!existsSync(run), 'its private files are gone');
  },
);

test('a first line that is no configuration is refused', { skip: !isRoot }, async () => {
  for (const line of ['not json', JSON.stringify({ config: {} })]) {
    const input = new PassThrough();
    const done = runTemporaryAgent(async () => assert.fail('started'), input, new PassThrough(), {
      FERRY_AGENTLESS_DIR: join(tmpdir(), 'ferry-temporary-unused'),
    });
    input.end(`${line}\n`);
    await assert.rejects(done, { code: 'FERRY_E_INPUT_ARGS' });
  }
  const input = new PassThrough();
  const done = runTemporaryAgent(async () => assert.fail('started'), input, new PassThrough(), {});
  input.end();
  await assert.rejects(done, { code: 'FERRY_E_INPUT_ARGS', message: /no configuration line/ });
});
