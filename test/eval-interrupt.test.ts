// A suite's cleanup on Ctrl-C or SIGTERM (bench/eval/interrupt.ts), in a child process that is really signalled:
// the cleanup runs once, the exit status says which signal, and a suite that ends normally runs it once too.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, it } from 'node:test';

const MODULE = new URL('../bench/eval/interrupt.ts', import.meta.url).href;

/** A child that registers the cleanup, says "ready" and then waits (or ends, with `end`); its output and status. */
async function child(signal: NodeJS.Signals | undefined, end = false) {
  const script = `
    import { cleanupOnInterrupt } from ${JSON.stringify(MODULE)};
    let runs = 0;
    const c = cleanupOnInterrupt((m) => console.log('log: ' + m), async () => {
      runs++;
      await new Promise((r) => setTimeout(r, 50));
      console.log('cleaned ' + runs);
    });
    console.log('ready');
    if (${end}) { await c.run(); await c.run(); console.log('listeners ' + process.listenerCount('SIGTERM')); }
    else setTimeout(() => {}, 60_000);
  `;
  const p = spawn(process.execPath, ['--no-warnings', '--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    if (signal && d.includes('ready')) p.kill(signal);
  });
  const [code] = (await once(p, 'close')) as [number | null];
  return { out, code };
}

describe('evaluation suites: cleanup on interruption', () => {
  it('runs the cleanup on SIGTERM and exits with 143', async () => {
    const r = await child('SIGTERM');
    assert.match(r.out, /log: SIGTERM: cleaning up before exiting\ncleaned 1\n/);
    assert.equal(r.code, 143);
  });

  it('runs it on SIGINT and exits with 130', async () => {
    const r = await child('SIGINT');
    assert.match(r.out, /cleaned 1\n/);
    assert.equal(r.code, 130);
  });

  it('runs it once when the suite ends, and stops listening for signals', async () => {
    const r = await child(undefined, true);
    assert.match(r.out, /cleaned 1\nlisteners 0\n/);
    assert.equal(r.code, 0);
  });
});
