// Podman 5's switchover, for the switchover benchmark's ratios: `podman container checkpoint --export` with TCP
// connections kept, `podman rm`, `podman container restore --import`, on one host (Podman's best case: no archive
// to carry to another machine). The container joins a namespace wired onto the testbed's bridge the way the hand
// recipe's are (`--network ns:PATH`), so the same probe client reaches it and sees the gap. Its image holds only
// the directories a container needs; the host's /usr is mounted read-only, as ferry's bundles do, so the same
// python3 server runs in both. Podman comes from `scripts/setup.sh podman`; nothing else in ferry needs it.
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { ProcessRunner } from '../src/runtime/exec.ts';
import type { TestbedState } from '../src/testbed/testbed.ts';
import { handNetns, handRemoveNetns } from './hand-recipe.ts';

const IMAGE = 'localhost/ferry-bench-switchover:latest';
const PREFIX = 'ferry-bench-sw-';
const ENV = { ...process.env, PODMAN_IGNORE_CGROUPSV1_WARNING: '1' };

export interface PodmanSwitch {
  freezeMs: number;
}

/** Whether Podman 5 is here (the benchmark then leaves its rows out and says why). */
export async function podmanReady(runner: ProcessRunner): Promise<boolean> {
  // (not installed: spawn fails, which allowFail does not cover)
  const v = await runner.run(['podman', '--version'], { allowFail: true, env: ENV }).catch(() => undefined);
  return v !== undefined && / 5\./.test(v.stdout);
}

/** The image: an empty root with /usr's links and a /tmp, imported once per benchmark. */
export async function podmanImage(runner: ProcessRunner): Promise<void> {
  const work = await mkdtemp('/dev/shm/ferry-bench-sw-image-');
  try {
    const root = join(work, 'rootfs');
    for (const d of ['usr', 'etc', 'tmp', 'proc', 'dev', 'sys', 'run', 'var'])
      await mkdir(join(root, d), { recursive: true, mode: 0o1777 });
    for (const l of ['bin', 'sbin', 'lib', 'lib64']) await symlink(`usr/${l}`, join(root, l));
    await runner.run(['tar', '-C', root, '-cf', join(work, 'image.tar'), '.']);
    await runner.run(['podman', 'import', '-q', join(work, 'image.tar'), IMAGE], { env: ENV });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

const pod = (runner: ProcessRunner, ...args: string[]) =>
  runner.run(['podman', ...args], { env: ENV, label: `podman ${args.slice(0, 2).join(' ')}` });

/** Starts `args` in a Podman container named PREFIX+name with `ip` on `host`'s bridge. */
export async function podmanStart(
  runner: ProcessRunner,
  tb: TestbedState,
  host: string,
  name: string,
  ip: string,
  args: string[],
): Promise<void> {
  const netns = await handNetns(runner, tb, host, name, ip);
  await pod(
    runner,
    'run',
    '-d',
    '--name',
    PREFIX + name,
    '--network',
    `ns:${netns}`,
    '-v',
    '/usr:/usr:ro',
    '-v',
    '/etc:/etc:ro',
    IMAGE,
    ...args,
  );
}

/**
 * The switchover Podman offers: checkpoint into an archive (uncompressed, on tmpfs: the fastest it can be), remove,
 * restore from the archive. The freeze runs from the checkpoint's start to the restore's exit.
 */
export async function podmanSwitchover(runner: ProcessRunner, name: string): Promise<PodmanSwitch> {
  const work = await mkdtemp('/dev/shm/ferry-bench-sw-');
  const file = join(work, 'checkpoint.tar');
  try {
    const t0 = performance.now();
    await pod(
      runner,
      'container',
      'checkpoint',
      '--tcp-established',
      '--compress',
      'none',
      '--export',
      file,
      PREFIX + name,
    );
    await pod(runner, 'rm', PREFIX + name);
    await pod(runner, 'container', 'restore', '--tcp-established', '--import', file);
    return { freezeMs: performance.now() - t0 };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export async function podmanRemove(runner: ProcessRunner, tb: TestbedState, host: string, name: string) {
  await runner.run(['podman', 'rm', '-f', '-t', '0', PREFIX + name], { allowFail: true, env: ENV });
  await handRemoveNetns(runner, tb, host, name);
}

/** Every container this benchmark left (a run that failed half-way) and, with `image`, the image. */
export async function podmanCleanup(runner: ProcessRunner, image: boolean): Promise<void> {
  const ps = await runner.run(['podman', 'ps', '-a', '--format', '{{.Names}}'], {
    allowFail: true,
    env: ENV,
  });
  for (const n of ps.stdout.split('\n').filter((x) => x.startsWith(PREFIX)))
    await runner.run(['podman', 'rm', '-f', '-t', '0', n], { allowFail: true, env: ENV });
  if (image) await runner.run(['podman', 'rmi', '-f', IMAGE], { allowFail: true, env: ENV });
}
