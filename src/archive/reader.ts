// Reads a checkpoint archive from a stream (format.ts) and checks it whole: the format and its version first, then
// every file's size and SHA-256 against the manifest at the end. Files go to a staging directory or into memory as
// the caller asks; nothing is trusted (or may be used) until readArchive resolves. An archive file staged where it
// lies has its large files decompressed by zstd straight into the staging directory (framed-source.ts).
import { createHash } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { type FileHandle, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform, type TransformCallback, type Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import tar from 'tar-stream';
import { FerryError } from '../core/errors.ts';
import { zstdDecompress, zstdDecompressFile } from '../runtime/zstd.ts';
import {
  type ArchiveMeta,
  allowedName,
  CHECKPOINT_DIR,
  FORMAT,
  FORMAT_VERSION,
  MANIFEST_FILE,
  type Manifest,
  META_FILE,
  ZSTD_MAGIC,
} from './format.ts';
import { type FramedSource, framedSource, type StagedFrame } from './framed-source.ts';

/** Where one file of the archive goes: a staging directory, memory (small images to decode), or nowhere. */
export type Keep = 'disk' | 'memory' | 'skip';

export interface ReadOptions {
  /** The staging directory for files kept on disk (made if missing). */
  dest?: string;
  keep?: (name: string) => Keep;
  /** Refuse archives whose content is larger (a bound on what a caller may be made to store). */
  maxBytes?: number;
}

export interface ArchiveContents {
  meta: ArchiveMeta;
  manifest: Manifest;
  /** Files kept in memory, by archive name. */
  memory: Map<string, Buffer>;
  /** Names of every file, in archive order. */
  names: string[];
  bytes: number;
}

const invalid = (message: string, cause?: unknown) =>
  new FerryError('FERRY_E_ARCHIVE_INVALID', message, {
    phase: 'input',
    ...(cause === undefined ? {} : { cause }),
  });

/** An archive as a byte stream, or as a file open for reading (read from its start, left open). */
export type ArchiveInput = AsyncIterable<Buffer> | { file: FileHandle };

/** Peeks at the first bytes: zstd-compressed archives are decompressed, plain tars pass through. */
async function decompressed(input: ArchiveInput): Promise<Readable> {
  if ('file' in input) {
    const head = Buffer.alloc(4);
    const { bytesRead } = await input.file.read(head, 0, 4, 0);
    if (bytesRead === 0) throw invalid('the archive is empty');
    // zstd reads the file itself: no byte of it passes through this process before it is decompressed
    if (bytesRead === 4 && head.equals(ZSTD_MAGIC)) return zstdDecompressFile(input.file.fd);
    return input.file.createReadStream({ start: 0, autoClose: false, highWaterMark: 1 << 20 });
  }
  const it = input[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let have = 0;
  while (have < 4) {
    const r = await it.next();
    if (r.done) break;
    head.push(r.value);
    have += r.value.length;
  }
  const first = Buffer.concat(head);
  if (first.length === 0) throw invalid('the archive is empty');
  const all = Readable.from(
    (async function* () {
      yield first;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield r.value;
      }
    })(),
  );
  if (first.length >= 4 && first.subarray(0, 4).equals(ZSTD_MAGIC)) {
    // the zstd program (runtime/zstd.ts): its output ends only once every frame's checksum matched
    const z = zstdDecompress();
    all.on('error', (err) => z.destroy(err));
    return all.pipe(z);
  }
  return all;
}

export async function readArchive(input: ArchiveInput, opts: ReadOptions = {}): Promise<ArchiveContents> {
  const keep = opts.keep ?? (() => 'memory');
  const max = opts.maxBytes ?? Number.POSITIVE_INFINITY;
  const hashes = new Map<string, { size: number; sha256: string }>();
  const memory = new Map<string, Buffer>();
  const names: string[] = [];
  let meta: ArchiveMeta | undefined;
  let manifest: Manifest | undefined;
  let bytes = 0;
  if (opts.dest) await mkdir(join(opts.dest, CHECKPOINT_DIR), { recursive: true, mode: 0o700 });

  // staged where it lies: each large file's frame decompressed by zstd into its staged file
  let framed: FramedSource | undefined;
  if ('file' in input && opts.dest && (await zstdMagic(input.file)))
    framed = await framedSource(input.file, opts.dest, max);
  const source = framed?.stream ?? (await decompressed(input));
  const extract = tar.extract();
  // the tar's end (two zero blocks) must arrive too: a copy cut just after the manifest is still a cut copy
  const tail = new TailCheck();
  source.on('error', (err) => extract.destroy(err));
  source.pipe(tail).pipe(extract as unknown as Writable);
  try {
    for await (const entry of extract) {
      const h = entry.header;
      const name = h.name.replace(/^\.\//, '').replace(/\/$/, '');
      if (manifest) throw invalid(`${name} follows the manifest`);
      if (!meta && name !== META_FILE)
        throw invalid(`not a ferry checkpoint archive (it starts with ${name}, not ${META_FILE})`);
      if (h.type === 'directory' && name === CHECKPOINT_DIR) {
        entry.resume();
        continue;
      }
      if (h.type !== 'file' || !allowedName(name)) throw invalid(`unexpected entry ${name} (${h.type})`);
      if (hashes.has(name) || (name === META_FILE && meta)) throw invalid(`${name} appears twice`);
      bytes += h.size ?? 0;
      if (bytes > max) throw invalid(`the archive holds more than ${max} bytes`);
      const where: Keep = name === META_FILE || name === MANIFEST_FILE ? 'memory' : keep(name);
      const hash = createHash('sha256');
      const chunks: Buffer[] = [];
      let size = 0;
      let file: WriteStream | undefined;
      let staged: StagedFrame | undefined;
      let first = true;
      try {
        for await (const chunk of entry as AsyncIterable<Buffer>) {
          if (first) {
            first = false;
            // by its first byte a staged file's data is staged: the zeroes follow the staging
            const head = framed?.staged[0];
            if (head && head.name === name && head.size === h.size) staged = framed!.staged.shift();
            else if (where === 'disk') file = createStaged(opts.dest, name);
          }
          size += chunk.length;
          if (staged) continue;
          hash.update(chunk);
          if (where === 'memory') chunks.push(chunk);
          if (file) await writeStaged(file, chunk);
        }
      } catch (err) {
        file?.destroy();
        throw err;
      }
      let sha256: string;
      if (staged) {
        // its bytes are where zstd wrote them (their SHA-256 read back from tmpfs): moved to their name
        sha256 = staged.sha256;
        size = staged.size;
        if (where === 'disk') await rename(staged.path, join(opts.dest!, name));
        else {
          if (where === 'memory') chunks.push(await readFile(staged.path));
          await rm(staged.path, { force: true });
        }
      } else {
        sha256 = hash.digest('hex');
        if (where === 'disk') {
          if (first) await writeFile(join(opts.dest!, name), '', { mode: 0o600 });
          else await endStaged(file!);
        }
      }
      const body = where === 'memory' ? Buffer.concat(chunks) : undefined;
      if (name === META_FILE) meta = parseMeta(body!);
      if (name === MANIFEST_FILE) {
        manifest = parseManifest(body!);
        continue;
      }
      hashes.set(name, { size, sha256 });
      names.push(name);
      if (body && name !== META_FILE) memory.set(name, body);
    }
    // the tar ends before its compressed frame does: a frame cut short (or a bad checksum) shows only at its end
    await finished(source);
    if (framed?.staged.length) throw invalid(`${framed.staged[0]!.name} was staged, but no entry claimed it`);
  } catch (err) {
    source.destroy();
    if (err instanceof FerryError) throw err;
    throw invalid(`the archive is truncated or corrupted: ${(err as Error).message}`, err);
  }
  if (!meta) throw invalid('the archive is empty');
  if (manifest && !tail.endsWithTrailer()) throw invalid('the archive is truncated (its end is missing)');
  if (!manifest) throw invalid('the archive is truncated (no manifest at its end)');
  const listed = new Set(manifest.files.map((f) => f.name));
  for (const f of manifest.files) {
    const got = hashes.get(f.name);
    if (!got) throw invalid(`the archive is truncated: ${f.name} is missing`);
    if (got.size !== f.size || got.sha256 !== f.sha256)
      throw invalid(`${f.name} is corrupted (checksum mismatch)`);
  }
  for (const n of hashes.keys()) if (!listed.has(n)) throw invalid(`${n} is not in the manifest`);
  return { meta, manifest, memory, names, bytes };
}

async function zstdMagic(file: FileHandle): Promise<boolean> {
  const head = Buffer.alloc(4);
  const { bytesRead } = await file.read(head, 0, 4, 0);
  return bytesRead === 4 && head.equals(ZSTD_MAGIC);
}

/**
 * A staged file, opened for writing as its first bytes arrive. A deep buffer: the writes queue up (and go out
 * together) instead of waiting on each chunk in turn.
 */
function createStaged(dest: string | undefined, name: string): WriteStream {
  if (!dest) throw new Error('readArchive: keep "disk" needs dest');
  const file = createWriteStream(join(dest, name), { mode: 0o600, highWaterMark: 4 << 20 });
  // a failed write shows at the next write or at the end (below)
  file.on('error', () => {});
  return file;
}

async function writeStaged(file: WriteStream, chunk: Buffer): Promise<void> {
  if (file.errored) throw file.errored;
  if (file.write(chunk)) return;
  await new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      file.off('drain', ok).off('error', done);
      if (err) reject(err);
      else resolve();
    };
    const ok = () => done();
    file.on('drain', ok).on('error', done);
  });
}

async function endStaged(file: WriteStream): Promise<void> {
  file.end();
  await finished(file);
}

/** Passes bytes through, remembering the last 1024 of them and the total. */
class TailCheck extends Transform {
  private last = Buffer.alloc(0);
  private total = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.total += chunk.length;
    // a copy of the last KiB only (not of every chunk: an archive is gigabytes)
    this.last =
      chunk.length >= 1024
        ? Buffer.from(chunk.subarray(-1024))
        : Buffer.concat([this.last, chunk]).subarray(-1024);
    cb(null, chunk);
  }
  endsWithTrailer(): boolean {
    return this.total % 512 === 0 && this.last.length === 1024 && this.last.every((b) => b === 0);
  }
}

function parseMeta(buf: Buffer): ArchiveMeta {
  let m: ArchiveMeta;
  try {
    m = JSON.parse(buf.toString('utf8')) as ArchiveMeta;
  } catch (err) {
    throw invalid(`${META_FILE} is corrupted`, err);
  }
  if (m?.format !== FORMAT)
    throw invalid(`not a ferry checkpoint archive (${META_FILE} says ${String(m?.format)})`);
  if (!Number.isInteger(m.version) || m.version < 1) throw invalid(`${META_FILE} has no valid version`);
  if (m.version > FORMAT_VERSION) {
    throw new FerryError(
      'FERRY_E_ARCHIVE_VERSION',
      `the archive has format version ${m.version}; this ferry reads up to ${FORMAT_VERSION}`,
      { phase: 'input', hint: 'restore it with the newer ferry that wrote it' },
    );
  }
  if (typeof m.record !== 'object' || m.record === null || typeof m.versions?.criu !== 'string')
    throw invalid(`${META_FILE} is incomplete`);
  return m;
}

function parseManifest(buf: Buffer): Manifest {
  try {
    const m = JSON.parse(buf.toString('utf8')) as Manifest;
    if (!Array.isArray(m.files)) throw new Error('no files');
    for (const f of m.files)
      if (typeof f.name !== 'string' || !Number.isInteger(f.size) || !/^[0-9a-f]{64}$/.test(f.sha256))
        throw new Error('bad entry');
    return m;
  } catch (err) {
    throw invalid(`${MANIFEST_FILE} is corrupted`, err);
  }
}
