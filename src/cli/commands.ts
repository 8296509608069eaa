// Container commands: run, ps, rm, hosts; and runMigration, a migration through the source agent (ferry migrate's
// own flags and checks are in migrate-command.ts).
import type { ContainerInfo, MigrationEvent, MigrationOptions, MigrationReport } from '../api/types.ts';
import { ipv4ToInt, lanAddressProblem } from '../core/addresses.ts';
import { FerryError } from '../core/errors.ts';
import { checkName } from '../core/names.ts';
import { table } from '../core/table.ts';
import { ClusterContext } from './context.ts';

/** The options every cluster command reads: the program's --cluster, and its own --json. */
export interface Common {
  cluster?: string;
  json?: boolean;
}

function print(json: boolean | undefined, value: unknown, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${text()}\n`);
}

export async function withCluster<T>(o: Common, fn: (ctx: ClusterContext) => Promise<T>): Promise<T> {
  const ctx = await ClusterContext.load(o.cluster);
  announceCluster(ctx);
  try {
    return await fn(ctx);
  } finally {
    ctx.close();
  }
}

/**
 * Says on stderr which cluster a command acts on, unless --cluster named it: the default cluster or
 * $FERRY_CLUSTER may not be the one the user has in mind. (stderr: stdout stays the command's output, --json too.)
 */
export function announceCluster(ctx: ClusterContext): void {
  const c = ctx.chosen;
  if (!c || c.from === '--cluster') return;
  process.stderr.write(`cluster: ${ctx.file.name} (${c.path}, from ${c.from})\n`);
}

export async function hostsCommand(o: Common): Promise<void> {
  await withCluster(o, async (ctx) => {
    const rows = await Promise.all(
      ctx.file.hosts.map(async (h) => {
        try {
          const [health, containers] = await Promise.all([
            ctx.client(h.name).health(),
            ctx.client(h.name).containers(),
          ]);
          return {
            name: h.name,
            address: h.address,
            port: h.port,
            up: true,
            version: health.version,
            containers: containers.length,
            certificateExpires: health.certificateExpires,
          };
        } catch (err) {
          return { name: h.name, address: h.address, port: h.port, up: false, error: (err as Error).message };
        }
      }),
    );
    print(o.json, rows, () =>
      table([
        ['HOST', 'ADDRESS', 'AGENT', 'CONTAINERS', 'CERTIFICATE'],
        ...rows.map((r) => [
          r.name,
          `${r.address}:${r.port}`,
          r.up ? `up (${r.version})` : 'DOWN',
          r.up ? String(r.containers) : '-',
          r.up && r.certificateExpires ? expiresIn(r.certificateExpires) : '-',
        ]),
      ]),
    );
  });
}

/** `2027-03-01 (in 90 days)`, or `EXPIRED 2026-11-30`: what an operator needs to plan a rotation. */
export function expiresIn(iso: string, now: number = Date.now()): string {
  const days = Math.floor((Date.parse(iso) - now) / 86_400_000);
  const date = iso.slice(0, 10);
  return days < 0 ? `EXPIRED ${date}` : `${date} (in ${days} day${days === 1 ? '' : 's'})`;
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
  if (o.ip !== undefined && o.net === 'none')
    throw new FerryError('FERRY_E_INPUT_ARGS', '--ip needs --net own or --net host', { phase: 'input' });
  if (o.ip !== undefined && ipv4ToInt(o.ip) === undefined)
    throw new FerryError('FERRY_E_INPUT_ARGS', `--ip ${o.ip} is not an IPv4 address`, { phase: 'input' });
  await withCluster(o, async (ctx) => {
    let hostName = o.host;
    if (hostName) ctx.host(hostName);
    // before anything is asked of an agent
    if (o.ip !== undefined) checkAddress(ctx, o.ip);
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
      hostName = await ctx.controller().place({ name });
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
    // commander offered only the modes; the agent validates the body anyway
    const net = (o.net ?? 'own') as ContainerInfo['net'];
    let ip = o.ip;
    if (net !== 'none') {
      if (ip) {
        const owner = containers.find((c) => c.ip === ip);
        if (owner)
          throw new FerryError(
            'FERRY_E_ADDRESS_TAKEN',
            `address ${ip} is taken by ${owner.name} (on ${owner.host})`,
            {
              phase: 'input',
              hint: 'pick another --ip, or leave it out for the first free one',
            },
          );
      } else {
        ip = allocateAddress(ctx, containers);
      }
      if (unreachable.length) {
        process.stderr.write(
          `ferry: warning: ${unreachable.map((u) => u.host).join(', ')} unreachable; their addresses are not known\n`,
        );
      }
    }
    if (o.bundle) await client.uploadBundle(name, o.bundle);
    const info = await client.create({
      name,
      ...(command.length ? { command } : {}),
      ...(o.bundle ? { upload: true } : {}),
      net,
      ...(ip && net !== 'none' ? { ip } : {}),
    });
    print(o.json, info, () => `${info.name} running on ${info.host}${info.pid ? ` (pid ${info.pid})` : ''}`);
  });
}

/** A container address the user gave: on the cluster's LAN, and not a host's, the client's or the controller's. */
function checkAddress(ctx: ClusterContext, ip: string): void {
  const lan = ctx.file.lan;
  const problem = lan
    ? lanAddressProblem(ip, { member: `${lan.subnet}.1`, prefixLen: lan.prefixLen })
    : undefined;
  if (problem) throw new FerryError('FERRY_E_INPUT_ARGS', `--ip ${problem}`, { phase: 'input' });
  const own = [
    ...ctx.file.hosts.map((h) => ({ what: `host ${h.name}`, address: h.address })),
    ...(ctx.file.client ? [{ what: "the testbed's client", address: ctx.file.client.address }] : []),
    ...(ctx.file.controller
      ? [{ what: 'the controller (the LAN gateway)', address: ctx.file.controller.address }]
      : []),
    ...(lan ? [{ what: 'the LAN gateway', address: `${lan.subnet}.1` }] : []),
  ].find((x) => x.address === ip);
  if (own)
    throw new FerryError('FERRY_E_ADDRESS_TAKEN', `--ip ${ip} is the address of ${own.what}`, {
      phase: 'input',
      hint: 'a container needs an address of its own; leave --ip out for the first free one',
    });
}

/** The first free LAN address for a container (.50-.249, skipping the testbed's client at .100). */
export function allocateAddress(ctx: ClusterContext, containers: ContainerInfo[]): string {
  const lan = ctx.file.lan;
  if (!lan)
    throw new FerryError('FERRY_E_INPUT_ARGS', 'this cluster has no LAN range: give --ip', {
      phase: 'input',
    });
  const used = new Set(containers.map((c) => c.ip).filter(Boolean));
  for (const h of ctx.file.hosts) used.add(h.address);
  if (ctx.file.client) used.add(ctx.file.client.address);
  if (ctx.file.controller) used.add(ctx.file.controller.address);
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
    await ctx.client(c.host).remove(name);
    print(o.json, { ok: true, name, host: c.host }, () => `removed ${name} from ${c.host}`);
  });
}

/** Locates the container, checks the destination answers, runs the migration on the source agent. */
export async function runMigration(
  ctx: ClusterContext,
  name: string,
  to: string,
  o: MigrationOptions,
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
  if (c.status === 'migrating' || c.status === 'creating') {
    throw new FerryError('FERRY_E_CONTAINER_BUSY', `container ${name} on ${c.host} is ${c.status}`, {
      phase: 'input',
      hint: 'wait for it to finish (ferry ps)',
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
  await ctx.client(to).health();
  onEvent({ type: 'info', message: `migrating ${name}: ${c.host} -> ${to}` });
  return ctx.client(c.host).migrate(name, { ...o, to: dest }, onEvent);
}
