// systemd as ferry's installer uses it: whether it runs here, `systemd-analyze verify` of a unit file before it
// is put in place, and `systemctl daemon-reload` after; what every ferry unit has in common.
import { existsSync } from 'node:fs';
import { chmod, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { FerryError } from '../core/errors.ts';
import type { Runner } from './exec.ts';

export class Systemd {
  private readonly runner: Runner;
  private readonly root: string;

  /** `root`: where /run/systemd/system is looked for (a test's tree; `/` on a host). */
  constructor(runner: Runner, root = '/') {
    this.runner = runner;
    this.root = root;
  }

  /** Whether systemd is this machine's init (its runtime directory exists only then). */
  running(): boolean {
    return existsSync(`${this.root.replace(/\/$/, '')}/run/systemd/system`);
  }

  /**
   * Refuses a unit file systemd would complain about (unknown options, a missing ExecStart binary, bad values):
   * FERRY_E_INPUT_ARGS with systemd's own words. systemd-analyze prints its findings on stderr, and exits 0 on
   * mere warnings, so any output about the file counts.
   */
  async verify(unitFile: string): Promise<void> {
    const r = await this.runner.run(['systemd-analyze', 'verify', unitFile], {
      allowFail: true,
      timeoutMs: 60_000,
      env: { ...process.env, SYSTEMD_LOG_COLOR: '0' },
    });
    const name = basename(unitFile);
    const findings = `${r.stdout}${r.stderr}`
      .split('\n')
      .filter((l) => l.includes(unitFile) || l.startsWith(`${name}:`));
    if (r.code !== 0 || findings.length)
      throw new FerryError(
        'FERRY_E_INPUT_ARGS',
        `systemd-analyze verify ${unitFile}: ${(findings.join('; ') || r.stderr.trim() || `exit ${r.code}`).slice(0, 2000)}`,
        { phase: 'input' },
      );
  }

  async daemonReload(): Promise<void> {
    await this.runner.run(['systemctl', 'daemon-reload'], { timeoutMs: 60_000 });
  }
}

/** What every ferry daemon's [Service] starts with. Exit status 2 is a refused configuration (docs/errors.md):
 * restarting would only fail again. */
export const FERRY_SERVICE_BASICS = [
  'Type=exec',
  'Restart=on-failure',
  'RestartSec=2',
  'RestartPreventExitStatus=2',
];

/** What every ferry daemon's [Unit] says: it needs the network, and a bad config is tried five times a minute. */
export const FERRY_UNIT_BASICS = [
  'Wants=network-online.target',
  'After=network-online.target',
  'StartLimitIntervalSec=60',
  'StartLimitBurst=5',
];

/**
 * Puts a unit file in place under `root` (/etc/systemd/system/NAME): written beside, verified, then renamed, so a
 * unit systemd would refuse never replaces a working one; systemd reloads its units when it runs here.
 */
export async function installUnit(
  systemd: Systemd,
  o: { root: string; name: string; text: string },
): Promise<string> {
  const dir = join(o.root, 'etc/systemd/system');
  await mkdir(dir, { recursive: true });
  const unit = join(dir, o.name);
  // staged under its own name (systemd-analyze takes only unit names), on the same filesystem for the rename
  const stage = join(dir, `.${o.name}.staged`);
  await mkdir(stage, { recursive: true, mode: 0o700 });
  const staged = join(stage, o.name);
  try {
    await writeFile(staged, o.text, { mode: 0o644 });
    await systemd.verify(staged);
    await chmod(staged, 0o644);
    await rename(staged, unit);
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
  if (o.root === '/' && systemd.running()) await systemd.daemonReload();
  return unit;
}
