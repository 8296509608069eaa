// CRIU's image file framing around the protobuf messages: a magic header, then entries, each a little-endian u32
// length and one message (CRIU's criu/protobuf.c, images/README: "Image format"). The messages themselves are
// decoded by @bufbuild/protobuf with the code generated from CRIU's .proto files (gen/, `make proto`).
import { readFile } from 'node:fs/promises';
import { type DescMessage, fromBinary, type MessageShape } from '@bufbuild/protobuf';

/** Every image but the raw ones starts with this (v1.1 images), then the image's own magic. */
export const IMG_COMMON_MAGIC = 0x54564319;
/** Service files (stats, irmap cache) start with this instead. */
export const IMG_SERVICE_MAGIC = 0x55105940;

/** The magics ferry reads (criu/include/magic.h). */
export const MAGIC = {
  inventory: 0x58313116,
  pstree: 0x50273030,
  fdinfo: 0x56213732,
  pagemap: 0x56084025,
  core: 0x55053847,
  ids: 0x54432030,
  files: 0x56303138,
  remapFpath: 0x59133954,
  mm: 0x57492820,
  tcpStream: 0x51465506,
  mnts: 0x55563928,
  stats: 0x57093306,
} as const;

export class ImageError extends Error {}

/** The image's magic and where its entries start. */
export function imageHeader(buf: Uint8Array): { magic: number; service: boolean; start: number } {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.length < 4) throw new ImageError('image too short for a magic');
  const first = view.getUint32(0, true);
  if (first === IMG_COMMON_MAGIC || first === IMG_SERVICE_MAGIC) {
    if (buf.length < 8) throw new ImageError('image too short for a magic');
    return { magic: view.getUint32(4, true), service: first === IMG_SERVICE_MAGIC, start: 8 };
  }
  return { magic: first, service: false, start: 4 };
}

/**
 * The entries of an image as raw message bytes. `extra` says how many payload bytes follow an entry (a TCP stream's
 * queues follow its entry); they are skipped.
 */
export function* rawEntries(
  buf: Uint8Array,
  start: number,
  extra?: (entry: Uint8Array, index: number) => number,
): Generator<Uint8Array> {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = start;
  let i = 0;
  while (pos < buf.length) {
    if (pos + 4 > buf.length) throw new ImageError('image truncated (entry length)');
    const size = view.getUint32(pos, true);
    pos += 4;
    if (pos + size > buf.length) throw new ImageError('image truncated (entry)');
    const entry = buf.subarray(pos, pos + size);
    pos += size;
    if (extra) pos += extra(entry, i);
    if (pos > buf.length) throw new ImageError('image truncated (entry payload)');
    i++;
    yield entry;
  }
}

/** Decodes every entry of an image with one schema, after checking its magic. */
export function decodeImage<D extends DescMessage>(
  buf: Uint8Array,
  magic: number,
  schema: D,
  extra?: (msg: MessageShape<D>) => number,
): MessageShape<D>[] {
  const h = imageHeader(buf);
  if (h.magic !== magic)
    throw new ImageError(
      `bad magic 0x${h.magic.toString(16)} (expected 0x${magic.toString(16)} for ${schema.typeName})`,
    );
  const out: MessageShape<D>[] = [];
  for (const raw of rawEntries(buf, h.start, extra ? (e) => extra(fromBinary(schema, e)) : undefined)) {
    out.push(decode(schema, raw));
  }
  return out;
}

/** One message; a protobuf decoding error becomes an ImageError naming the type. */
export function decode<D extends DescMessage>(schema: D, raw: Uint8Array): MessageShape<D> {
  try {
    return fromBinary(schema, raw);
  } catch (err) {
    throw new ImageError(`corrupt ${schema.typeName} entry: ${(err as Error).message}`);
  }
}

export async function readImage<D extends DescMessage>(
  path: string,
  magic: number,
  schema: D,
  extra?: (msg: MessageShape<D>) => number,
): Promise<MessageShape<D>[]> {
  return decodeImage(await readFile(path), magic, schema, extra);
}
