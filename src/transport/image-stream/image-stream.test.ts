import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmod,
  chown,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type TestContext, test } from 'node:test';
import { FerryError } from '../../core/errors.ts';
import { snapshotTree, treeChanges } from '../tree-diff.ts';
import {
  contentHash,
  decodeTree,
  encodeTree,
  MAX_HEADER_BYTES,
  STREAM_MAGIC,
  type StreamEntrySource,
  unsafePathReason,
} from './index.ts';

const isRoot = process.getuid?.() === 0;

async function tmp(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-image-stream-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function collect(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** The buffer re-cut into pieces of the given size (or random sizes up to `max` when size is 'random'). */
async function* rechunk(buf: Buffer, size: number | 'random', max = 100_000): AsyncGenerator<Buffer> {
  let off = 0;
  while (off < buf.length) {
    const n = size === 'random' ? 1 + Math.floor(Math.random() * max) : size;
    yield buf.subarray(off, off + n);
    off += n;
  }
}

async function* once(buf: Buffer): AsyncGenerator<Buffer> {
  yield buf;
}

interface Rec {
  h: Record<string, unknown>;
  content?: Buffer;
  digest?: Buffer;
}

function frameHeader(h: Record<string, unknown>): { framed: Buffer; json: Buffer } {
  const json = Buffer.from(JSON.stringify(h));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(json.length);
  return { framed: Buffer.concat([len, json]), json };
}

/** A hand-made stream: valid framing around whatever records are given, with a correct end record unless overridden. */
function craft(records: Rec[], end: Partial<{ n: number; s: number; h: string }> = {}): Buffer {
  const parts: Buffer[] = [Buffer.from(STREAM_MAGIC)];
  const hh = createHash('sha256');
  let total = 0;
  for (const r of records) {
    const { framed, json } = frameHeader(r.h);
    parts.push(framed);
    hh.update(json);
    if (r.h['t'] === 'f') {
      const c = r.content ?? Buffer.alloc(0);
      // a file over 64 KiB travels as pieces: here one data piece
      const wire = c.length > 64 * 1024 ? Buffer.concat([Buffer.from([0x44, 0, 0, 0, 0]), c]) : c;
      if (wire !== c) wire.writeUInt32BE(c.length, 1);
      parts.push(wire, r.digest ?? contentHash().update(wire).digest());
      total += c.length;
    }
  }
  parts.push(frameHeader({ t: 'e', n: records.length, s: total, h: hh.digest('hex'), ...end }).framed);
  return Buffer.concat(parts);
}

async function expectCorrupt(p: Promise<unknown>, msg: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof FerryError, `expected FerryError, got ${String(err)}`);
    assert.equal(err.code, 'FERRY_E_TRANSFER_CORRUPT');
    assert.equal(err.phase, 'transfer');
    assert.match(err.message, msg);
    return true;
  });
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch {
    return false;
  }
}

type Snap = Record<string, string>;

/** Everything under dir, one descriptive line per entry (type, mode, owner, content hash or target). */
async function snapshot(dir: string, rel = '', out: Snap = {}): Promise<Snap> {
  for (const name of (await readdir(join(dir, rel))).sort()) {
    const r = rel === '' ? name : `${rel}/${name}`;
    const abs = join(dir, r);
    const st = await lstat(abs);
    const mode = (st.mode & 0o7777).toString(8);
    const owner = `${st.uid}:${st.gid}`;
    if (st.isDirectory()) {
      out[r] = `d ${mode} ${owner}`;
      await snapshot(dir, r, out);
    } else if (st.isFile()) {
      out[r] = `f ${mode} ${owner} ${st.size} ${createHash('sha256')
        .update(await readFile(abs))
        .digest('hex')}`;
    } else if (st.isSymbolicLink()) {
      out[r] = `l ${owner} -> ${await readlink(abs)}`;
    } else {
      out[r] = `${st.isFIFO() ? 'p' : st.isSocket() ? 's' : 'dev'} ${mode} ${owner}`;
    }
  }
  return out;
}

function without(s: Snap, drop: (p: string) => boolean = () => false): Snap {
  return Object.fromEntries(Object.entries(s).filter(([p]) => !drop(p)));
}

const BIG = 20 * 1024 * 1024;

/** A bundle-like tree and an image directory under base/src. */
async function fixture(base: string, opts: { big?: boolean; specials?: boolean } = {}): Promise<string> {
  const src = join(base, 'src');
  const b = join(src, 'bundle');
  const r = join(b, 'rootfs');
  for (const d of ['bin', 'etc', 'usr/lib/deep/nested/dir', 'usr/bin', 'tmp', 'emptydir', 'ro', 'proc/sys']) {
    await mkdir(join(r, d), { recursive: true });
  }
  await mkdir(join(src, 'images'), { recursive: true });
  await writeFile(join(b, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', root: { path: 'rootfs' } }));
  await writeFile(join(r, 'bin/sh'), randomBytes(70_000));
  await chmod(join(r, 'bin/sh'), 0o755);
  await writeFile(join(r, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  await chmod(join(r, 'etc/passwd'), 0o644);
  await writeFile(join(r, 'etc/shadow'), 'root:*:19000::::::\n');
  await chmod(join(r, 'etc/shadow'), 0o640);
  await writeFile(join(r, 'usr/lib/deep/nested/dir/file.txt'), 'deep\n');
  await writeFile(join(r, 'usr/bin/suid'), 'suid');
  await chmod(join(r, 'usr/bin/suid'), 0o4755);
  await writeFile(join(r, 'empty'), '');
  await writeFile(join(r, 'ro/file'), 'read only');
  await chmod(join(r, 'ro/file'), 0o444);
  await chmod(join(r, 'ro'), 0o555);
  await chmod(join(r, 'tmp'), 0o1777);
  await writeFile(join(r, 'proc/sys/x'), 'excluded');
  await symlink('sh', join(r, 'bin/sh2'));
  await symlink('/usr/share/zoneinfo/UTC', join(r, 'etc/localtime'));
  await symlink('does/not/exist', join(r, 'dangling'));
  await symlink('usr/lib', join(r, 'lib'));
  await symlink('/etc', join(r, 'etc-host')); // must be sent as a link, not followed
  if (isRoot) await chown(join(r, 'etc/shadow'), 1234, 5678);
  if (opts.specials) {
    execFileSync('mkfifo', [join(r, 'fifo')]);
    const srv = createNetServer();
    await new Promise<void>((res) => srv.listen(join(r, 'sock.tmp'), res));
    await link(join(r, 'sock.tmp'), join(r, 'sock')); // closing unlinks the name it was bound to, not this one
    await new Promise((res) => srv.close(res));
  }
  await writeFile(join(src, 'images/inventory.img'), randomBytes(300));
  await writeFile(join(src, 'images/pages-1.img'), randomBytes(opts.big ? BIG : 5000));
  await chmod(join(src, 'images/pages-1.img'), 0o600);
  return src;
}

function sourcesOf(src: string): StreamEntrySource[] {
  return [
    { root: join(src, 'bundle'), prefix: 'bundle' },
    { root: join(src, 'images'), prefix: 'images' },
  ];
}

async function assertSameTree(src: string, dest: string, drop: (p: string) => boolean = () => false) {
  for (const sub of ['bundle', 'images']) {
    assert.deepEqual(
      await snapshot(join(dest, sub)),
      without(await snapshot(join(src, sub)), drop),
      `tree ${sub} differs`,
    );
  }
}

test('round trip: nested dirs, empty files, a 20 MiB file, modes, owners, symlinks, exclude', async (t) => {
  const base = await tmp(t);
  const src = await fixture(base, { big: true, specials: true });
  const dest = join(base, 'dest');
  const seen: Array<[string, string]> = [];
  const exclude = (rel: string, prefix: string) => {
    seen.push([prefix, rel]);
    return prefix === 'bundle' && rel === 'rootfs/proc';
  };
  let sent = 0;
  let received = 0;
  const enc = encodeTree(sourcesOf(src), {
    exclude,
    onBytes: (n) => {
      sent += n;
    },
  });
  const stats = await decodeTree(enc, dest, {
    onBytes: (n) => {
      received += n;
    },
  });

  await assertSameTree(src, dest, (p) => p === 'rootfs/proc' || p.startsWith('rootfs/proc/'));
  assert.equal(await exists(join(dest, 'bundle/rootfs/proc')), false);
  assert.ok((await lstat(join(dest, 'bundle/rootfs/fifo'))).isFIFO());
  assert.ok((await lstat(join(dest, 'bundle/rootfs/sock'))).isSocket());
  assert.equal(await readlink(join(dest, 'bundle/rootfs/etc-host')), '/etc');
  assert.equal(
    (await lstat(join(dest, 'bundle'))).mode & 0o7777,
    (await lstat(join(src, 'bundle'))).mode & 0o7777,
  );
  if (isRoot) assert.equal((await lstat(join(dest, 'bundle/rootfs/etc/shadow'))).uid, 1234);

  assert.ok(seen.some(([p, r]) => p === 'images' && r === 'pages-1.img'));
  assert.ok(!seen.some(([, r]) => r.startsWith('rootfs/proc/')), 'excluded subtree is not walked');
  // dirs: bundle, rootfs, bin, etc, usr, usr/lib, deep, nested, dir, usr/bin, tmp, emptydir, ro, images
  assert.deepEqual(stats, {
    dirs: 14,
    files: 10,
    symlinks: 5,
    nodes: 2,
    bytes: sent,
  });
  assert.equal(received, sent);
});

test('1-byte chunks and random chunk boundaries decode the same tree', async (t) => {
  const base = await tmp(t);
  const small = await fixture(join(base, 'small'));
  const encoded = await collect(encodeTree(sourcesOf(small)));
  await decodeTree(rechunk(encoded, 1), join(base, 'one'));
  await assertSameTree(small, join(base, 'one'));
  await decodeTree(rechunk(encoded, 'random', 7), join(base, 'tiny'));
  await assertSameTree(small, join(base, 'tiny'));

  const big = await fixture(join(base, 'big'), { big: true });
  const encodedBig = await collect(encodeTree(sourcesOf(big)));
  await decodeTree(rechunk(encodedBig, 'random'), join(base, 'random'));
  await assertSameTree(big, join(base, 'random'));
});

test('prefixes: top level, nested prefix, single file source', async (t) => {
  const base = await tmp(t);
  const src = await fixture(base);
  const dest = join(base, 'dest');
  const stats = await decodeTree(
    encodeTree([
      { root: join(src, 'images'), prefix: '' },
      { root: join(src, 'bundle/rootfs/etc'), prefix: 'a/b/etc' },
      { root: join(src, 'bundle/config.json'), prefix: 'a/config.json' },
    ]),
    dest,
  );
  assert.deepEqual(
    await readFile(join(dest, 'pages-1.img')),
    await readFile(join(src, 'images/pages-1.img')),
  );
  assert.equal(await readFile(join(dest, 'a/b/etc/passwd'), 'utf8'), 'root:x:0:0:root:/root:/bin/sh\n');
  assert.deepEqual(
    await readFile(join(dest, 'a/config.json')),
    await readFile(join(src, 'bundle/config.json')),
  );
  assert.deepEqual(stats, { dirs: 3, files: 5, symlinks: 1, bytes: stats.bytes });
});

test('existing directories are merged, existing files are not overwritten', async (t) => {
  const base = await tmp(t);
  const src = await fixture(base);
  const dest = join(base, 'dest');
  await mkdir(join(dest, 'images'), { recursive: true });
  await decodeTree(encodeTree([{ root: join(src, 'images'), prefix: 'images' }]), dest);
  assert.deepEqual(await snapshot(join(dest, 'images')), await snapshot(join(src, 'images')));
  await assert.rejects(decodeTree(encodeTree([{ root: join(src, 'images'), prefix: 'images' }]), dest), {
    code: 'FERRY_E_TRANSFER_FAILED',
    message: /already exists/,
  });
});

test('a file the receiver wrote ahead and named replaceable is replaced by the stream; any other is refused', async (t) => {
  const base = await tmp(t);
  const src = join(base, 'src');
  await mkdir(src);
  await writeFile(join(src, 'descriptors.json'), '["/dev/null"]');
  await writeFile(join(src, 'inventory.img'), 'x');
  const dest = join(base, 'dest');
  await mkdir(dest);
  await writeFile(join(dest, 'descriptors.json'), '["predicted"]');
  const replaceable = new Set(['descriptors.json']);
  await decodeTree(encodeTree([{ root: src, prefix: '' }]), dest, { replaceable });
  assert.equal(await readFile(join(dest, 'descriptors.json'), 'utf8'), '["/dev/null"]');
  assert.deepEqual(
    (await readdir(dest)).sort(),
    ['descriptors.json', 'inventory.img'],
    'no temporary file left',
  );
  await rm(join(dest, 'descriptors.json'));
  await assert.rejects(decodeTree(encodeTree([{ root: src, prefix: '' }]), dest, { replaceable }), {
    message: /inventory\.img.* already exists/,
  });
});

test('over HTTP: request body in, error answer still delivered on corruption', async (t) => {
  const base = await tmp(t);
  const src = await fixture(base, { big: true });
  let n = 0;
  const server = createServer((req, res) => {
    const dest = join(base, `dest${n++}`);
    decodeTree(req, dest).then(
      (stats) => res.end(JSON.stringify(stats)),
      (err: FerryError) => {
        res.writeHead(err.status, { 'content-type': 'application/json', connection: 'close' });
        res.end(JSON.stringify(err.toJSON()));
        req.resume(); // discard the rest of the body
      },
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const port = (server.address() as AddressInfo).port;

  const put = (body: Readable): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method: 'PUT', path: '/images' }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on('error', reject);
      pipeline(body, req).catch(() => {}); // an early answer may cut the upload short
    });

  const ok = await put(encodeTree(sourcesOf(src)));
  assert.equal(ok.status, 200, ok.body);
  assert.equal(JSON.parse(ok.body).files, 11); // nothing excluded here
  await assertSameTree(src, join(base, 'dest0'));

  const encoded = await collect(encodeTree(sourcesOf(src)));
  const at = encoded.indexOf('root:x:0:0');
  assert.ok(at > 0);
  encoded[at] = encoded[at]! ^ 1;
  const bad = await put(Readable.from(rechunk(encoded, 65536)));
  assert.equal(bad.status, 400);
  assert.equal(JSON.parse(bad.body).code, 'FERRY_E_TRANSFER_CORRUPT');
  assert.match(JSON.parse(bad.body).message, /checksum mismatch for file "bundle\/rootfs\/etc\/passwd"/);
});

test('a failed decode leaves a Readable input undestroyed', async (t) => {
  const base = await tmp(t);
  const input = Readable.from([Buffer.from('NOTFERRY'), Buffer.alloc(100)], { objectMode: false });
  await expectCorrupt(decodeTree(input, join(base, 'dest')), /bad magic "NOTFERRY"/);
  assert.equal(input.destroyed, false);
});

test('corruption: flipped content byte, flipped digest, flipped header byte', async (t) => {
  const base = await tmp(t);
  const src = await fixture(base);
  const encoded = await collect(encodeTree(sourcesOf(src)));
  let i = 0;
  const dest = () => join(base, `dest${i++}`);

  const content = Buffer.from(encoded);
  const at = content.indexOf('root:x:0:0');
  content[at + 3] = content[at + 3]! ^ 0x80;
  await expectCorrupt(
    decodeTree(once(content), dest()),
    /checksum mismatch for file "bundle\/rootfs\/etc\/passwd"/,
  );

  const digest = Buffer.from(encoded);
  const d = digest.indexOf('root:x:0:0:root:/root:/bin/sh\n') + 'root:x:0:0:root:/root:/bin/sh\n'.length;
  digest[d + 3] = digest[d + 3]! ^ 1;
  await expectCorrupt(
    decodeTree(once(digest), dest()),
    /checksum mismatch for file "bundle\/rootfs\/etc\/passwd"/,
  );

  const header = Buffer.from(encoded);
  const hp = header.indexOf('"p":"bundle/rootfs/etc/passwd"');
  header[hp + 26] = 'x'.charCodeAt(0); // ...etc/paxswd: still a valid header, caught by the header checksum
  await expectCorrupt(decodeTree(once(header), dest()), /header checksum mismatch/);

  const size = Buffer.from(encoded);
  const sp = size.indexOf('"s":30,');
  assert.ok(sp > 0);
  size[sp + 5] = '1'.charCodeAt(0); // size 31: the stream desynchronises
  await expectCorrupt(
    decodeTree(once(size), dest()),
    /checksum mismatch|header length|not valid JSON|truncated/,
  );
});

test('corruption: truncation at every offset', async (t) => {
  const base = await tmp(t);
  const src = join(base, 'src');
  await mkdir(join(src, 'd'), { recursive: true });
  await writeFile(join(src, 'd/f'), 'hello');
  await writeFile(join(src, 'e'), '');
  await symlink('d/f', join(src, 'l'));
  const encoded = await collect(encodeTree([{ root: src, prefix: 'x' }]));
  for (let cut = 0; cut < encoded.length; cut++) {
    await expectCorrupt(decodeTree(once(encoded.subarray(0, cut)), join(base, `t${cut}`)), /truncated/);
  }
  const full = await decodeTree(once(encoded), join(base, 'full'));
  assert.deepEqual(full, { dirs: 2, files: 2, symlinks: 1, bytes: 5 });
});

test('corruption: bad magic, empty input, trailing garbage', async (t) => {
  const base = await tmp(t);
  const good = craft([{ h: { t: 'f', p: 'a', m: 0o644, s: 2 }, content: Buffer.from('hi') }]);
  await expectCorrupt(
    decodeTree(once(Buffer.concat([Buffer.from('FERRYIS9'), good.subarray(8)])), join(base, 'm')),
    /bad magic "FERRYIS9"/,
  );
  await expectCorrupt(
    decodeTree(rechunk(Buffer.alloc(0), 1), join(base, 'e')),
    /truncated while reading the stream header/,
  );
  await expectCorrupt(
    decodeTree(once(Buffer.concat([good, Buffer.from([0])])), join(base, 'g')),
    /unexpected data after the end record/,
  );
  await expectCorrupt(
    decodeTree(rechunk(Buffer.concat([good, good]), 3), join(base, 'g2')),
    /unexpected data after the end record/,
  );
  assert.deepEqual(await decodeTree(once(good), join(base, 'ok')), {
    dirs: 0,
    files: 1,
    symlinks: 0,
    bytes: 2,
  });
});

test('corruption: end record mismatches', async (t) => {
  const base = await tmp(t);
  const recs: Rec[] = [
    { h: { t: 'd', p: 'd', m: 0o755 } },
    { h: { t: 'f', p: 'd/f', m: 0o644, s: 3 }, content: Buffer.from('abc') },
  ];
  await expectCorrupt(decodeTree(once(craft(recs, { n: 3 })), join(base, 'n')), /announces 3 entries but 2/);
  await expectCorrupt(
    decodeTree(once(craft(recs, { s: 4 })), join(base, 's')),
    /announces 4 content bytes but 3/,
  );
  await expectCorrupt(
    decodeTree(once(craft(recs, { h: '00' })), join(base, 'h')),
    /header checksum mismatch/,
  );
  await expectCorrupt(
    decodeTree(once(craft([{ h: { t: 'x', p: 'a', m: 0 } }])), join(base, 't')),
    /unknown entry type "x"/,
  );
  await expectCorrupt(
    decodeTree(once(craft([{ h: { t: 'f', p: 'a', m: 0o644, s: -1 } }])), join(base, 'neg')),
    /invalid file size -1/,
  );
  await expectCorrupt(
    decodeTree(once(craft([{ h: { t: 'd', p: 'a', m: 0o10000 } }])), join(base, 'mode')),
    /invalid mode/,
  );
});

test('unsafe paths are refused and nothing is written outside destRoot', async (t) => {
  const base = await tmp(t);
  const cases: Array<[string, RegExp]> = [
    ['../x', /unsafe path "\.\.\/x": path has a '\.\.' component/],
    ['a/../../x', /'\.\.' component/],
    [join(base, 'abs'), /path is absolute/],
    ['a//x', /not normalised/],
    ['./x', /not normalised/],
    ['a/', /not normalised/],
    ['', /path is empty/],
    ['a\0b', /NUL/],
  ];
  let i = 0;
  for (const [p, msg] of cases) {
    const dest = join(base, `case${i++}`, 'dest');
    const stream = craft([
      { h: { t: 'd', p: 'a', m: 0o755 } },
      { h: { t: 'f', p, m: 0o644, s: 3 }, content: Buffer.from('pwn') },
    ]);
    await expectCorrupt(decodeTree(once(stream), dest), msg);
  }
  assert.equal(await exists(join(base, 'x')), false);
  assert.equal(await exists(join(base, 'case0', 'x')), false);
  assert.equal(await exists(join(base, 'abs')), false);
  for (const p of ['a', 'a/b/c', 'a b/.c', '..a', 'a..']) assert.equal(unsafePathReason(p), null, p);
  await expectCorrupt(
    decodeTree(once(craft([{ h: { t: 'd', m: 0o755 } }])), join(base, 'nop')),
    /path is not a string/,
  );
});

test('writing through a symlink created by the stream is refused', async (t) => {
  const base = await tmp(t);
  const outside = join(base, 'outside');
  await mkdir(outside);
  const attempts: Array<[Rec[], RegExp]> = [
    [
      [
        { h: { t: 'l', p: 'a', m: 0o777, l: outside } },
        { h: { t: 'f', p: 'a/passwd', m: 0o644, s: 3 }, content: Buffer.from('pwn') },
      ],
      /refusing to write "a\/passwd": "a" is a symlink/,
    ],
    [
      [
        { h: { t: 'l', p: 'a', m: 0o777, l: '..' } },
        { h: { t: 'd', p: 'a/outside', m: 0o755 } },
        { h: { t: 'f', p: 'a/outside/passwd', m: 0o644, s: 3 }, content: Buffer.from('pwn') },
      ],
      /"a" is a symlink/,
    ],
    [
      [
        { h: { t: 'd', p: 'd', m: 0o755 } },
        { h: { t: 'l', p: 'd/x', m: 0o777, l: join(outside, 'passwd') } },
        { h: { t: 'f', p: 'd/x', m: 0o644, s: 3 }, content: Buffer.from('pwn') },
      ],
      /duplicate entry "d\/x"/,
    ],
    [
      [
        { h: { t: 'l', p: 'a', m: 0o777, l: outside } },
        { h: { t: 'd', p: 'a', m: 0o755 } },
        { h: { t: 'f', p: 'a/passwd', m: 0o644, s: 3 }, content: Buffer.from('pwn') },
      ],
      /directory "a" clashes with an earlier entry/,
    ],
    [
      [
        { h: { t: 'f', p: 'a', m: 0o644, s: 1 }, content: Buffer.from('x') },
        { h: { t: 'f', p: 'a/passwd', m: 0o644, s: 3 }, content: Buffer.from('pwn') },
      ],
      /"a" is not a directory/,
    ],
    [
      [{ h: { t: 'f', p: 'nodir/passwd', m: 0o644, s: 3 }, content: Buffer.from('pwn') }],
      /"nodir\/passwd" arrived before its parent directory "nodir"/,
    ],
  ];
  let i = 0;
  for (const [recs, msg] of attempts) {
    await expectCorrupt(decodeTree(rechunk(craft(recs), 5), join(base, `dest${i++}`)), msg);
    assert.deepEqual(await readdir(outside), [], 'nothing was written outside');
    assert.equal(await exists(join(base, 'passwd')), false);
  }
});

test('a symlink pre-existing in destRoot is not written through either', async (t) => {
  const base = await tmp(t);
  const outside = join(base, 'outside');
  const dest = join(base, 'dest');
  await mkdir(outside);
  await mkdir(dest);
  await symlink(outside, join(dest, 'images'));
  await assert.rejects(decodeTree(once(craft([{ h: { t: 'd', p: 'images', m: 0o755 } }])), dest), {
    code: 'FERRY_E_TRANSFER_FAILED',
    message: /"images" already exists in the destination and is not a directory/,
  });
  await expectCorrupt(
    decodeTree(
      once(craft([{ h: { t: 'f', p: 'images/pages.img', m: 0o644, s: 3 }, content: Buffer.from('pwn') }])),
      dest,
    ),
    /"images" is a symlink/,
  );
  assert.deepEqual(await readdir(outside), []);
});

test('header size limit', async (t) => {
  const base = await tmp(t);
  const huge = Buffer.alloc(12);
  huge.write(STREAM_MAGIC);
  huge.writeUInt32BE(MAX_HEADER_BYTES + 1, 8);
  await expectCorrupt(decodeTree(once(huge), join(base, 'a')), /header length 65537 is out of range/);
  const zero = Buffer.alloc(12);
  zero.write(STREAM_MAGIC);
  await expectCorrupt(decodeTree(once(zero), join(base, 'z')), /header length 0 is out of range/);

  // exactly the limit is fine
  const h: Record<string, unknown> = { t: 'd', p: 'pad', m: 0o755, pad: '' };
  h['pad'] = 'y'.repeat(MAX_HEADER_BYTES - Buffer.byteLength(JSON.stringify(h)));
  assert.equal(Buffer.byteLength(JSON.stringify(h)), MAX_HEADER_BYTES);
  assert.equal((await decodeTree(rechunk(craft([{ h }]), 1000), join(base, 'b'))).dirs, 1);
});

test('maxBytes is enforced before writing, as FERRY_E_INPUT_TOO_LARGE (the stream is not damaged)', async (t) => {
  const expectTooLarge = (p: Promise<unknown>, re: RegExp) =>
    assert.rejects(p, (err: FerryError) => {
      assert.equal(err.code, 'FERRY_E_INPUT_TOO_LARGE', err.message);
      assert.match(err.message, re);
      return true;
    });
  const base = await tmp(t);
  const stream = craft([
    { h: { t: 'f', p: 'big', m: 0o644, s: 1_000_000 }, content: Buffer.alloc(1_000_000) },
  ]);
  await expectTooLarge(
    decodeTree(rechunk(stream, 4096), join(base, 'a'), { maxBytes: 500_000 }),
    /file "big" \(1000000 bytes\) would exceed the limit of 500000 bytes/,
  );
  assert.equal(await exists(join(base, 'a/big')), false);
  await expectTooLarge(
    decodeTree(rechunk(stream, 4096), join(base, 'b'), { maxBytes: 100 }),
    /exceeds the limit of 100 bytes|would exceed/,
  );
  assert.equal(
    (await decodeTree(once(stream), join(base, 'c'), { maxBytes: stream.length })).bytes,
    1_000_000,
  );
});

test('encoder errors and backpressure', async (t) => {
  const base = await tmp(t);
  await assert.rejects(collect(encodeTree([{ root: join(base, 'missing'), prefix: 'x' }])), {
    code: 'FERRY_E_TRANSFER_FAILED',
    message: /cannot read source/,
  });
  await assert.rejects(collect(encodeTree([{ root: base, prefix: '../x' }])), { message: /invalid prefix/ });

  const src = join(base, 'src');
  await mkdir(src);
  await writeFile(join(src, 'big'), randomBytes(BIG));
  let read = 0;
  const enc = encodeTree([{ root: src, prefix: '' }], {
    onBytes: (n) => {
      read += n;
    },
  });
  enc.pause();
  enc.once('readable', () => {});
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(read < BIG / 2, `read ahead ${read} bytes without a consumer`);
  enc.destroy();
  await new Promise((r) => setTimeout(r, 20));
});

test('zero pages are skipped on the wire and come back as zeroes', async (t) => {
  const base = await tmp(t);
  const src = join(base, 'src');
  await mkdir(src);
  const P = 4096;
  // data, 3 zero pages, data, zero pages across a 1 MiB read boundary, a partial zero tail (sent as data)
  const file = Buffer.concat([
    randomBytes(P),
    Buffer.alloc(3 * P),
    randomBytes(P + 17).subarray(0, P),
    Buffer.alloc(2 * 1024 * 1024),
    randomBytes(3 * P),
    Buffer.alloc(100),
  ]);
  await writeFile(join(src, 'pages-1.img'), file);
  await writeFile(join(src, 'zeroes.img'), Buffer.alloc(3 * 1024 * 1024)); // all zero: a hole end to end
  let skipped = -1;
  const encoded = await collect(
    encodeTree([{ root: src, prefix: '' }], {
      onZeroes: (n) => {
        skipped = n;
      },
    }),
  );
  const zeroPages = 3 * P + 2 * 1024 * 1024 + 3 * 1024 * 1024;
  assert.equal(skipped, zeroPages);
  assert.ok(
    encoded.length < file.length + 3 * 1024 * 1024 - zeroPages + 4096,
    `${encoded.length} bytes sent`,
  );
  for (const [i, chunk] of [1, 7, 65536].entries()) {
    const dest = join(base, `d${i}`);
    const stats = await decodeTree(rechunk(encoded, chunk), dest);
    assert.equal(stats.zeroBytes, zeroPages);
    assert.equal(stats.bytes, file.length + 3 * 1024 * 1024);
    assert.ok((await readFile(join(dest, 'pages-1.img'))).equals(file));
    assert.ok((await readFile(join(dest, 'zeroes.img'))).equals(Buffer.alloc(3 * 1024 * 1024)));
  }
  // a zero piece that claims more than the file holds is refused
  const bad = craft([{ h: { t: 'f', p: 'f', m: 0o644, s: 70_000 } }]);
  const forged = Buffer.concat([
    bad.subarray(0, bad.indexOf('}') + 1),
    Buffer.from([0x5a, 0, 2, 0, 0]),
    bad.subarray(bad.indexOf('}') + 1),
  ]);
  await expectCorrupt(decodeTree(once(forged), join(base, 'bad')), /bad piece/);
});

test('an update removes what changed or went, then brings what is new; never through a symlink, never unasked', async (t) => {
  const base = await tmp(t);
  const src = join(base, 'src');
  await mkdir(join(src, 'rootfs', 'd'), { recursive: true });
  await writeFile(join(src, 'rootfs', 'keep'), 'same');
  await writeFile(join(src, 'rootfs', 'edit'), 'before');
  await writeFile(join(src, 'rootfs', 'd', 'x'), 'x');
  const dest = join(base, 'dest');
  await decodeTree(encodeTree([{ root: src, prefix: '' }]), dest);
  const before = await snapshotTree(src);
  await writeFile(join(src, 'rootfs', 'edit'), 'after, longer');
  await rm(join(src, 'rootfs', 'd'), { recursive: true });
  await writeFile(join(src, 'rootfs', 'd'), 'a file where a directory was');
  await writeFile(join(src, 'rootfs', 'added'), 'new');
  const { removals, unchanged } = treeChanges(before, await snapshotTree(src));
  assert.deepEqual(removals.sort(), ['rootfs/d', 'rootfs/edit']);
  assert.ok(unchanged.has('rootfs/keep'));
  let sent = 0;
  const stats = await decodeTree(
    encodeTree([{ root: src, prefix: '' }], {
      removals,
      exclude: (rel) => unchanged.has(rel),
      onBytes: (n) => {
        sent += n;
      },
    }),
    dest,
    { allowRemove: true },
  );
  assert.equal(stats.removed, 2);
  assert.equal(
    sent,
    'after, longer'.length + 'a file where a directory was'.length + 3,
    'unchanged files stay home',
  );
  assert.deepEqual(await snapshot(dest), await snapshot(src));
  // without allowRemove a removal record is corruption
  await expectCorrupt(
    decodeTree(encodeTree([{ root: src, prefix: '' }], { removals: ['rootfs/keep'] }), join(base, 'fresh')),
    /unexpected removal/,
  );
  // a removal below a symlink is refused and removes nothing
  const outside = join(base, 'outside');
  await mkdir(outside);
  await writeFile(join(outside, 'victim'), 'v');
  await mkdir(join(base, 'empty-src'));
  await symlink(outside, join(dest, 'rootfs', 'link'));
  await expectCorrupt(
    decodeTree(
      encodeTree([{ root: join(base, 'empty-src'), prefix: 'rootfs' }], { removals: ['rootfs/link/victim'] }),
      dest,
      {
        allowRemove: true,
      },
    ).catch(async (err) => {
      assert.ok(await exists(join(outside, 'victim')), 'nothing outside the tree is touched');
      throw err;
    }),
    /refusing to remove .*link.* is not a directory/,
  );
});
