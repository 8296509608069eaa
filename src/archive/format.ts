// The checkpoint archive's layout: Podman's (what `podman container checkpoint --export` writes and checkpointctl
// reads) with ferry's metadata beside it. A tar, zstd-compressed by default:
//
//   ferry.json            ferry's metadata, first, so a reader refuses a newer format before reading the rest
//   config.dump           Podman's container config (id, name, runtime, times): what checkpointctl shows
//   spec.dump             the container's OCI config (config.json)
//   checkpoint/           CRIU's images, as `runc checkpoint` wrote them
//   stats-dump            CRIU's dump statistics (a copy of checkpoint/stats-dump, where Podman keeps it)
//   rootfs-diff.tar       the container's writable root filesystem (ferry's rootfs is the container's own), as GNU
//                         tar writes it: PAX headers, xattrs and ACLs as SCHILY.xattr.*, holes, hard links, nodes
//   ferry-manifest.json   last: size and SHA-256 of every file before it; a reader checks them all
//
// A reader that is not ferry (checkpointctl) ignores the two ferry files.

export const FORMAT = 'ferry-checkpoint';
/**
 * Bumped when an older ferry could no longer restore what a newer one writes. 2: rootfs-diff.tar carries xattrs
 * and ACLs (version 1's reader would drop them) and ferry.json lists the rootfs's socket files.
 */
export const FORMAT_VERSION = 2;

export const META_FILE = 'ferry.json';
export const MANIFEST_FILE = 'ferry-manifest.json';
export const CONFIG_DUMP = 'config.dump';
export const SPEC_DUMP = 'spec.dump';
export const STATS_DUMP = 'stats-dump';
export const ROOTFS_DIFF = 'rootfs-diff.tar';
export const CHECKPOINT_DIR = 'checkpoint';

/** zstd's frame magic, little-endian on disk: 28 b5 2f fd. */
export const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

export interface ArchiveMeta {
  format: typeof FORMAT;
  version: number;
  createdAt: string;
  /** The host the checkpoint was taken on. */
  host: string;
  /** The container's record as its host kept it (validated by the host that restores it). */
  record: Record<string, unknown>;
  versions: { ferry: string; criu: string; runc: string; kernel: string };
  /** The container kept running after the checkpoint. */
  leaveRunning: boolean;
  /** CRIU dumped established TCP connections (the container has a network of its own). */
  tcpEstablished: boolean;
  /** What rootfs-diff.tar cannot hold (version 2 on). */
  rootfs?: { sockets: RootfsSocket[] };
}

/** A unix socket file of the rootfs: tar has no record for one, so it travels here and is made again on restore. */
export interface RootfsSocket {
  /** Relative to the rootfs. */
  path: string;
  /** Permission bits (setuid, setgid, sticky included). */
  mode: number;
  uid: number;
  gid: number;
  /** Nanoseconds since the epoch, as a decimal string (beyond a double's precision). */
  mtimeNs: string;
  /** Name -> value in base64. */
  xattrs: Record<string, string>;
}

export interface ManifestEntry {
  name: string;
  size: number;
  sha256: string;
}

export interface Manifest {
  files: ManifestEntry[];
}

/** Names a reader accepts: the fixed files and plain file names inside checkpoint/ (CRIU writes no subfolders). */
export function allowedName(name: string): boolean {
  if ([META_FILE, MANIFEST_FILE, CONFIG_DUMP, SPEC_DUMP, STATS_DUMP, ROOTFS_DIFF].includes(name)) return true;
  const m = /^checkpoint\/([A-Za-z0-9][A-Za-z0-9._-]{0,200})$/.exec(name);
  return m !== null && !m[1]!.includes('..');
}
