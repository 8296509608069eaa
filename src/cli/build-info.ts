// What `ferry --version` names: the version, the git commit it was built from, and how it runs (the single
// executable that `make dist` builds, or the TypeScript sources on a Node from the PATH or /opt/ferry).
import { readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { isSea } from 'node:sea';
import { fileURLToPath } from 'node:url';

/** Replaced by scripts/dist.sh (esbuild --define) with the version and commit of the build; absent from source. */
declare const FERRY_BUILD: { version: string; commit: string } | undefined;

export interface BuildInfo {
  version: string;
  commit: string;
  kind: 'single executable' | 'node';
}

export function buildInfo(): BuildInfo {
  if (typeof FERRY_BUILD !== 'undefined')
    return { ...FERRY_BUILD, kind: isSea() ? 'single executable' : 'node' };
  const repo = fileURLToPath(new URL('../..', import.meta.url));
  let version = 'unknown';
  try {
    version = (JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    // a copy without its package.json
  }
  return { version, commit: gitCommit(repo) ?? 'unknown', kind: 'node' };
}

export function versionLine(b: BuildInfo = buildInfo()): string {
  const how = b.kind === 'node' ? 'on node' : 'single executable with node';
  return `ferry ${b.version} (commit ${b.commit}, ${how} ${process.versions.node})`;
}

/** The commit the checkout at `repo` is on, read from .git (a worktree's .git is a file naming its gitdir). */
function gitCommit(repo: string): string | undefined {
  try {
    let gitDir = join(repo, '.git');
    try {
      const link = /^gitdir: (.+)$/m.exec(readFileSync(gitDir, 'utf8'))?.[1];
      if (link) gitDir = isAbsolute(link) ? link : join(repo, link);
    } catch {
      // .git is a directory
    }
    const head = readFileSync(join(gitDir, 'HEAD'), 'utf8').trim();
    const ref = /^ref: (.+)$/.exec(head)?.[1];
    if (!ref) return head.slice(0, 12);
    let common = gitDir;
    try {
      common = join(gitDir, readFileSync(join(gitDir, 'commondir'), 'utf8').trim());
    } catch {
      // not a worktree
    }
    for (const dir of [gitDir, common]) {
      try {
        return readFileSync(join(dir, ref), 'utf8').trim().slice(0, 12);
      } catch {
        // packed
      }
    }
    const packed = readFileSync(join(common, 'packed-refs'), 'utf8');
    return new RegExp(`^([0-9a-f]{40}) ${ref.replace(/[/.]/g, '\\$&')}$`, 'm')
      .exec(packed)?.[1]
      ?.slice(0, 12);
  } catch {
    return undefined;
  }
}
