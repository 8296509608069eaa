import { readFile } from 'node:fs/promises';

// CRIU always logs this here (no CAP_SYS_RESOURCE); it is harmless and never the cause.
const HARMLESS = [/RLIMIT_NOFILE/, /Can't keep kdat cache/];

/** The first real error line of a CRIU log, without its timestamp; undefined when none. */
export function firstCriuError(log: string): string | undefined {
  for (const line of log.split('\n')) {
    if (!/\bError \(/.test(line)) continue;
    if (HARMLESS.some((re) => re.test(line))) continue;
    return line.replace(/^\(\s*[\d.]+\)\s*/, '').trim();
  }
  return undefined;
}

export async function criuLogError(path: string): Promise<string | undefined> {
  try {
    const err = firstCriuError(await readFile(path, 'utf8'));
    return err ? `${err} (CRIU log: ${path})` : undefined;
  } catch {
    return undefined;
  }
}
