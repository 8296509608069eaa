// ferry's own executable on an SSH host: copied there when it is missing or of another build, into a private
// directory of the remote user (${XDG_CACHE_HOME:-~/.cache}/ferry/bin, mode 0700), named by its SHA-256 and
// verified by it on arrival. Nothing has to be installed there first but a shell and coreutils.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { FerryError, type Phase } from '../core/errors.ts';
import type { SshHost } from './ssh.ts';

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Space kept free beyond the executable itself (KiB): a host left with nothing free helps no migration. */
const SLACK_KIB = 16 * 1024;

export interface RemoteFerry {
  /** Absolute path of the executable on the remote host. */
  path: string;
  sha256: string;
  /** Whether it was copied now (false: the same build was there already). */
  copied: boolean;
}

/** Makes sure the remote host has the build at `localExe`; returns where it is. */
export async function ensureRemoteFerry(ssh: SshHost, localExe: string, phase: Phase): Promise<RemoteFerry> {
  const sha = await sha256File(localExe);
  const size = (await stat(localExe)).size;
  // the remote shell expands these: the remote user's cache directory, and the file named by the build's hash
  const where = `d="\${XDG_CACHE_HOME:-$HOME/.cache}/ferry/bin"; f="$d/ferry-${sha.slice(0, 16)}"; `;
  const probe = await ssh.run(
    `set -e; ${where}` +
      // its name carries the hash it was verified against on arrival, in a directory only its user can write
      `if [ -x "$f" ] && [ "$(stat -c %s "$f")" = ${size} ]; then echo "present $f"; exit 0; fi; ` +
      'umask 077; mkdir -p "$d"; chmod 700 "$d"; ' +
      `echo "missing $f $(df -Pk "$d" | awk 'NR==2 {print $4}')"`,
    { phase, label: 'looking for ferry' },
  );
  const m = /^(present|missing) (\/\S+)(?: (\d+))?$/m.exec(probe.stdout);
  if (!m?.[2])
    throw new FerryError(
      'FERRY_E_EXEC',
      `unexpected answer from ${ssh.target.text}: ${probe.stdout.trim()}`,
      {
        phase,
      },
    );
  const path = m[2];
  if (m[1] === 'present') return { path, sha256: sha, copied: false };
  const freeKib = Number(m[3] ?? Number.NaN);
  const needKib = Math.ceil(size / 1024) + SLACK_KIB;
  if (Number.isFinite(freeKib) && freeKib < needKib)
    throw new FerryError(
      'FERRY_E_NO_SPACE',
      `${ssh.target.text} has no room for ferry's executable: ${Math.ceil(needKib / 1024)} MiB needed in ` +
        `${path.slice(0, path.lastIndexOf('/'))}, ${Math.floor(freeKib / 1024)} MiB free; nothing was changed`,
      {
        phase,
        hint: "free space in the remote user's home (or point XDG_CACHE_HOME elsewhere for that user)",
      },
    );
  try {
    await ssh.runWithFile(
      // a dropped connection hangs the shell up: the partial file goes with it (and any later copy removes it too)
      `set -e; umask 077; ${where}t="$f.part.$$"; trap 'rm -f "$t"' EXIT; trap 'exit 1' HUP INT TERM PIPE; ` +
        // older builds go: one executable per host is enough
        'for o in "$d"/ferry-*; do [ "$o" = "$f" ] || rm -f "$o"; done; ' +
        `cat > "$t"; s=$(sha256sum < "$t" | cut -c1-64); ` +
        `[ "$s" = ${sha} ] || { echo "checksum mismatch: got $s" >&2; exit 3; }; chmod 700 "$t"; mv "$t" "$f"; trap - EXIT`,
      localExe,
      { phase, label: 'copying ferry' },
    );
  } catch (err) {
    if (err instanceof FerryError && /No space left|Disk quota/i.test(err.message))
      throw new FerryError(
        'FERRY_E_NO_SPACE',
        `${ssh.target.text} ran out of space while ferry's executable was copied; nothing was left behind`,
        {
          phase,
          cause: err,
          hint: "free space in the remote user's home",
        },
      );
    throw err;
  }
  return { path, sha256: sha, copied: true };
}
