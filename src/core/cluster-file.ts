// Where the CLI finds its cluster: hosts, their agents' addresses, and its client certificate.
import { access, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
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

/** The default cluster's file, when one is set and its file still exists. */
export async function currentCluster(env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  try {
    const path = (await readFile(currentPointer(env), 'utf8')).trim();
    await access(path);
    return path;
  } catch {
    return undefined;
  }
}

/**
 * Makes `path` the default cluster, unless another one is the default (and its file still exists) and `force`
 * is not given: a testbed brought up by someone else must not silently redirect the commands of whoever uses
 * the default. Returns the default cluster's file afterwards.
 */
export async function setCurrentCluster(
  path: string,
  env: NodeJS.ProcessEnv = process.env,
  opts: { force?: boolean } = {},
): Promise<string> {
  const current = await currentCluster(env);
  if (current && current !== path && !opts.force) return current;
  const p = currentPointer(env);
  await mkdir(dirname(p), { recursive: true });
  await writeFile(`${p}.tmp`, `${path}\n`);
  await rename(`${p}.tmp`, p);
  return path;
}

export async function clearCurrentCluster(path: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  try {
    if ((await readFile(currentPointer(env), 'utf8')).trim() === path)
      await rm(currentPointer(env), { force: true });
  } catch {
    // no pointer
  }
}

/** Where the cluster a command acts on was chosen: --cluster, $FERRY_CLUSTER, or the default cluster. */
export type ClusterChoice = { path: string; from: '--cluster' | '$FERRY_CLUSTER' | 'default' };

/** `--cluster FILE`, else $FERRY_CLUSTER, else the default cluster (`ferry testbed up` sets it, see above). */
export async function resolveCluster(
  explicit: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ClusterChoice> {
  if (explicit) return { path: explicit, from: '--cluster' };
  if (env['FERRY_CLUSTER']) return { path: env['FERRY_CLUSTER'], from: '$FERRY_CLUSTER' };
  try {
    return { path: (await readFile(currentPointer(env), 'utf8')).trim(), from: 'default' };
  } catch {
    throw new FerryError('FERRY_E_TESTBED_NONE', 'no cluster configured', {
      hint: 'run `ferry testbed up --hosts a,b` or set FERRY_CLUSTER to a cluster file',
    });
  }
}

export async function resolveClusterPath(
  explicit: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  return (await resolveCluster(explicit, env)).path;
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
