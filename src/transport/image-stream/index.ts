// The image stream's public face: a directory tree as one framed, checksummed byte stream and back (the wire
// format: format.ts).
export { type DecodeOptions, decodeTree } from './decode.ts';
export { type EncodeOptions, encodeTree } from './encode.ts';
export {
  ContentDigest,
  contentHash,
  MAX_HEADER_BYTES,
  STREAM_MAGIC,
  type StreamStats,
  unsafePathReason,
} from './format.ts';
export { type DeviceKind, type NodeMaker, SystemNodeMaker } from './nodes.ts';
export { measureTree, type StreamEntrySource } from './walk.ts';
export { xattrNameProblem } from './xattrs.ts';
