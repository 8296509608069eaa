// The pages a post-copy dump left with its page server: CRIU marks them PE_LAZY in each task's pagemap
// (criu/include/pagemap.h) and writes no page data for them; those marked PE_PARENT are in a pre-dump's images
// instead. Their count is what the destination still has to fetch when it restores.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pagemap_entrySchema, pagemap_headSchema } from './gen/pagemap_pb.js';
import { decode, ImageError, imageHeader, MAGIC, rawEntries } from './image-file.ts';

/** The page size the pagemap counts in (x86-64's and the usual arm64 kernel's). */
export const PAGE_BYTES = 4096;

const PE_PARENT = 1 << 0;
const PE_LAZY = 1 << 1;

/** Lazy pages in one pagemap image. */
export function lazyPagesIn(img: Uint8Array): number {
  const h = imageHeader(img);
  if (h.magic !== MAGIC.pagemap) throw new ImageError('not a pagemap image');
  let pages = 0;
  let first = true;
  for (const raw of rawEntries(img, h.start)) {
    if (first) {
      decode(pagemap_headSchema, raw);
      first = false;
      continue;
    }
    const pe = decode(pagemap_entrySchema, raw);
    if (pe.flags & PE_LAZY && !(pe.flags & PE_PARENT) && !pe.inParent)
      pages += Number(pe.nrPages || pe.compatNrPages);
  }
  return pages;
}

/** Lazy pages over every task's pagemap in an image directory. */
export async function lazyPages(dir: string): Promise<number> {
  let pages = 0;
  for (const f of await readdir(dir)) {
    if (/^pagemap-\d+\.img$/.test(f)) pages += lazyPagesIn(await readFile(join(dir, f)));
  }
  return pages;
}
