// What a set of CRIU images holds, in ferry's words: the process tree, memory by mapping kind, open files, sockets
// with their TCP states, mounts and namespaces. Every image is decoded with the code generated from CRIU's .proto
// files (gen/); the flag and state values below are CRIU's (criu/include/image.h, compel's task-state.h).
import { core_entrySchema, task_kobj_ids_entrySchema } from './gen/core_pb.js';
import { fd_typesSchema, fdinfo_entrySchema, file_entrySchema } from './gen/fdinfo_pb.js';
import { inventory_entrySchema } from './gen/inventory_pb.js';
import { mm_entrySchema } from './gen/mm_pb.js';
import { fstypeSchema, mnt_entrySchema } from './gen/mnt_pb.js';
import { pagemap_entrySchema, pagemap_headSchema } from './gen/pagemap_pb.js';
import { pstree_entrySchema } from './gen/pstree_pb.js';
import type { inet_sk_entry } from './gen/sk-inet_pb.js';
import { tcp_stream_entrySchema } from './gen/tcp-stream_pb.js';
import { decode, decodeImage, ImageError, imageHeader, MAGIC, rawEntries } from './image-file.ts';
import { parseStats } from './stats.ts';

/** Where the images come from: a directory on disk or files held in memory. */
export interface ImageSource {
  names: string[];
  read(name: string): Promise<Uint8Array | undefined>;
}

export interface InspectProcess {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  command: string;
  state: 'alive' | 'dead' | 'stopped' | 'zombie' | 'unknown';
  threads: number;
}

export interface InspectMemory {
  pid: number;
  mappings: number;
  /** Bytes mapped, by kind (anonymous private, anonymous shared, file private, file shared, stack, heap, other). */
  bytes: Record<string, number>;
  pagesDumped: number;
}

export interface InspectFile {
  pid: number;
  fd: number;
  type: string;
  path?: string;
}

export interface InspectSocket {
  pid: number;
  fd: number;
  family: 'ipv4' | 'ipv6' | string;
  type: 'stream' | 'dgram' | 'raw' | string;
  protocol: 'tcp' | 'udp' | string;
  state: string;
  local: string;
  remote?: string;
  /** Bytes queued in the TCP stream image (not yet read by the process, not yet acknowledged by the peer). */
  queued?: { in: number; out: number };
}

export interface InspectMount {
  id: number;
  parent: number;
  mountpoint: string;
  fstype: string;
  source: string;
  root: string;
}

export interface InspectImages {
  processes: InspectProcess[];
  memory: InspectMemory[];
  files: InspectFile[];
  sockets: InspectSocket[];
  mounts: InspectMount[];
  /** Namespace ids of the root task (tasks sharing an id share the namespace). */
  namespaces: Record<string, number>;
  /** CRIU's image format version and whether the dump closed TCP connections. */
  criu: { imageVersion: number; tcpClose: boolean };
  dump?: { frozenTimeUs?: number; pagesWritten?: number };
  /** Bytes of page data (pages-*.img) as the caller measured them. */
  pagesBytes?: number;
}

const TASK_STATE: Record<number, InspectProcess['state']> = {
  1: 'alive',
  2: 'dead',
  3: 'stopped',
  6: 'zombie',
};

const VMA_AREA_STACK = 1 << 1;
const VMA_AREA_HEAP = 1 << 5;
const VMA_FILE_PRIVATE = 1 << 6;
const VMA_FILE_SHARED = 1 << 7;
const VMA_ANON_SHARED = 1 << 8;
const VMA_ANON_PRIVATE = 1 << 9;

function vmaKind(status: number): string {
  if (status & VMA_AREA_STACK) return 'stack';
  if (status & VMA_AREA_HEAP) return 'heap';
  if (status & VMA_FILE_PRIVATE) return 'filePrivate';
  if (status & VMA_FILE_SHARED) return 'fileShared';
  if (status & VMA_ANON_SHARED) return 'anonShared';
  if (status & VMA_ANON_PRIVATE) return 'anonPrivate';
  return 'other';
}

/** Linux's TCP states (include/net/tcp_states.h). */
const TCP_STATE = [
  '',
  'ESTABLISHED',
  'SYN_SENT',
  'SYN_RECV',
  'FIN_WAIT1',
  'FIN_WAIT2',
  'TIME_WAIT',
  'CLOSE',
  'CLOSE_WAIT',
  'LAST_ACK',
  'LISTEN',
  'CLOSING',
];

/** CRIU stores an address as the u32 words of the kernel's struct, in memory order (network order bytes). */
function address(words: number[], family: number, port: number): string {
  const buf = Buffer.alloc(words.length * 4);
  words.forEach((w, i) => {
    buf.writeUInt32LE(w >>> 0, i * 4);
  });
  if (family === 2) return `${[...buf.subarray(0, 4)].join('.')}:${port}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(buf.readUInt16BE(i).toString(16));
  return `[${groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::')}]:${port}`;
}

function socketOf(sk: inet_sk_entry): Omit<InspectSocket, 'pid' | 'fd'> {
  const protocol = sk.proto === 6 ? 'tcp' : sk.proto === 17 ? 'udp' : String(sk.proto);
  const out: Omit<InspectSocket, 'pid' | 'fd'> = {
    family: sk.family === 2 ? 'ipv4' : sk.family === 10 ? 'ipv6' : String(sk.family),
    type: sk.type === 1 ? 'stream' : sk.type === 2 ? 'dgram' : sk.type === 3 ? 'raw' : String(sk.type),
    protocol,
    state:
      protocol === 'tcp'
        ? (TCP_STATE[sk.state] ?? String(sk.state))
        : sk.state === 1
          ? 'CONNECTED'
          : 'UNCONNECTED',
    local: address(sk.srcAddr, sk.family, sk.srcPort),
  };
  if (sk.dstPort || sk.dstAddr.some((w) => w !== 0)) out.remote = address(sk.dstAddr, sk.family, sk.dstPort);
  return out;
}

async function need(src: ImageSource, name: string): Promise<Uint8Array> {
  const buf = await src.read(name);
  if (!buf) throw new ImageError(`${name} is missing`);
  return buf;
}

export async function inspectImages(src: ImageSource): Promise<InspectImages> {
  const [inventory] = decodeImage(await need(src, 'inventory.img'), MAGIC.inventory, inventory_entrySchema);
  const tree = decodeImage(await need(src, 'pstree.img'), MAGIC.pstree, pstree_entrySchema);
  const out: InspectImages = {
    processes: [],
    memory: [],
    files: [],
    sockets: [],
    mounts: [],
    namespaces: {},
    criu: { imageVersion: inventory?.imgVersion ?? 0, tcpClose: inventory?.tcpClose ?? false },
  };

  // files.img: every open file of the dump by id; each task's fdinfo points into it
  const files = new Map<number, ReturnType<typeof decode<typeof file_entrySchema>>>();
  const filesImg = await src.read('files.img');
  if (filesImg) for (const f of decodeImage(filesImg, MAGIC.files, file_entrySchema)) files.set(f.id, f);
  const tcpQueues = new Map<number, { in: number; out: number }>();
  for (const n of src.names.filter((x) => /^tcp-stream-[0-9a-f]+\.img$/.test(x))) {
    const buf = await need(src, n);
    const h = imageHeader(buf);
    if (h.magic !== MAGIC.tcpStream) throw new ImageError(`${n}: bad magic`);
    // the entry is followed by the queues' bytes
    const [raw] = rawEntries(buf, h.start, (e) => {
      const t = decode(tcp_stream_entrySchema, e);
      return t.inqLen + t.outqLen;
    });
    if (!raw) continue;
    const t = decode(tcp_stream_entrySchema, raw);
    tcpQueues.set(Number.parseInt(n.slice('tcp-stream-'.length, -'.img'.length), 16), {
      in: t.inqLen,
      out: t.outqLen,
    });
  }

  for (const t of tree) {
    const core = (await src.read(`core-${t.pid}.img`)) ?? undefined;
    const [c] = core ? decodeImage(core, MAGIC.core, core_entrySchema) : [];
    out.processes.push({
      pid: t.pid,
      ppid: t.ppid,
      pgid: t.pgid,
      sid: t.sid,
      command: c?.tc?.comm ?? '?',
      state: TASK_STATE[c?.tc?.taskState ?? 0] ?? 'unknown',
      threads: Math.max(1, t.threads.length),
    });

    const idsImg = await src.read(`ids-${t.pid}.img`);
    const [ids] = idsImg ? decodeImage(idsImg, MAGIC.ids, task_kobj_ids_entrySchema) : [];
    if (ids && t.ppid === 0) {
      const ns: Record<string, number | undefined> = {
        pid: ids.pidNsId,
        net: ids.netNsId,
        ipc: ids.ipcNsId,
        uts: ids.utsNsId,
        mnt: ids.mntNsId,
        user: ids.userNsId,
        cgroup: ids.cgroupNsId,
        time: ids.timeNsId,
      };
      for (const [k, v] of Object.entries(ns)) if (v) out.namespaces[k] = v;
    }

    if (ids) {
      const mmImg = await src.read(`mm-${t.pid}.img`);
      const [mm] = mmImg ? decodeImage(mmImg, MAGIC.mm, mm_entrySchema) : [];
      const pmImg = await src.read(`pagemap-${t.pid}.img`);
      let pagesDumped = 0;
      if (pmImg) {
        const h = imageHeader(pmImg);
        if (h.magic !== MAGIC.pagemap) throw new ImageError(`pagemap-${t.pid}.img: bad magic`);
        let first = true;
        for (const raw of rawEntries(pmImg, h.start)) {
          if (first) {
            decode(pagemap_headSchema, raw);
            first = false;
            continue;
          }
          const pe = decode(pagemap_entrySchema, raw);
          if (!pe.inParent) pagesDumped += Number(pe.nrPages || pe.compatNrPages);
        }
      }
      if (mm) {
        const bytes: Record<string, number> = {};
        for (const v of mm.vmas) {
          const k = vmaKind(v.status);
          bytes[k] = (bytes[k] ?? 0) + Number(v.end - v.start);
        }
        out.memory.push({ pid: t.pid, mappings: mm.vmas.length, bytes, pagesDumped });
      }

      const fdImg = await src.read(`fdinfo-${ids.filesId}.img`);
      const fds = fdImg ? decodeImage(fdImg, MAGIC.fdinfo, fdinfo_entrySchema) : [];
      for (const fd of fds) {
        const f = files.get(fd.id);
        const type = fd_typesSchema.values.find((v) => v.number === fd.type)?.name ?? String(fd.type);
        const entry: InspectFile = { pid: t.pid, fd: fd.fd, type };
        if (f?.reg) entry.path = f.reg.name;
        else if (f?.pipe) entry.path = `pipe:[${f.pipe.pipeId}]`;
        else if (f?.usk) entry.path = `unix:${Buffer.from(f.usk.name).toString('utf8') || `[${f.usk.ino}]`}`;
        else if (f?.isk) entry.path = `socket:[${f.isk.ino}]`;
        out.files.push(entry);
        if (f?.isk) {
          const s: InspectSocket = { pid: t.pid, fd: fd.fd, ...socketOf(f.isk) };
          const q = tcpQueues.get(f.isk.ino);
          if (q) s.queued = q;
          out.sockets.push(s);
        }
      }
    }
  }

  for (const n of src.names.filter((x) => /^mountpoints-\d+\.img$/.test(x))) {
    for (const m of decodeImage(await need(src, n), MAGIC.mnts, mnt_entrySchema)) {
      out.mounts.push({
        id: m.mntId,
        parent: m.parentMntId,
        mountpoint: m.mountpoint,
        fstype:
          m.fsname || (fstypeSchema.values.find((v) => v.number === m.fstype)?.name.toLowerCase() ?? '?'),
        source: m.source,
        root: m.root,
      });
    }
  }

  const stats = await src.read('stats-dump');
  if (stats) {
    const d = parseStats(stats).dump;
    if (d) {
      out.dump = {};
      if (d.frozenTimeUs !== undefined) out.dump.frozenTimeUs = d.frozenTimeUs;
      if (d.pagesWritten !== undefined) out.dump.pagesWritten = d.pagesWritten;
    }
  }
  return out;
}

/** An image directory as a source. */
export async function directorySource(dir: string): Promise<ImageSource> {
  const { readdir, readFile } = await import('node:fs/promises');
  const { join } = await import('node:path');
  const names = await readdir(dir);
  return {
    names,
    read: (name) => (names.includes(name) ? readFile(join(dir, name)) : Promise.resolve(undefined)),
  };
}
