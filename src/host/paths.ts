// Where one host keeps its things. Paths are derived from validated names only.
import { join } from 'node:path';
import { checkName } from '../core/names.ts';

export interface HostPaths {
  stateDir: string;
  imagesDir: string;
  runcRoot: string;
  containersDir: string;
  incomingDir: string;
  logsDir: string;
}

export function hostPaths(stateDir: string, imagesDir?: string): HostPaths {
  return {
    stateDir,
    imagesDir: imagesDir ?? join(stateDir, 'images'),
    runcRoot: join(stateDir, 'runc'),
    containersDir: join(stateDir, 'containers'),
    incomingDir: join(stateDir, 'incoming'),
    logsDir: join(stateDir, 'logs'),
  };
}

export function containerDir(p: HostPaths, name: string): string {
  return join(p.containersDir, checkName(name));
}

export function bundleDir(p: HostPaths, name: string): string {
  return join(containerDir(p, name), 'bundle');
}

export function imageDir(p: HostPaths, migrationId: string): string {
  return join(p.imagesDir, checkName(migrationId, 'migration'));
}
