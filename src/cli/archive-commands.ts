// checkpoint, restore, inspect: a container into an archive file and back, and what a checkpoint holds.
//
// The CLI holds the file; the agents do the rest over the API (dump, archive, checks, restore, decoding). An archive
// is written to a hidden temporary file beside its name (mode 0600: it holds process memory), synced, checked against
// the SHA-256 and length the agent sent, renamed into place, and only then does the container stop (without
// --leave-running). On the agent's own host the agent writes that file, and reads an archive to restore, itself
// (archive-files.ts and host/archive-target.ts): the bytes skip TLS and this process, and the file's length is
// checked against what the agent wrote and synced.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ContainerInfo, InspectReport } from '../api/types.ts';
import { FerryError } from '../core/errors.ts';
import { checkName, isValidName } from '../core/names.ts';
import { table } from '../core/table.ts';
import { traceStep } from '../core/trace.ts';
import { stageFile, syncDir } from './archive-files.ts';
import { allocateAddress, withCluster } from './commands.ts';
import type { ClusterContext } from './context.ts';

interface Common {
  cluster?: string;
  json?: boolean;
}

function print(json: boolean | undefined, value: unknown, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${text()}\n`);
}

/** The host that runs a container: the one given (checked there) or the one the cluster knows. */
async function hostOf(ctx: ClusterContext, name: string, host?: string): Promise<ContainerInfo> {
  if (host) {
    ctx.host(host);
    return ctx.client(host).container(name);
  }
  return ctx.locate(name);
}

export async function checkpointCommand(
  name: string,
  o: Common & { host?: string; export: string; leaveRunning?: boolean; compress: string },
): Promise<void> {
  checkName(name);
  const file = resolve(o.export);
  const compress = o.compress === 'none' ? 'none' : 'zstd';
  const leaveRunning = o.leaveRunning === true;
  const dir = dirname(file);
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory())
    throw new FerryError('FERRY_E_INPUT_ARGS', `cannot write ${file}: ${dir} is not a directory`, {
      phase: 'input',
    });
  const existing = await stat(file).catch(() => undefined);
  if (existing && !existing.isFile())
    throw new FerryError('FERRY_E_INPUT_ARGS', `cannot write ${file}: it is not a regular file`, {
      phase: 'input',
    });
  await withCluster(o, async (ctx) => {
    const c = await hostOf(ctx, name, o.host);
    const client = ctx.client(c.host);
    const tmp = join(dir, `.${basename(file)}.${randomBytes(4).toString('hex')}.part`);
    // made before the checkpoint: a directory that cannot be written to fails with nothing touched
    const fh = await open(tmp, 'wx', 0o600).catch((err: Error) => {
      throw new FerryError('FERRY_E_ARCHIVE_WRITE', `cannot write ${file}: ${err.message}`, {
        phase: 'input',
      });
    });
    let id: string | undefined;
    let bytes = 0;
    try {
      await fh.chmod(0o600);
      // on the agent's own host the agent writes the file itself (no TLS, no second copy); it finds there a token
      // it issued, or it streams (another host, or an agent without it)
      const token = await client.checkpointToken().catch(() => undefined);
      if (token) await fh.write(token, 0);
      let t = performance.now();
      const started = await client.checkpoint(name, {
        leaveRunning,
        compress,
        ...(token ? { file: { path: tmp, token } } : {}),
      });
      id = started.id;
      traceStep('cli: checkpoint answered', t);
      t = performance.now();
      let got: string | undefined;
      if (started.written) {
        try {
          for await (const _ of started.body) {
            // the answer has no body, only the trailers at its end
          }
        } catch (err) {
          throw new FerryError('FERRY_E_ARCHIVE_WRITE', `writing ${file} failed: ${(err as Error).message}`, {
            cause: err,
          });
        }
        const why = started.writeError();
        if (why) throw new FerryError('FERRY_E_ARCHIVE_WRITE', `writing ${file} failed: ${why}`);
        await fh.close();
      } else {
        if (token) await fh.truncate(0);
        const hash = createHash('sha256');
        const count = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            hash.update(chunk);
            bytes += chunk.length;
            cb(null, chunk);
          },
        });
        // flush: fsync before the stream closes the file (only a closed stream ends the pipeline)
        await pipeline(started.body, count, fh.createWriteStream({ flush: true, start: 0 })).catch(
          (err: Error) => {
            throw new FerryError('FERRY_E_ARCHIVE_WRITE', `writing ${file} failed: ${err.message}`, {
              cause: err,
            });
          },
        );
        got = hash.digest('hex');
      }
      traceStep(
        started.written ? 'cli: archive written by the agent' : 'cli: archive received and written',
        t,
      );
      t = performance.now();
      const sent = started.trailer();
      if (started.written && sent) bytes = sent.bytes;
      if (!sent || (got !== undefined && (sent.sha256 !== got || sent.bytes !== bytes))) {
        throw new FerryError(
          'FERRY_E_ARCHIVE_WRITE',
          `the archive from ${c.host} did not arrive whole (${bytes} bytes${sent ? `, ${sent.bytes} sent` : ', cut short'})`,
        );
      }
      // The file holds all of it: every write succeeded and was synced (here, or by the agent and its zstd, whose
      // exit status covers each write), and its length is what was sent. A second pass that hashed the file again
      // would read the page cache just written, not the disk: it could not see more than these checks do.
      const { size } = await stat(tmp);
      if (size !== sent.bytes)
        throw new FerryError(
          'FERRY_E_ARCHIVE_WRITE',
          `${tmp} holds ${size} bytes, not the ${sent.bytes} written into it`,
        );
      traceStep('cli: length checked', t);
      t = performance.now();
      await rename(tmp, file);
      await syncDir(dir);
      traceStep('cli: rename', t);
    } catch (err) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true });
      if (id) await client.abortCheckpoint(id).catch(() => {});
      throw err;
    }
    let result: Awaited<ReturnType<typeof client.finishCheckpoint>>;
    try {
      const t = performance.now();
      result = await client.finishCheckpoint(id, !leaveRunning);
      traceStep('cli: finish', t);
    } catch (err) {
      // the container was not stopped (or not known to be): no archive claims a point it did not stop at
      await rm(file, { force: true });
      await client.abortCheckpoint(id).catch(() => {});
      throw err;
    }
    const out = { ok: true, name, host: c.host, file, bytes, compress, status: result.status };
    print(
      o.json,
      out,
      () =>
        `checkpointed ${name} on ${c.host} into ${file} (${mib(bytes)}, ${compress}); ${name} is ${result.status}`,
    );
  });
}

export async function restoreCommand(
  o: Common & { import: string; host?: string; name?: string; ip?: string },
): Promise<void> {
  const file = resolve(o.import);
  if (o.name) checkName(o.name);
  if (o.ip && !/^\d+\.\d+\.\d+\.\d+$/.test(o.ip))
    throw new FerryError('FERRY_E_INPUT_ARGS', `--ip ${o.ip} is not an IPv4 address`, { phase: 'input' });
  await readableFile(file);
  await withCluster(o, async (ctx) => {
    const { containers, unreachable } = await ctx.containers();
    const hostName = o.host ?? pickHost(ctx, containers, unreachable);
    ctx.host(hostName);
    const client = ctx.client(hostName);
    if (o.name) refuseName(containers, o.name);
    let t = performance.now();
    const staged = await stageFile(client, file);
    traceStep('cli: staged', t);
    t = performance.now();
    let ip: string | undefined;
    let name: string;
    try {
      name = o.name ?? staged.name;
      refuseName(containers, name);
      if (staged.net !== 'none') {
        ip = o.ip ?? staged.ip;
        const owner = containers.find((c) => c.ip === ip);
        if (owner && o.ip)
          throw new FerryError('FERRY_E_INPUT_ARGS', `address ${ip} is taken by ${owner.name}`, {
            phase: 'input',
          });
        // the address it had is someone else's now (the original, left running): a free one instead
        if (owner || !ip) ip = allocateAddress(ctx, containers);
      }
    } catch (err) {
      await client.discardStaged(staged.id).catch(() => {});
      throw err;
    }
    const result = await client.restoreStaged(staged.id, {
      ...(name !== staged.name ? { name } : {}),
      ...(ip && ip !== staged.ip ? { ip } : {}),
    });
    traceStep('cli: restored', t);
    const info = result.container;
    print(o.json, { ok: true, ...result, from: staged.from, checkpointedAt: staged.checkpointedAt }, () =>
      [
        `restored ${info.name} on ${info.host}${info.pid ? ` (pid ${info.pid})` : ''}${info.ip ? ` at ${info.ip}` : ''} ` +
          `from ${basename(file)} (checkpointed on ${staged.from} at ${staged.checkpointedAt})`,
        ...(result.note ? [`note: ${result.note}`] : []),
      ].join('\n'),
    );
  });
}

export async function inspectCommand(
  target: string,
  o: Common & { host?: string; psTree?: boolean; files?: boolean; sockets?: boolean; mounts?: boolean },
): Promise<void> {
  const st = await stat(target).catch(() => undefined);
  if (!st && !isValidName(target))
    throw new FerryError('FERRY_E_INPUT_ARGS', `${target}: no such file, and not a container name`, {
      phase: 'input',
    });
  if (st && !st.isFile())
    throw new FerryError('FERRY_E_INPUT_ARGS', `${target} is not a regular file`, { phase: 'input' });
  const report = await withCluster(o, async (ctx) => {
    if (st) {
      const { containers, unreachable } = await ctx.containers();
      const host = o.host ?? pickHost(ctx, containers, unreachable);
      ctx.host(host);
      return ctx.client(host).inspectArchive(createReadStream(target));
    }
    const c = await hostOf(ctx, target, o.host);
    return ctx.client(c.host).inspectContainer(target);
  });
  print(o.json, report, () => inspectText(report, o));
}

/** The human view: a summary always, the sections asked for. */
export function inspectText(
  r: InspectReport,
  o: { psTree?: boolean; files?: boolean; sockets?: boolean; mounts?: boolean },
): string {
  const im = r.images;
  const lines: string[] = [];
  lines.push(`${r.source === 'archive' ? 'checkpoint of' : 'container'} ${r.name} (host ${r.host})`);
  if (r.checkpointedAt)
    lines.push(`  checkpointed  ${r.checkpointedAt}${r.leaveRunning ? ' (left running)' : ''}`);
  if (r.createdAt) lines.push(`  created       ${r.createdAt}`);
  if (r.versions)
    lines.push(
      `  versions      ferry ${r.versions.ferry}, CRIU ${r.versions.criu}, runc ${r.versions.runc}, kernel ${r.versions.kernel}`,
    );
  if (r.net)
    lines.push(
      `  network       ${r.net.mode}${r.net.ip ? ` ${r.net.ip}` : ''}${r.net.mac ? ` ${r.net.mac}` : ''}`,
    );
  lines.push(
    `  sizes         ${mib(r.sizes.total)} in all: images ${mib(r.sizes.images)} (pages ${mib(r.sizes.pages)})` +
      (r.source === 'archive' ? `, rootfs ${mib(r.sizes.rootfsDiff)}` : ''),
  );
  const memory = im.memory.reduce((n, m) => n + m.pagesDumped, 0);
  lines.push(
    `  processes     ${im.processes.length}, threads ${im.processes.reduce((n, p) => n + p.threads, 0)}, ` +
      `pages dumped ${memory}, open files ${im.files.length}, sockets ${im.sockets.length}, mounts ${im.mounts.length}`,
  );
  lines.push(
    `  namespaces    ${Object.entries(im.namespaces)
      .map(([k, v]) => `${k}:${v}`)
      .join(' ')}`,
  );
  lines.push(
    `  CRIU images   version ${im.criu.imageVersion}${im.criu.tcpClose ? ', TCP closed at dump' : ''}`,
  );
  if (o.psTree) {
    lines.push('', 'process tree:');
    const children = (pid: number) => im.processes.filter((p) => p.ppid === pid);
    const mem = new Map(im.memory.map((m) => [m.pid, m]));
    const walk = (pid: number, depth: number) => {
      for (const p of children(pid)) {
        const m = mem.get(p.pid);
        const bytes = m ? Object.values(m.bytes).reduce((a, b) => a + b, 0) : 0;
        lines.push(
          `${'  '.repeat(depth + 1)}${p.pid} ${p.command} [${p.state}] threads ${p.threads}` +
            (m ? `, mapped ${mib(bytes)} in ${m.mappings}, dumped ${m.pagesDumped} pages` : ''),
        );
        walk(p.pid, depth + 1);
      }
    };
    walk(0, 0);
  }
  if (o.files) {
    lines.push('', 'open files:');
    lines.push(
      table([
        ['PID', 'FD', 'TYPE', 'PATH'],
        ...im.files.map((f) => [String(f.pid), String(f.fd), f.type, f.path ?? '-']),
      ]),
    );
  }
  if (o.sockets) {
    lines.push('', 'sockets:');
    lines.push(
      table([
        ['PID', 'FD', 'PROTO', 'STATE', 'LOCAL', 'REMOTE', 'QUEUED'],
        ...im.sockets.map((s) => [
          String(s.pid),
          String(s.fd),
          `${s.protocol}/${s.family}`,
          s.state,
          s.local,
          s.remote ?? '-',
          s.queued ? `in ${s.queued.in}, out ${s.queued.out}` : '-',
        ]),
      ]),
    );
  }
  if (o.mounts) {
    lines.push('', 'mounts:');
    lines.push(
      table([
        ['ID', 'PARENT', 'MOUNTPOINT', 'TYPE', 'SOURCE'],
        ...im.mounts.map((m) => [String(m.id), String(m.parent), m.mountpoint, m.fstype, m.source]),
      ]),
    );
  }
  return lines.join('\n');
}

function refuseName(containers: ContainerInfo[], name: string): void {
  const found = containers.find((c) => c.name === name);
  if (found)
    throw new FerryError(
      'FERRY_E_CONTAINER_EXISTS',
      `a container named ${name} already exists (on ${found.host})`,
      {
        phase: 'input',
        hint: 'restore under another --name, or ferry rm it first',
      },
    );
}

/** Without --host: the reachable host with the fewest containers (as `ferry run` without a controller). */
function pickHost(ctx: ClusterContext, containers: ContainerInfo[], unreachable: { host: string }[]): string {
  const down = new Set(unreachable.map((u) => u.host));
  const candidates = ctx.file.hosts.filter((h) => !down.has(h.name));
  if (!candidates.length) throw new FerryError('FERRY_E_HOST_UNREACHABLE', 'no host is reachable');
  const count = (h: string) => containers.filter((c) => c.host === h).length;
  return candidates.sort((a, b) => count(a.name) - count(b.name))[0]!.name;
}

async function readableFile(file: string): Promise<void> {
  const st = await stat(file).catch(() => undefined);
  if (!st) throw new FerryError('FERRY_E_INPUT_ARGS', `${file}: no such file`, { phase: 'input' });
  if (!st.isFile())
    throw new FerryError('FERRY_E_INPUT_ARGS', `${file} is not a regular file`, { phase: 'input' });
  const fh = await open(file, 'r').catch((err: Error) => {
    throw new FerryError('FERRY_E_INPUT_ARGS', `cannot read ${file}: ${err.message}`, { phase: 'input' });
  });
  await fh.close();
}

function mib(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}
