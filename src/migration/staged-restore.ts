// A destination's restore made ready before the freeze. runc's own work before the restore's CRIU starts (its start,
// a CRIU run that only asks CRIU's version, the root file system's mount for CRIU, reading the bundle's config.json
// and the images' descriptors.json) took 25-40 ms of every freeze on the test machine. Staged as soon as the bundle
// is in (cold and post-copy, whose freeze follows; pre-copy at the hold, right before the source freezes), runc does
// all that before the dump, and its CRIU waits at a gate (runtime/criu-gate.ts) until the images are in.
//
// runc reads two files before it waits: config.json, which ferry places (its paths and namespaces made this host's)
// at staging instead of at the restore, and descriptors.json, which the source's runc writes at the dump from the
// container's state (`external_descriptors` in runc's state.json; the source sends them with its prepare). ferry
// writes them at staging. At the restore both are checked against what is there now: a bundle update that brought a
// new config.json, descriptors that differ, or another lazy-pages choice cancel the staged runc, and the restore runs
// as before.
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readConfig, validateConfig, writeConfig } from '../runtime/bundle.ts';
import type { StagedCheckpoint } from '../runtime/criu-gate.ts';
import type { RestoreOptions, RuncLike } from '../runtime/runc.ts';

/** The JSON runc writes for a container's external descriptors (Go's encoding: no spaces). */
export function descriptorsJson(descriptors: string[]): string {
  return JSON.stringify(descriptors);
}

/** What identifies one version of a file here: a rewrite changes it. */
async function signature(path: string): Promise<string> {
  const st = await stat(path, { bigint: true });
  return `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

export class StagedRestore {
  private readonly staged: StagedCheckpoint;
  private readonly config: { path: string; signature: string };
  private readonly descriptors: { path: string; json: string };
  private readonly lazy: boolean;

  private constructor(
    staged: StagedCheckpoint,
    config: { path: string; signature: string },
    descriptors: { path: string; json: string },
    lazy: boolean,
  ) {
    this.staged = staged;
    this.config = config;
    this.descriptors = descriptors;
    this.lazy = lazy;
  }

  /**
   * Places the bundle's config.json (`place`: the host's placement of a received config), writes the predicted
   * descriptors.json and starts runc. Undefined when runc cannot stage a restore here.
   */
  static async start(o: {
    runc: Pick<RuncLike, 'stageRestore'>;
    name: string;
    bundle: string;
    images: string;
    descriptors: string[];
    place: (config: Awaited<ReturnType<typeof readConfig>>) => Awaited<ReturnType<typeof readConfig>>;
    restore: RestoreOptions;
  }): Promise<StagedRestore | undefined> {
    if (!o.runc.stageRestore) return undefined;
    const config = await readConfig(o.bundle);
    validateConfig(config);
    await writeConfig(o.bundle, o.place(config));
    const configPath = join(o.bundle, 'config.json');
    const json = descriptorsJson(o.descriptors);
    const descriptorsPath = join(o.images, 'descriptors.json');
    await writeFile(descriptorsPath, json, { mode: 0o600 });
    const staged = await o.runc.stageRestore(o.name, o.restore);
    if (!staged) return undefined;
    return new StagedRestore(
      staged,
      { path: configPath, signature: await signature(configPath) },
      { path: descriptorsPath, json },
      o.restore.lazyPages === true,
    );
  }

  /**
   * Whether the staged runc restores what is here now: config.json as placed at staging, descriptors.json as the
   * dump wrote it, the same lazy-pages choice. Otherwise it must be cancelled.
   */
  async usable(o: { lazy: boolean }): Promise<string | undefined> {
    if (o.lazy !== this.lazy) return 'the restore asks for another lazy-pages choice';
    const config = await signature(this.config.path).catch(() => 'gone');
    if (config !== this.config.signature) return 'the bundle update brought a new config.json';
    const json = await readFile(this.descriptors.path, 'utf8').catch(() => undefined);
    if (json?.trim() !== this.descriptors.json)
      return 'the dump wrote other descriptors than the source predicted';
    return undefined;
  }

  /** The images are in: CRIU restores now; resolves or fails as the restore does. */
  go(timeoutMs?: number): Promise<{ ms: number }> {
    return this.staged.go(timeoutMs);
  }

  /** Not needed (aborted, or not usable): runc ends without restoring, and has ended when this resolves. */
  cancel(): Promise<void> {
    return this.staged.cancel();
  }
}
