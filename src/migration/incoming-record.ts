// An incoming migration's record on disk: what the destination must undo if its agent restarts before the commit.
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checkName } from '../core/names.ts';
import type { IncomingRequest } from './types.ts';

/** The states a record is saved in; 'committed' and 'aborted' are never saved (the file is removed). */
export type SavedState = 'prepared' | 'restoring' | 'restored';

export interface IncomingRecord extends IncomingRequest {
  state: SavedState;
  received: ('bundle' | 'images')[];
  createdAt: string;
}

export function recordPath(incomingDir: string, id: string): string {
  return join(incomingDir, `${checkName(id, 'migration')}.json`);
}

/** Migration ids with a record in the directory; half-written files (a crash mid-save) are removed. */
export async function recordedIds(incomingDir: string): Promise<string[]> {
  let files: string[];
  try {
    files = await readdir(incomingDir);
  } catch {
    return [];
  }
  const ids: string[] = [];
  for (const f of files) {
    if (f.endsWith('.tmp')) await rm(join(incomingDir, f), { force: true });
    if (f.endsWith('.json')) ids.push(f.slice(0, -5));
  }
  return ids;
}

/** The record of one id as saved, undefined when it is missing or unreadable. */
export async function readRecord(incomingDir: string, id: string): Promise<IncomingRecord | undefined> {
  try {
    return JSON.parse(await readFile(recordPath(incomingDir, id), 'utf8')) as IncomingRecord;
  } catch {
    return undefined;
  }
}

let writes = 0;

/**
 * The file of one record. Saves are atomic (a crash never leaves half a file) and queued: the parts of a migration
 * arrive concurrently, and each save writes the record as it is when its turn comes, so the last one on disk is
 * the latest. After remove() nothing is written again (a late save must not bring an aborted migration back).
 */
export class RecordFile {
  readonly path: string;
  private queue: Promise<void> = Promise.resolve();
  private removed = false;

  constructor(incomingDir: string, id: string) {
    this.path = recordPath(incomingDir, id);
  }

  save(rec: IncomingRecord): Promise<void> {
    return this.enqueue(async () => {
      if (this.removed) return;
      const tmp = `${this.path}.${process.pid}.${++writes}.tmp`;
      await writeFile(tmp, JSON.stringify(rec));
      await rename(tmp, this.path);
    });
  }

  remove(): Promise<void> {
    this.removed = true;
    return this.enqueue(() => rm(this.path, { force: true }));
  }

  private enqueue(op: () => Promise<void>): Promise<void> {
    const done = this.queue.then(op);
    this.queue = done.catch(() => {});
    return done;
  }
}
