// GNU tar, for a container's rootfs in a checkpoint archive (`rootfs-diff.tar`). It is the reference for what
// Podman and `tar --xattrs` read: POSIX (PAX) headers with mtimes to the nanosecond, xattrs as `SCHILY.xattr.*`
// (binary values kept whole), ACLs also as `SCHILY.acl.*` text, holes as GNU sparse 1.0, hard links, FIFOs and
// device nodes. Node's tar libraries fall short: tar-fs carries no xattrs at all, and tar-stream decodes PAX values
// as UTF-8, which mangles a binary ACL. Unix socket files are the one inode type tar has no record for: GNU tar
// skips them (rootfs-archive.ts in host/ carries them beside the tar).
import type { Runner } from './exec.ts';

/** What both directions share: every xattr namespace (the caller refuses the ones it cannot carry), ACLs, numeric owners. */
const COMMON = ['--xattrs', '--xattrs-include=*', '--acls', '--numeric-owner'];

/** Writes the tree under `dir` into the tar file `file` (its root as `.`), leaving the tree's access times alone. */
export async function packTree(runner: Runner, dir: string, file: string): Promise<void> {
  await runner.run(
    [
      'tar',
      '--create',
      '--format=posix',
      ...COMMON,
      '--sparse',
      '--atime-preserve=system',
      // a socket file is carried beside the tar; tar's note that it skipped one is expected
      '--warning=no-file-ignored',
      '--file',
      file,
      '--directory',
      dir,
      '.',
    ],
    { label: 'tar --create (the rootfs)', errorCode: 'FERRY_E_CHECKPOINT_FAILED', phase: 'checkpoint' },
  );
}

/**
 * Unpacks `file` into `dir` with owners, modes, times, xattrs and ACLs as archived. GNU tar's own guards stay on:
 * members named with `..` are refused, leading slashes dropped, and a symlink that points outside is made last,
 * so that no later member is written through it.
 */
export async function unpackTree(runner: Runner, file: string, dir: string): Promise<void> {
  await runner.run(
    ['tar', '--extract', ...COMMON, '--same-owner', '--same-permissions', '--file', file, '--directory', dir],
    { label: 'tar --extract (the rootfs)', errorCode: 'FERRY_E_RESTORE_FAILED', phase: 'restore' },
  );
}
