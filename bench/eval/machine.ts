// The machine a suite ran on and the command that ran it: printed and written beside every figure, since figures
// from a shared 2-core machine under load mean little without them.
import { cpus, hostname, loadavg, release, totalmem } from 'node:os';
import { ProcessRunner } from '../../src/runtime/exec.ts';
import type { Machine } from './model.ts';

async function firstLine(argv: string[]): Promise<string> {
  const r = await new ProcessRunner().run(argv, { allowFail: true }).catch(() => ({ stdout: '' }));
  const line = `${r.stdout}`.split('\n').find((l) => l.trim()) ?? '';
  return (
    line
      .replace(/^Version:\s*/, '')
      .replace(/^runc version\s*/, '')
      .trim() || 'unknown'
  );
}

export async function machineFacts(): Promise<Machine> {
  return {
    hostname: hostname(),
    kernel: release(),
    cores: cpus().length,
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    memoryBytes: totalmem(),
    criu: await firstLine(['criu', '--version']),
    runc: await firstLine(['runc', '--version']),
    loadStart: loadavg().map((x) => Number(x.toFixed(2))),
  };
}

export function endLoad(m: Machine): void {
  m.loadEnd = loadavg().map((x) => Number(x.toFixed(2)));
}

/** The command line as the user typed it (the CLI's own arguments, after the executable). */
export function commandLine(argv: string[] = process.argv): string {
  return ['ferry', ...argv.slice(2)].join(' ');
}

export function describeMachine(m: Machine): string {
  const gib = (m.memoryBytes / 2 ** 30).toFixed(0);
  const load = `load average ${m.loadStart.join(' ')} at the start${m.loadEnd ? `, ${m.loadEnd.join(' ')} at the end` : ''}`;
  return `${m.hostname}: kernel ${m.kernel}, ${m.cores} cores (${m.cpu}), ${gib} GiB, CRIU ${m.criu}, runc ${m.runc}; ${load}`;
}
