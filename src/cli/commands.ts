// Container commands: run, ps, rm, migrate, hosts.
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { FerryError } from '../core/errors.ts';
import { checkName } from '../core/names.ts';
import type { ContainerInfo } from '../host/containers.ts';
import type { MigrationEvent, MigrationReport } from '../migration/types.ts';
import { encodeTree } from '../transport/image-stream/index.ts';
import { ClusterContext } from './context.ts';
import { MigrationRenderer, reportText, table } from './render.ts';

interface Common {
  cluster?: string;
  json?: boolean;
}

function print(json: boolean | undefined, value: unknown, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${text()}\n`);
}

export async function withCluster<T>(o: Common, fn: (ctx: ClusterContext) => Promise<T>): Promise<T> {
  const ctx = await ClusterContext.load(o.cluster);
  try {
    return await fn(ctx);
  } finally {
    ctx.close();
  }
}

export async function hostsCommand(o: Common): Promise<void> {
  await withCluster(o, async (ctx) => {
    const rows = await Promise.all(
      ctx.file.hosts.map(async (h) => {
        try {
          const [health, containers] = await Promise.all([
            ctx.client(h.name).request<{ version: string }>('GET', '/v1/health'),
            ctx.client(h.name).request<ContainerInfo[]>('GET', '/v1/containers'),
          ]);
          return {
            name: h.name,
            address: h.address,
            port: h.port,
            up: true,
            version: health.version,
            containers: containers.length,
          };
        } catch (err) {
          return { name: h.name, address: h.address, port: h.port, up: false, error: (err as Error).message };
        }
      }),
    );
    print(o.json, rows, () =>
      table([
        ['HOST', 'ADDRESS', 'AGENT', 'CONTAINERS'],
        ...rows.map((r) => [
          r.name,
          `${r.address}:${r.port}`,
          r.up ? `up (${r.version})` : 'DOWN',
          r.up ? String(r.containers) : '-',
        ]),
      ]),
    );
  });
}

export async function runCommand(
  command: string[],
  o: Common & { host?: string; name: string; bundle?: string; net?: string; ip?: string },
): Promise<void> {
  const name = checkName(o.name);
  if (o.bundle && command.length)
    throw new FerryError('FERRY_E_INPUT_ARGS', 'give either --bundle or a command, not both', {
      phase: 'input',
    });
  if (!o.bundle && !command.length)
    throw new FerryError('FERRY_E_INPUT_ARGS', 'give a command after -- or --bundle DIR', { phase: 'input' });
  await withCluster(o, async (ctx) => {
    let hostName = o.host;
    if (hostName) ctx.host(hostName);
    const { containers, unreachable } = await ctx.containers();
    if (containers.some((c) => c.name === name)) {
      const where = containers.find((c) => c.name === name)!.host;
      throw new FerryError(
        'FERRY_E_CONTAINER_EXISTS',
        `a container named ${name} already exists (on ${where})`,
        { phase: 'input' },
      );
    }
    if (!hostName && ctx.file.controller) {
      // the controller places it (seed rule: the host with the most remaining capacity)
      hostName = (await ctx.controller().request<{ host: string }>('POST', '/v1/place', { json: { name } }))
        .host;
    }
    if (!hostName) {
      // no controller: the reachable host with the fewest containers
      const down = new Set(unreachable.map((u) => u.host));
      const candidates = ctx.file.hosts.filter((h) => !down.has(h.name));
      if (!candidates.length) throw new FerryError('FERRY_E_HOST_UNREACHABLE', 'no host is reachable');
      const count = (h: string) => containers.filter((c) => c.host === h).length;
      hostName = candidates.sort((a, b) => count(a.name) - count(b.name))[0]!.name;
    }
    const client = ctx.client(hostName);
    const net = o.net ?? 'own';
    let ip = o.ip;
    if (net !== 'none') {
      if (ip) {
        if (!/^\d+\.\d+\.\d+\.\d+$/.test(ip))
          throw new FerryError('FERRY_E_INPUT_ARGS', `--ip ${ip} is not an IPv4 address`, { phase: 'input' });
        const owner = containers.find((c) => c.ip === ip);
        if (owner)
          throw new FerryError('FERRY_E_INPUT_ARGS', `address ${ip} is taken by ${owner.name}`, {
            phase: 'input',
          });
      } else {
        ip = allocateAddress(ctx, containers);
      }
      if (unreachable.length) {
        process.stderr.write(
          `ferry: warning: ${unreachable.map((u) => u.host).join(', ')} unreachable; their addresses are not known\n`,
        );
      }
    }
    let upload = false;
    if (o.bundle) {
      const dir = resolve(o.bundle);
      const st = await stat(`${dir}/config.json`).catch(() => undefined);
      if (!st?.isFile())
        throw new FerryError('FERRY_E_BUNDLE_INVALID', `${dir} is not an OCI bundle (no config.json)`, {
          phase: 'input',
        });
      await client.request('PUT', `/v1/uploads/${name}`, {
        body: encodeTree([{ root: dir, prefix: '' }]),
        timeoutMs: 120_000,
      });
      upload = true;
    }
    const info = await client.request<ContainerInfo>('POST', '/v1/containers', {
      json: {
        name,
        ...(command.length ? { command } : {}),
        ...(upload ? { upload: true } : {}),
        net,
        ...(ip && net !== 'none' ? { ip } : {}),
      },
      timeoutMs: 120_000,
    });
    print(o.json, info, () => `${info.name} running on ${info.host}${info.pid ? ` (pid ${info.pid})` : ''}`);
  });
}

/** The first free LAN address for a container (.50-.249, skipping the testbed's client at .100). */
function allocateAddress(ctx: ClusterContext, containers: ContainerInfo[]): string {
  const lan = ctx.file.lan;
  if (!lan)
    throw new FerryError('FERRY_E_INPUT_ARGS', 'this cluster has no LAN range: give --ip', {
      phase: 'input',
    });
  const used = new Set(containers.map((c) => c.ip).filter(Boolean));
  for (const h of ctx.file.hosts) used.add(h.address);
  if (ctx.file.client) used.add(ctx.file.client.address);
  for (let i = 50; i < 250; i++) {
    const a = `${lan.subnet}.${i}`;
    if (!used.has(a)) return a;
  }
  throw new FerryError('FERRY_E_INPUT_ARGS', 'no free address left on the LAN: give --ip', {
    phase: 'input',
  });
}

export async function psCommand(o: Common & { host?: string }): Promise<void> {
  await withCluster(o, async (ctx) => {
    const { containers, unreachable } = await ctx.containers(o.host);
    if (o.host && unreachable.length) throw unreachable[0]!.error;
    for (const u of unreachable)
      process.stderr.write(`ferry: warning: host ${u.host} unreachable: ${u.error.message}\n`);
    const rows = containers.map((c) => ({
      name: c.name,
      host: c.host,
      status: c.status,
      ...(c.ip ? { ip: c.ip } : {}),
      ...(c.pid ? { pid: c.pid } : {}),
    }));
    print(o.json, rows, () =>
      table([
        ['NAME', 'HOST', 'STATUS', 'IP', 'PID'],
        ...rows.map((r) => [r.name, r.host, r.status, r.ip ?? '-', String(r.pid ?? '-')]),
      ]),
    );
  });
}

export async function rmCommand(name: string, o: Common): Promise<void> {
  checkName(name);
  await withCluster(o, async (ctx) => {
    const c = await ctx.locate(name);
    await ctx.client(c.host).request('DELETE', `/v1/containers/${name}`, { timeoutMs: 60_000 });
    print(o.json, { ok: true, name, host: c.host }, () => `removed ${name} from ${c.host}`);
  });
}

export interface MigrateOptions {
  strategy: string;
  compress?: string;
  streams?: number;
  maxDowntime?: number;
  threshold?: number;
  maxRounds?: number;
}

/** Locates the container, checks the destination answers, runs the migration on the source agent. */
export async function runMigration(
  ctx: ClusterContext,
  name: string,
  to: string,
  o: MigrateOptions,
  onEvent: (e: MigrationEvent) => void,
): Promise<MigrationReport> {
  checkName(name);
  const dest = ctx.host(to);
  const c = await ctx.locate(name);
  if (c.host === to) {
    throw new FerryError('FERRY_E_HOST_SAME', `${name} already runs on ${to}`, {
      phase: 'input',
      hint: 'pick another --to host',
    });
  }
  if (c.status !== 'running') {
    throw new FerryError(
      'FERRY_E_CONTAINER_NOT_RUNNING',
      `container ${name} on ${c.host} is ${c.status}, not running`,
      {
        phase: 'input',
      },
    );
  }
  // the destination must answer before anything is touched
  await ctx.client(to).request('GET', '/v1/health');
  onEvent({ type: 'info', message: `migrating ${name}: ${c.host} -> ${to}` });
  let result: MigrationReport | undefined;
  await ctx.client(c.host).ndjson(
    'POST',
    `/v1/containers/${name}/migrate`,
    {
      to: dest,
      strategy: o.strategy,
      ...(o.maxDowntime !== undefined ? { maxDowntimeMs: o.maxDowntime } : {}),
      ...(o.threshold !== undefined ? { thresholdBytes: o.threshold } : {}),
      ...(o.maxRounds !== undefined ? { maxRounds: o.maxRounds } : {}),
      ...(o.compress !== undefined ? { compress: o.compress } : {}),
      ...(o.streams !== undefined ? { streams: o.streams } : {}),
    },
    (obj) => {
      const e = obj as MigrationEvent;
      if (e.type === 'result') result = e.report;
      else onEvent(e);
    },
  );
  if (!result)
    throw new FerryError(
      'FERRY_E_HOST_UNREACHABLE',
      `source host ${c.host} ended the migration stream without a result`,
    );
  return result;
}

export async function migrateCommand(
  name: string,
  o: Common & MigrateOptions & { to: string },
): Promise<void> {
  checkName(name);
  checkName(o.to, 'host');
  const renderer = o.json ? undefined : new MigrationRenderer();
  const report = await withCluster(o, (ctx) => runMigration(ctx, name, o.to, o, (e) => renderer?.event(e)));
  renderer?.finish();
  if (o.json) process.stdout.write(`${JSON.stringify(report)}\n`);
  else process.stdout.write(`${reportText(report)}\n`);
  if (!report.ok) {
    const e = report.error;
    if (!o.json)
      process.stderr.write(`ferry: ${e?.code ?? 'FERRY_E_INTERNAL'}: ${e?.message ?? 'migration failed'}\n`);
    process.exit(1);
  }
}
