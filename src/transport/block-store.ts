// Content-delta pre-copy: memory pages are sent once per distinct content. The source remembers what it sent;
// the destination keeps every page it received in a block file and rebuilds CRIU's pages images from recipes
// (one SHA-1 per 4 KiB page, in image order).
import { hash } from 'node:crypto';
import { type FileHandle, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { FerryError } from '../core/errors.ts';

export const PAGE = 4096;
const DIGEST = 20;
const CHUNK = 1 << 20;

export function pageDigest(block: Uint8Array): Buffer {
  return hash('sha1', block, 'buffer');
}

/** CRIU's page images in a checkpoint directory (`pages-N.img`). */
export async function pageImages(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => /^pages-\d+\.img$/.test(f)).sort();
}

/** A recipe diff (`.rdiff`): the recipe of the same image in an earlier round, and the pages that differ. */
const RDIFF_MAGIC = 'FRD1';
const RDIFF_HEAD = 16; // magic, base round, page count, entry count (uint32 big-endian each but the magic)
const RDIFF_ENTRY = 4 + DIGEST; // page index, digest

/**
 * Encodes `recipe` against `base` (the same image's recipe one round earlier): the page count and the pages whose
 * digest differs. Undefined when the full recipe would be smaller.
 */
export function diffRecipe(recipe: Buffer, base: Buffer, baseRound: number): Buffer | undefined {
  const n = recipe.length / DIGEST;
  const m = base.length / DIGEST;
  const changed: number[] = [];
  for (let k = 0; k < n; k++) {
    const at = k * DIGEST;
    if (k >= m || recipe.compare(base, at, at + DIGEST, at, at + DIGEST) !== 0) changed.push(k);
  }
  const size = RDIFF_HEAD + changed.length * RDIFF_ENTRY;
  if (size >= recipe.length) return undefined;
  const out = Buffer.allocUnsafe(size);
  out.write(RDIFF_MAGIC, 0, 'latin1');
  out.writeUInt32BE(baseRound, 4);
  out.writeUInt32BE(n, 8);
  out.writeUInt32BE(changed.length, 12);
  changed.forEach((k, i) => {
    const at = RDIFF_HEAD + i * RDIFF_ENTRY;
    out.writeUInt32BE(k, at);
    recipe.copy(out, at + 4, k * DIGEST, (k + 1) * DIGEST);
  });
  return out;
}

/** The base round a recipe diff refers to. */
export function rdiffBase(diff: Buffer): number {
  if (diff.length < RDIFF_HEAD || diff.toString('latin1', 0, 4) !== RDIFF_MAGIC)
    throw new FerryError('FERRY_E_TRANSFER_CORRUPT', 'malformed recipe diff', { phase: 'restore' });
  return diff.readUInt32BE(4);
}

/** The full recipe from a diff and its base; throws on anything inconsistent. */
export function applyRecipeDiff(diff: Buffer, base: Buffer): Buffer {
  rdiffBase(diff);
  const n = diff.readUInt32BE(8);
  const count = diff.readUInt32BE(12);
  if (diff.length !== RDIFF_HEAD + count * RDIFF_ENTRY || base.length % DIGEST !== 0)
    throw new FerryError('FERRY_E_TRANSFER_CORRUPT', 'malformed recipe diff', { phase: 'restore' });
  const out = Buffer.alloc(n * DIGEST);
  base.copy(out, 0, 0, Math.min(base.length, out.length));
  const seen = new Uint8Array(n);
  for (let i = 0; i < count; i++) {
    const at = RDIFF_HEAD + i * RDIFF_ENTRY;
    const k = diff.readUInt32BE(at);
    if (k >= n)
      throw new FerryError('FERRY_E_TRANSFER_CORRUPT', 'recipe diff beyond its page count', {
        phase: 'restore',
      });
    diff.copy(out, k * DIGEST, at + 4, at + RDIFF_ENTRY);
    seen[k] = 1;
  }
  // pages past the base's end must all be in the diff
  for (let k = base.length / DIGEST; k < n; k++) {
    if (!seen[k])
      throw new FerryError('FERRY_E_TRANSFER_CORRUPT', `recipe diff misses page ${k}`, { phase: 'restore' });
  }
  return out;
}

/** The source's half: which page contents the destination holds, and the delta of a new dump against it. */
export class PageDelta {
  private readonly sent = new Set<string>();
  /** The recipes of the last delta, per image, and how many pages changed against the ones before. */
  private last = new Map<string, Buffer>();
  private lastRound = 0;
  changedPages = 0;

  get distinctPages(): number {
    return this.sent.size;
  }

  /**
   * After a round's recipes reached the destination (as `recipes-ROUND/`): later recipes may be sent as diffs
   * against them.
   */
  remember(round: number, recipes: Map<string, Buffer>): void {
    this.last = recipes;
    this.lastRound = round;
  }

  /**
   * What to send for each recipe of the final dump: a diff against the remembered round where that is smaller,
   * else the full recipe. File names end in `.rdiff` or `.recipe`.
   */
  encodeRecipes(recipes: Map<string, Buffer>): Map<string, Buffer> {
    const out = new Map<string, Buffer>();
    for (const [f, r] of recipes) {
      const base = this.lastRound > 0 ? this.last.get(f) : undefined;
      const diff = base ? diffRecipe(r, base, this.lastRound) : undefined;
      out.set(diff ? `${f}.rdiff` : `${f}.recipe`, diff ?? r);
    }
    return out;
  }

  /**
   * Reads the page images of `dir`; returns the stream of pages the destination lacks (raw 4 KiB blocks) and,
   * per image, its recipe. `newBytes` is final once the stream has been consumed.
   */
  delta(
    dir: string,
    files: string[],
  ): { blocks: Readable; recipes: Promise<Map<string, Buffer>>; newBytes: () => number } {
    const recipes = new Map<string, Buffer>();
    let newBytes = 0;
    let done!: (m: Map<string, Buffer>) => void;
    let fail!: (e: unknown) => void;
    const finished = new Promise<Map<string, Buffer>>((res, rej) => {
      done = res;
      fail = rej;
    });
    finished.catch(() => {});
    const sent = this.sent;
    const last = this.last;
    let changed = 0;
    const self = this;
    async function* gen(): AsyncGenerator<Buffer> {
      try {
        for (const f of files) {
          const fh = await open(join(dir, f), 'r');
          try {
            const size = (await fh.stat()).size;
            if (size % PAGE !== 0)
              throw new FerryError('FERRY_E_CHECKPOINT_FAILED', `${f} is not a whole number of pages`);
            const recipe = Buffer.allocUnsafe((size / PAGE) * DIGEST);
            const prev = last.get(f);
            let pos = 0;
            const buf = Buffer.allocUnsafe(CHUNK);
            while (pos < size) {
              const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, size - pos), pos);
              if (bytesRead === 0) break;
              const fresh: Buffer[] = [];
              for (let off = 0; off < bytesRead; off += PAGE) {
                const block = buf.subarray(off, off + PAGE);
                const d = pageDigest(block);
                const at = ((pos + off) / PAGE) * DIGEST;
                d.copy(recipe, at);
                if (
                  !prev ||
                  at + DIGEST > prev.length ||
                  prev.compare(recipe, at, at + DIGEST, at, at + DIGEST) !== 0
                )
                  changed++;
                const key = d.toString('latin1');
                if (!sent.has(key)) {
                  sent.add(key);
                  fresh.push(Buffer.from(block));
                }
              }
              pos += bytesRead;
              if (fresh.length) {
                newBytes += fresh.length * PAGE;
                yield Buffer.concat(fresh);
              }
            }
            recipes.set(f, recipe);
          } finally {
            await fh.close();
          }
        }
        self.changedPages = changed;
        done(recipes);
      } catch (err) {
        fail(err);
        throw err;
      }
    }
    return {
      blocks: Readable.from(gen(), { objectMode: false }),
      recipes: finished,
      newBytes: () => newBytes,
    };
  }
}

/** The destination's half: every page received so far, indexed by content. */
export class BlockStore {
  private readonly path: string;
  private readonly index = new Map<string, number>();
  private fh: FileHandle | undefined;
  private size = 0;

  constructor(dir: string) {
    this.path = join(dir, 'blocks.bin');
  }

  get pages(): number {
    return this.index.size;
  }

  private async file(): Promise<FileHandle> {
    this.fh ??= await open(this.path, 'a+');
    return this.fh;
  }

  /** Stores a stream of raw pages (any chunking); returns how many were new. */
  async add(input: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<{ pages: number; added: number }> {
    const fh = await this.file();
    let carry = Buffer.alloc(0);
    let pages = 0;
    let added = 0;
    for await (const chunk of input) {
      const data = carry.length ? Buffer.concat([carry, chunk]) : chunk;
      const whole = data.length - (data.length % PAGE);
      const out: Buffer[] = [];
      for (let off = 0; off < whole; off += PAGE) {
        const block = data.subarray(off, off + PAGE);
        pages++;
        const key = pageDigest(block).toString('latin1');
        if (this.index.has(key)) continue;
        this.index.set(key, this.size + out.length * PAGE);
        out.push(block);
        added++;
      }
      if (out.length) {
        const buf = Buffer.concat(out);
        await fh.write(buf, 0, buf.length, this.size);
        this.size += buf.length;
      }
      carry = Buffer.from(data.subarray(whole));
    }
    if (carry.length)
      throw new FerryError('FERRY_E_TRANSFER_CORRUPT', 'page stream ended inside a page', {
        phase: 'transfer',
      });
    return { pages, added };
  }

  /**
   * Rebuilds every `*.recipe` (or `*.rdiff` with its base round's recipe under `recipes-N/`) in `dir` into the
   * page image it stands for, and removes the recipes.
   */
  async rebuild(dir: string): Promise<number> {
    const fh = await this.file();
    let bytes = 0;
    for (const f of (await readdir(dir)).filter((x) => x.endsWith('.rdiff'))) {
      const diff = await readFile(join(dir, f));
      const name = f.slice(0, -'.rdiff'.length);
      let base: Buffer;
      try {
        base = await readFile(join(dir, `recipes-${rdiffBase(diff)}`, `${name}.recipe`));
      } catch (err) {
        if (err instanceof FerryError) throw err;
        throw new FerryError('FERRY_E_TRANSFER_CORRUPT', `${f}: the round it refers to never arrived`, {
          phase: 'restore',
        });
      }
      await writeFile(join(dir, `${name}.recipe`), applyRecipeDiff(diff, base));
      await rm(join(dir, f));
    }
    for (const d of (await readdir(dir)).filter((x) => /^recipes-\d+$/.test(x)))
      await rm(join(dir, d), { recursive: true, force: true });
    for (const f of (await readdir(dir)).filter((x) => x.endsWith('.recipe'))) {
      const recipe = await readFile(join(dir, f));
      if (recipe.length % DIGEST !== 0)
        throw new FerryError('FERRY_E_TRANSFER_CORRUPT', `${f}: malformed recipe`, { phase: 'restore' });
      const n = recipe.length / DIGEST;
      const offsets = new Float64Array(n);
      for (let k = 0; k < n; k++) {
        const at = this.index.get(recipe.subarray(k * DIGEST, (k + 1) * DIGEST).toString('latin1'));
        if (at === undefined) {
          throw new FerryError('FERRY_E_TRANSFER_CORRUPT', `${f}: page ${k} never arrived`, {
            phase: 'restore',
          });
        }
        offsets[k] = at;
      }
      const out = await open(join(dir, f.slice(0, -'.recipe'.length)), 'w');
      try {
        const buf = Buffer.allocUnsafe(CHUNK);
        let fill = 0;
        let pos = 0;
        let k = 0;
        while (k < n) {
          // pages stored one after another are read in one go
          let run = 1;
          while (
            k + run < n &&
            offsets[k + run] === offsets[k]! + run * PAGE &&
            fill + (run + 1) * PAGE <= CHUNK
          )
            run++;
          await fh.read(buf, fill, run * PAGE, offsets[k]!);
          fill += run * PAGE;
          k += run;
          if (fill + PAGE > CHUNK || k === n) {
            await out.write(buf, 0, fill, pos);
            pos += fill;
            fill = 0;
          }
        }
        bytes += pos;
      } finally {
        await out.close();
      }
      await rm(join(dir, f));
    }
    return bytes;
  }

  async close(): Promise<void> {
    await this.fh?.close();
    this.fh = undefined;
  }

  async bytesOnDisk(): Promise<number> {
    try {
      return (await stat(this.path)).size;
    } catch {
      return 0;
    }
  }
}

/** Writes recipes next to (instead of) the page images they describe, as `IMAGE.recipe`. */
export async function writeRecipes(dir: string, recipes: Map<string, Buffer>): Promise<void> {
  await writeFiles(dir, new Map([...recipes].map(([f, r]) => [`${f}.recipe`, r])));
}

/** Writes each named buffer into `dir` (recipes as PageDelta.encodeRecipes names them); returns the bytes. */
export async function writeFiles(dir: string, files: Map<string, Buffer>): Promise<number> {
  let bytes = 0;
  for (const [f, b] of files) {
    await writeFile(join(dir, f), b);
    bytes += b.length;
  }
  return bytes;
}
