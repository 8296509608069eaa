// ferry ca init|issue|rotate: the cluster CA in a directory an operator keeps (the testbed makes its own the same
// way): a CA, then one certificate per host agent, controller and CLI user, each with its role.
import { type CertificateInfo, ClusterCA, crlPath, type Role } from '../api/certificates.ts';
import { FerryError } from '../core/errors.ts';

/** Who a certificate is for: exactly one of the three. */
export interface SubjectOptions {
  host?: string;
  controller?: string;
  user?: string;
}

export interface CaInitOptions {
  json?: boolean;
}

export interface IssueCommandOptions extends SubjectOptions {
  address?: string[];
  dns?: string[];
  days?: number;
  json?: boolean;
}

export interface CaResult {
  ca: string;
  created?: boolean;
  /** The certificate a rotation (or an issue that replaced it) superseded, now on the CA's revocation list. */
  revoked?: { serial: string; list: string };
  certificate?: {
    name: string;
    role: Role | undefined;
    cert: string;
    key: string;
    ips: string[];
    dns: string[];
    notAfter: string;
    serial: string;
  };
}

function usage(message: string): FerryError {
  return new FerryError('FERRY_E_INPUT_ARGS', message, { phase: 'input' });
}

function subject(o: SubjectOptions): { name: string; role: Role } {
  const given = (
    [
      ['agent', o.host],
      ['controller', o.controller],
      ['client', o.user],
    ] as const
  ).filter(([, n]) => n !== undefined);
  if (given.length !== 1)
    throw usage('name exactly one of --host NAME (an agent), --controller NAME or --user NAME (a CLI user)');
  const [role, name] = given[0]!;
  return { role, name: name! };
}

function certificate(info: CertificateInfo): NonNullable<CaResult['certificate']> {
  return {
    name: info.name,
    role: info.role,
    cert: info.paths.cert,
    key: info.paths.key,
    ips: info.ips,
    dns: info.dns,
    notAfter: info.notAfter.toISOString(),
    serial: info.serial,
  };
}

export async function caInit(dir: string): Promise<CaResult> {
  const ca = new ClusterCA(dir);
  const existed = await ca.exists();
  await ca.ensure();
  return { ca: ca.caCert, created: !existed };
}

/**
 * Issues (or keeps, when the one on disk still fits) the certificate of a host, the controller or a user. One it
 * replaces is revoked, as a rotation's, unless it was only renewed near its end (runtime/pki.ts `issueRevoking`).
 */
export async function caIssue(dir: string, o: IssueCommandOptions): Promise<CaResult> {
  const { name, role } = subject(o);
  const ca = new ClusterCA(dir);
  if (!(await ca.exists())) throw usage(`no cluster CA in ${dir}`);
  const old = await ca.describe(name).catch(() => undefined);
  const { revoked } = await ca.issueRevoking(name, {
    role,
    ...(o.address ? { ips: o.address } : {}),
    ...(o.dns ? { dns: o.dns } : {}),
    ...(o.days !== undefined ? { days: o.days } : {}),
  });
  return {
    ca: ca.caCert,
    certificate: certificate(await ca.describe(name)),
    ...(revoked ? { revoked: { serial: old?.serial ?? revoked, list: crlPath(ca.caCert) } } : {}),
  };
}

/**
 * Replaces a certificate with a new key and certificate for the same name, role, addresses and DNS names (or
 * those given); the files are swapped atomically, so a daemon restarted afterwards picks up the new pair.
 */
export async function caRotate(dir: string, o: IssueCommandOptions): Promise<CaResult> {
  const { name, role } = subject(o);
  const ca = new ClusterCA(dir);
  if (!(await ca.exists())) throw usage(`no cluster CA in ${dir}`);
  const old = await ca.describe(name);
  if (old.role !== role) throw usage(`certificate ${name} has the role ${old.role ?? '(none)'}, not ${role}`);
  await ca.rotate(name, {
    role,
    ips: o.address ?? old.ips,
    dns: o.dns ?? old.dns,
    ...(o.days !== undefined ? { days: o.days } : {}),
  });
  return {
    ca: ca.caCert,
    certificate: certificate(await ca.describe(name)),
    revoked: { serial: old.serial, list: crlPath(ca.caCert) },
  };
}

export function printCa(r: CaResult, json: boolean | undefined): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return;
  }
  if (!r.certificate) {
    process.stdout.write(`${r.created ? 'created' : 'kept'} cluster CA ${r.ca}\n`);
    return;
  }
  const c = r.certificate;
  const covers = [...c.ips, ...c.dns].join(', ');
  process.stdout.write(
    `${c.role ?? '(no role)'} certificate ${c.name}: ${c.cert} (key ${c.key})` +
      `${covers ? `, for ${covers}` : ''}, valid until ${c.notAfter}\n`,
  );
  if (r.revoked)
    process.stdout.write(
      `revoked the one it replaced (serial ${r.revoked.serial}) in ${r.revoked.list}: copy that file to every host\n`,
    );
}
