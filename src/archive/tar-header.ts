// The ustar headers of a checkpoint archive, written here rather than by tar-stream's packer: the writer must know
// where each file's data begins and ends in the tar stream (a large file's data is a zstd frame of its own, its
// header and padding in the frames beside it), which a packer's output stream does not say. Reading stays with
// tar-stream; `fileHeader` only recognises the header in front of such a frame.

export const BLOCK = 512;

/** The zeroes that fill a file's data up to the next 512-byte block. */
export function padding(size: number): Buffer {
  return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
}

/** The two zero blocks that end a tar. */
export const TRAILER = Buffer.alloc(2 * BLOCK);

/** A ustar header for a regular file or a directory. Names are ASCII; longer than 100 bytes they use the prefix. */
export function header(e: {
  name: string;
  size: number;
  mode: number;
  mtime: Date;
  type: 'file' | 'directory';
}): Buffer {
  const b = Buffer.alloc(BLOCK);
  let name = e.type === 'directory' ? `${e.name}/` : e.name;
  let prefix = '';
  if (!/^[\x20-\x7e]+$/.test(name)) throw new Error(`${e.name}: not an ASCII name`);
  if (name.length > 100) {
    const cut = name.lastIndexOf('/', name.length - 2);
    if (cut <= 0 || cut > 155 || name.length - cut - 1 > 100)
      throw new Error(`${e.name}: name too long for tar`);
    prefix = name.slice(0, cut);
    name = name.slice(cut + 1);
  }
  // ustar's sizes are 11 octal digits: 8 GiB at most, more than any single file here
  if (e.size >= 8 * 1024 ** 3) throw new Error(`${e.name}: larger than a ustar header can say`);
  b.write(name, 0, 'ascii');
  b.write(octal(e.mode & 0o7777, 7), 100, 'ascii');
  b.write(octal(0, 7), 108, 'ascii');
  b.write(octal(0, 7), 116, 'ascii');
  b.write(octal(e.size, 11), 124, 'ascii');
  b.write(octal(Math.floor(e.mtime.getTime() / 1000), 11), 136, 'ascii');
  b.write(e.type === 'directory' ? '5' : '0', 156, 'ascii');
  b.write('ustar\u000000', 257, 'ascii');
  b.write(prefix, 345, 'ascii');
  // the checksum is taken with its own field as spaces
  b.fill(0x20, 148, 156);
  b.write(`${octal(sum(b), 6)}\u0000 `, 148, 'ascii');
  return b;
}

/**
 * The name and size of the regular file whose ustar header `b` is, or undefined for anything else (another type,
 * a bad checksum, a size in binary). The tar reader decides what the archive holds; this only says where a large
 * file's data frame is expected.
 */
export function fileHeader(b: Buffer): { name: string; size: number } | undefined {
  if (b.length !== BLOCK || b.toString('ascii', 257, 262) !== 'ustar') return undefined;
  const type = b[156];
  if (type !== 0x30 && type !== 0) return undefined;
  const want = Number.parseInt(field(b, 148, 8), 8);
  const copy = Buffer.from(b);
  copy.fill(0x20, 148, 156);
  if (!Number.isInteger(want) || sum(copy) !== want) return undefined;
  const sizeField = field(b, 124, 12);
  if (!/^[0-7]+$/.test(sizeField)) return undefined;
  const name = field(b, 0, 100);
  const prefix = field(b, 345, 155);
  return { name: prefix ? `${prefix}/${name}` : name, size: Number.parseInt(sizeField, 8) };
}

function octal(n: number, digits: number): string {
  return n.toString(8).padStart(digits, '0');
}

function field(b: Buffer, at: number, len: number): string {
  const raw = b.subarray(at, at + len);
  const end = raw.indexOf(0);
  return raw.toString('ascii', 0, end === -1 ? len : end).trim();
}

function sum(b: Buffer): number {
  let s = 0;
  for (const x of b) s += x;
  return s;
}
