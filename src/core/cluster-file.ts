// Where the CLI finds its cluster: hosts, their agents' addresses, and its client certificate.
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FerryError } from './errors.ts';

export interface ClusterHost {
  name: string;
  address: string;
  port: number;
}

export interface ClusterFile {
  name: string;
  tls: { ca: string; cert: string; key: string };
  hosts: ClusterHost[];
  client?: { netns: string; address: string };
  /** The LAN containers get addresses on: `subnet` is the first three octets of a /24. */
  lan?: { subnet: string; prefixLen: number };
  controller?: ClusterHost;
  testbed?: string;
}

export function stateRoot(env: NodeJS.ProcessEnv = process.env): string {
  return env['FERRY_STATE'] || '/var/lib/ferry';
}

function currentPointer(env: NodeJS.ProcessEnv): string {
  return join(stateRoot(env), 'current-cluster');
}

export async function setCurrentCluster(path: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const p = currentPointer(env);
  await mkdir(dirname(p), { recursive: true });
  await writeFile(`${p}.tmp`, `${path}\n`);
  await rename(`${p}.tmp`, p);
}

export async function clearCurrentCluster(path: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  try {
    if ((await readFile(currentPointer(env), 'utf8')).trim() === path)
      await rm(currentPointer(env), { force: true });
  } catch {
    // no pointer
  }
}

/** `--cluster FILE`, else $FERRY_CLUSTER, else the last testbed brought up. */
export async function resolveClusterPath(
  explicit: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  if (explicit) return explicit;
  if (env['FERRY_CLUSTER']) return env['FERRY_CLUSTER'];
  try {
    return (await readFile(currentPointer(env), 'utf8')).trim();
  } catch {
    throw new FerryError('FERRY_E_TESTBED_NONE', 'no cluster configured', {
      hint: 'run `ferry testbed up --hosts a,b` or set FERRY_CLUSTER to a cluster file',
    });
  }
}

export async function loadClusterFile(path: string): Promise<ClusterFile> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as ClusterFile;
  } catch (err) {
    throw new FerryError('FERRY_E_TESTBED_NONE', `cannot read cluster file ${path}`, {
      cause: err,
      hint: 'is the testbed up? (ferry testbed up --hosts a,b)',
    });
  }
}

export async function writeClusterFile(path: string, c: ClusterFile): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(`${path}.tmp`, `${JSON.stringify(c, null, 2)}\n`);
  await rename(`${path}.tmp`, path);
}
