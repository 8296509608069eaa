// The links CRIU made at the dump to files that were open but unlinked while other hard links remained
// (--link-remap): remap-fpath.img pairs each such file with a `link_remap.N` name beside it, files.img names both.
// A dump that leaves the tasks running removes those links again at its end (criu/cr-dump.c), so the engine makes
// them anew before the rootfs is sent (host/link-remaps.ts).
import { file_entrySchema } from './gen/fdinfo_pb.js';
import { remap_file_path_entrySchema, remap_type } from './gen/remap-file-path_pb.js';
import { decodeImage, MAGIC } from './image-file.ts';

export interface LinkRemap {
  /** The file's name when it was opened, as the process sees it (`/data/x`; /proc says `/data/x (deleted)`). */
  orig: string;
  /** The name CRIU links it under and the restore opens, from the container's root (`/data/link_remap.7`). */
  remap: string;
}

/** Every linked remap of a dump; none when the dump wrote no remap-fpath.img. */
export function linkRemaps(remapImg: Uint8Array | undefined, filesImg: Uint8Array | undefined): LinkRemap[] {
  if (!remapImg || !filesImg) return [];
  const remaps = decodeImage(remapImg, MAGIC.remapFpath, remap_file_path_entrySchema).filter(
    (r) => r.remapType === remap_type.LINKED,
  );
  if (!remaps.length) return [];
  const names = new Map<number, string>();
  for (const f of decodeImage(filesImg, MAGIC.files, file_entrySchema))
    if (f.reg) names.set(f.id, f.reg.name);
  const out: LinkRemap[] = [];
  for (const r of remaps) {
    const orig = names.get(r.origId);
    const remap = names.get(r.remapId);
    if (orig !== undefined && remap !== undefined) out.push({ orig, remap });
  }
  return out;
}
