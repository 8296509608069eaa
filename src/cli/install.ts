// `ferry install --agent|--controller`: the systemd unit of each daemon (checked by systemd-analyze verify before
// it is put in place) and the directories the daemons and `ferry ca` use. The config files are the operator's to
// write (docs/configuration.md): an install never touches one, and says what is still missing.
import { existsSync, realpathSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FerryError } from '../core/errors.ts';

export interface InstallOptions {
  agent?: boolean;
  controller?: boolean;
  /** Install under this directory instead of / (a package build, a test). */
  root?: string;
  json?: boolean;
}

interface Installed {
  daemon: 'agent' | 'controller';
  unit: string;
  config: string;
  configPresent: boolean;
}

/** The launcher that runs this ferry (bin/ferry beside the sources): what the units start. */
export function ferryLauncher(): string {
  return realpathSync(fileURLToPath(new URL('../../bin/ferry', import.meta.url)));
}

export async function installCommand(o: InstallOptions): Promise<void> {
  if (!o.agent && !o.controller)
    throw new FerryError('FERRY_E_INPUT_ARGS', 'name what to install: --agent, --controller or both', {
      phase: 'input',
      hint: 'see ferry install --help',
    });
  const root = o.root ?? '/';
  if (!existsSync(root))
    throw new FerryError('FERRY_E_INPUT_ARGS', `--root ${root} does not exist`, { phase: 'input' });
  const ferry = ferryLauncher();
  // the CA and certificates (ferry ca), the daemons' state: root's only
  await mkdir(join(root, 'etc/ferry/pki'), { recursive: true, mode: 0o700 });
  await mkdir(join(root, 'var/lib/ferry'), { recursive: true, mode: 0o700 });
  const done: Installed[] = [];
  if (o.agent) {
    const { installAgentUnit, AGENT_CONFIG_PATH } = await import('../agent/main.ts');
    const unit = await installAgentUnit({ root, ferry });
    done.push({
      daemon: 'agent',
      unit,
      config: AGENT_CONFIG_PATH,
      configPresent: existsSync(join(root, AGENT_CONFIG_PATH)),
    });
  }
  if (o.controller) {
    const { installControllerUnit, CONTROLLER_CONFIG_PATH } = await import('../cluster/main.ts');
    const unit = await installControllerUnit({ root, ferry });
    done.push({
      daemon: 'controller',
      unit,
      config: CONTROLLER_CONFIG_PATH,
      configPresent: existsSync(join(root, CONTROLLER_CONFIG_PATH)),
    });
  }
  if (o.json) {
    process.stdout.write(`${JSON.stringify({ ok: true, installed: done })}\n`);
    return;
  }
  for (const d of done) {
    const name = `ferry-${d.daemon}`;
    process.stdout.write(`installed ${d.unit} (systemd-analyze verify: no findings)\n`);
    if (!d.configPresent)
      process.stdout.write(
        `  next: write ${d.config} (docs/configuration.md; certificates: ferry ca), then\n`,
      );
    process.stdout.write(`  systemctl enable --now ${name}; journalctl -u ${name} -f\n`);
  }
}
