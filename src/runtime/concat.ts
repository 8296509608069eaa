// Files appended to an open file by cat, which copies them inside the kernel (copy_file_range, GNU coreutils 9):
// a checkpoint's frames compressed ahead of the archive (archive/early.ts) join it without passing through Node.
import { spawn } from 'node:child_process';
import { traceLine } from '../core/trace.ts';

/** How much of cat's standard error an error message keeps. */
const STDERR_KEEP = 2000;

/**
 * Appends `paths`, in order, to the open file `fd` from its descriptor's offset (which moves past them, as a write
 * would). Fails with cat's message if any could not be read or written (a full disk included).
 */
export async function appendFiles(paths: string[], fd: number): Promise<void> {
  if (!paths.length) return;
  const started = performance.now();
  // `--`: a path is never an option
  const child = spawn('cat', ['--', ...paths], { stdio: ['ignore', fd, 'pipe'] });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    if (err.length < STDERR_KEEP) err += d;
  });
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c, sig) => resolve([c, sig]));
  });
  traceLine(
    { code, argv: ['cat', `(${paths.length} files)`] },
    started,
    Math.round(performance.now() - started),
  );
  if (code !== 0)
    throw new Error(
      `cat failed (${signal ? `killed by ${signal}` : `exit status ${code}`})${err.trim() ? `: ${err.trim()}` : ''}`,
    );
}
