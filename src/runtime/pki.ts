// The cluster certificate authority, for mutual TLS between agents, controller and CLI users, on @peculiar/x509
// over Node's WebCrypto (ECDSA P-256). Every certificate carries a ROLE (a subjectAltName URI
// `ferry://role/<role>`) so a server can tell an agent from a controller from a user, not only "someone the CA
// signed": TLS proves the CA, `requireRole` the role.
// Over 400 lines as one file because it is one job: a certificate's life (issue, check on start, rotate and revoke,
// the role check, why a handshake refused one) over one key store and one set of X.509 extensions; splitting it
// would spread that format over modules. The revocation list's own format is in revocation.ts.
import { createPrivateKey, randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { basename, dirname, join } from 'node:path';
import type { DetailedPeerCertificate, PeerCertificate, TLSSocket } from 'node:tls';
import { FerryError } from '../core/errors.ts';
import { checkName } from '../core/names.ts';
import { crlPath, crlPem, normalSerial, readRevocationList, revokedSerials } from './revocation.ts';
import { loadX509 } from './x509-lib.ts';

export const ROLES = ['agent', 'controller', 'client'] as const;
/** agent: a host's daemon; controller: the cluster controller; client: a CLI user. */
export type Role = (typeof ROLES)[number];

export interface CertPaths {
  cert: string;
  key: string;
  ca: string;
}

export interface IssueOptions {
  role: Role;
  /** IP addresses for the subjectAltName (agent and controller certificates only). */
  ips?: string[];
  /** Extra DNS names for the subjectAltName (agent and controller only; the name itself is always included). */
  dns?: string[];
  /** Validity in days (default 90 for agents and controllers, 30 for clients). */
  days?: number;
  /** Reissue even if the existing certificate still fits (a new key: see `rotate`). */
  force?: boolean;
}

export interface CertificateInfo {
  name: string;
  /** undefined for a certificate without a (single, known) role. */
  role: Role | undefined;
  ips: string[];
  /** DNS names besides the name itself. */
  dns: string[];
  notBefore: Date;
  notAfter: Date;
  serial: string;
  paths: CertPaths;
}

export interface ClusterCADeps {
  /** The clock, in ms since the epoch (tests issue certificates in the past with it). */
  now?: () => number;
}

export const CA_CN = 'ferry cluster CA';
export const ROLE_URI_PREFIX = 'ferry://role/';
const CA_DAYS = 3650;
/** How long a certificate of each role is valid unless asked otherwise: short, so rotation is routine. */
export const DEFAULT_DAYS: Readonly<Record<Role, number>> = { agent: 90, controller: 90, client: 30 };
const DAY_MS = 86_400_000;
/** notBefore is set this far in the past to tolerate clock skew between hosts. */
const BACKDATE_MS = 60 * 60 * 1000;
/** An existing certificate with less than this share of its lifetime left is reissued by `issue`. */
const RENEW_AT_REMAINING = 1 / 3;

const OID_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const OID_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const EC_KEY = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;

const DNS_LABEL = '[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?';
const DNS_RE = new RegExp(`^${DNS_LABEL}(?:\\.${DNS_LABEL})*$`);

function uniq(xs: string[]): string[] {
  return [...new Set(xs)];
}

function inputError(
  message: string,
  code: 'FERRY_E_INPUT_ARGS' | 'FERRY_E_INPUT_NAME' = 'FERRY_E_INPUT_ARGS',
) {
  return new FerryError(code, message, { phase: 'input' });
}

function checkIPs(ips: string[]): string[] {
  for (const ip of ips) {
    if (typeof ip !== 'string' || isIP(ip) === 0 || ip.includes('%'))
      throw inputError(`invalid IP address for a certificate: ${JSON.stringify(ip)}`);
  }
  return uniq(ips);
}

function checkDNS(names: string[]): string[] {
  for (const n of names) {
    if (typeof n !== 'string' || n.length > 253 || !DNS_RE.test(n))
      throw inputError(`invalid DNS name for a certificate: ${JSON.stringify(n)}`);
  }
  return uniq(names);
}

function isRole(x: unknown): x is Role {
  return typeof x === 'string' && (ROLES as readonly string[]).includes(x);
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * Writes a file so that its final name only ever holds the whole content: a private temporary file (created
 * exclusively, with `mode` from the start, so a key is never readable by others even for a moment), synced,
 * then renamed over the old one.
 */
async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode); // the umask may have narrowed it; never widened
    await fh.sync();
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Makes renames in `dir` durable (a crash right after does not bring the old files back). */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function randomSerial(): string {
  // 127 random bits, positive (high bit clear) and never starting with a zero byte (no DER padding games).
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex');
}

async function keyPem(key: webcrypto.CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END PRIVATE KEY-----\n`;
}

export class ClusterCA {
  readonly dir: string;
  readonly caCert: string;
  readonly caKey: string;
  #now: () => number;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(dir: string, deps: ClusterCADeps = {}) {
    this.dir = dir;
    this.caCert = join(dir, 'ca.crt');
    this.caKey = join(dir, 'ca.key');
    this.#now = deps.now ?? Date.now;
  }

  /** Paths of `name`'s certificate (whether or not it has been issued). */
  paths(name: string): CertPaths {
    checkName(name, 'certificate');
    return { cert: join(this.dir, `${name}.crt`), key: join(this.dir, `${name}.key`), ca: this.caCert };
  }

  /** Whether this directory holds a CA (its certificate and key). */
  async exists(): Promise<boolean> {
    const [cert, key] = await Promise.all([exists(this.caCert), exists(this.caKey)]);
    return cert && key;
  }

  /** Creates the CA if it is missing. Idempotent. */
  ensure(): Promise<void> {
    return this.#serialized(() => this.#ensure());
  }

  /**
   * Issues `<dir>/<name>.crt` and `.key` (and creates the CA if needed). An existing certificate is kept if it
   * is signed by this CA, matches its key, has the same role, covers every requested IP and DNS name and has
   * more than a third of its lifetime left; otherwise (or with `force`) a new key and certificate replace it.
   * The one replaced is revoked unless it was only renewed (see `issueRevoking`).
   */
  async issue(name: string, opts: IssueOptions): Promise<CertPaths> {
    return (await this.issueRevoking(name, opts)).paths;
  }

  /**
   * As `issue`, and says which certificate it revoked: a certificate of this CA that a new one replaces is put on
   * the revocation list (a copy of the old key must not keep working until it expires, nor an old role or name),
   * except a renewal, the same certificate past two thirds of its life: it ends soon anyway, and its daemon keeps
   * working until it is restarted with the new pair. `force` (a rotation) always revokes.
   */
  issueRevoking(name: string, opts: IssueOptions): Promise<{ paths: CertPaths; revoked?: string }> {
    return this.#serialized(() => this.#issue(name, opts));
  }

  /**
   * What `name`'s certificate on disk says: its role, the addresses and extra DNS names it covers, its validity.
   * FERRY_E_INPUT_ARGS when there is none (or it cannot be read).
   */
  async describe(name: string): Promise<CertificateInfo> {
    const paths = this.paths(name);
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(await readFile(paths.cert));
    } catch (err) {
      throw new FerryError('FERRY_E_INPUT_ARGS', `no certificate ${name} in ${this.dir} (${paths.cert})`, {
        phase: 'input',
        cause: err,
        hint: 'ferry ca issue makes one',
      });
    }
    const sans = sanEntries(cert);
    return {
      name,
      role: certificateRole(cert),
      ips: sans.filter((e) => e.startsWith('IP Address:')).map((e) => e.slice('IP Address:'.length)),
      dns: sans
        .filter((e) => e.startsWith('DNS:'))
        .map((e) => e.slice(4))
        .filter((d) => d !== name),
      notBefore: cert.validFromDate,
      notAfter: cert.validToDate,
      serial: cert.serialNumber,
      paths,
    };
  }

  /** Re-issues `name` with a new key, whatever is on disk; the old files are replaced atomically. */
  rotate(name: string, opts: Omit<IssueOptions, 'force'>): Promise<CertPaths> {
    return this.issue(name, { ...opts, force: true });
  }

  #serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(() => fn());
    this.#queue = run.catch(() => {});
    return run;
  }

  async #ensure(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const [haveCert, haveKey] = await Promise.all([exists(this.caCert), exists(this.caKey)]);
    if (haveCert && haveKey) {
      // a CA made before revocation lists gets an empty one, so that every host checks against a list
      if (!(await exists(crlPath(this.caCert)))) await this.#revoke([]);
      return;
    }
    if (haveCert) {
      // Regenerating would silently invalidate every certificate issued so far.
      throw new FerryError(
        'FERRY_E_INTERNAL',
        `cluster CA certificate ${this.caCert} exists but its key is missing`,
        {
          hint: `restore ${this.caKey}, or remove ${this.dir} to start a new cluster CA (and reissue every certificate)`,
        },
      );
    }
    // A key without a certificate is left by an interrupted creation: nothing can have been issued from it.
    const x = await loadX509();
    const keys = (await webcrypto.subtle.generateKey(EC_KEY, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
    const now = this.#now();
    const cert = await x.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: `CN=${CA_CN}`,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(now + CA_DAYS * DAY_MS),
      signingAlgorithm: SIGNING,
      keys,
      extensions: [
        new x.BasicConstraintsExtension(true, 0, true),
        new x.KeyUsagesExtension(x.KeyUsageFlags.keyCertSign | x.KeyUsageFlags.cRLSign, true),
        await x.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    // Key first: a crash in between leaves only a key, which the next ensure() replaces.
    await writeAtomic(this.caKey, await keyPem(keys.privateKey), 0o600);
    await writeAtomic(this.caCert, cert.toString('pem'), 0o644);
    await this.#revoke([]);
    await syncDir(this.dir);
  }

  /** The CA's key, for signing. */
  async #signingKey(): Promise<webcrypto.CryptoKey> {
    return webcrypto.subtle.importKey(
      'pkcs8',
      createPrivateKey(await readFile(this.caKey)).export({ type: 'pkcs8', format: 'der' }),
      EC_KEY,
      false,
      ['sign'],
    );
  }

  /** Rewrites the revocation list (`ca.crl`) with these serial numbers added to the ones it lists. */
  async #revoke(serials: string[]): Promise<void> {
    const path = crlPath(this.caCert);
    const previous = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    const pem = await crlPem({
      caPem: await readFile(this.caCert, 'utf8'),
      signingKey: await this.#signingKey(),
      previous,
      revoke: serials,
      now: this.#now(),
      backdateMs: BACKDATE_MS,
    });
    await writeAtomic(path, pem, 0o644);
  }

  async #issue(name: string, opts: IssueOptions): Promise<{ paths: CertPaths; revoked?: string }> {
    if (!isRole(opts.role)) throw inputError(`invalid certificate role ${JSON.stringify(opts.role)}`);
    const role = opts.role;
    checkName(name, role === 'client' ? 'client' : 'host');
    if (name.toLowerCase() === 'ca')
      throw inputError(
        `invalid certificate name "${name}": reserved for the cluster CA`,
        'FERRY_E_INPUT_NAME',
      );
    const ips = checkIPs(opts.ips ?? []);
    const extraDns = checkDNS(opts.dns ?? []);
    if (role === 'client' && (ips.length > 0 || extraDns.length > 0))
      throw inputError('client certificates carry no IP addresses or DNS names');
    const days = opts.days ?? DEFAULT_DAYS[role];
    if (!Number.isInteger(days) || days < 1 || days > CA_DAYS)
      throw inputError(`invalid certificate validity ${days} days`);
    const dns = role === 'client' ? [] : uniq([name, ...extraDns]);

    await this.#ensure();
    const paths = this.paths(name);
    const fit = await this.#fit(paths, name, role, dns, ips);
    if (!opts.force && fit === 'fits') return { paths };

    // what a rotation or a replacement supersedes is revoked; a renewal's predecessor is left to expire
    const replaced = opts.force || fit === 'replace' ? await this.#issuedSerial(paths) : undefined;
    const x = await loadX509();
    const ca = new x.X509Certificate(await readFile(this.caCert, 'utf8'));
    const caKey = await this.#signingKey();
    const keys = (await webcrypto.subtle.generateKey(EC_KEY, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
    const now = this.#now();
    const cert = await x.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: `CN=${name}`,
      issuer: ca.subject,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(now + days * DAY_MS),
      signingAlgorithm: SIGNING,
      signingKey: caKey,
      publicKey: keys.publicKey,
      extensions: [
        new x.BasicConstraintsExtension(false, undefined, true),
        new x.KeyUsagesExtension(x.KeyUsageFlags.digitalSignature, true),
        // agents and the controller also call each other (migration peers, heartbeats, the controller's calls to
        // agents), so they are TLS clients too; a CLI user is only ever a client.
        new x.ExtendedKeyUsageExtension(
          role === 'client' ? [OID_CLIENT_AUTH] : [OID_SERVER_AUTH, OID_CLIENT_AUTH],
          false,
        ),
        new x.SubjectAlternativeNameExtension(
          [
            ...dns.map((value) => ({ type: 'dns' as const, value })),
            ...ips.map((value) => ({ type: 'ip' as const, value })),
            { type: 'url' as const, value: `${ROLE_URI_PREFIX}${role}` },
          ],
          false,
        ),
        await x.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x.AuthorityKeyIdentifierExtension.create(ca.publicKey),
      ],
    });
    // Key first, then the certificate: each replacement is atomic; a reader between the two renames sees a
    // key that does not match its certificate (TLS setup fails, a retry succeeds), never a partial file.
    await writeAtomic(paths.key, await keyPem(keys.privateKey), 0o600);
    await writeAtomic(paths.cert, cert.toString('pem'), 0o644);
    if (replaced) await this.#revoke([replaced]);
    await syncDir(this.dir);
    return replaced ? { paths, revoked: replaced } : { paths };
  }

  /** The serial number of the certificate at `paths` if this CA issued it; undefined if none or another's. */
  async #issuedSerial(paths: CertPaths): Promise<string | undefined> {
    try {
      const [c, ca] = await Promise.all([
        readFile(paths.cert).then((b) => new X509Certificate(b)),
        readFile(this.caCert).then((b) => new X509Certificate(b)),
      ]);
      return c.checkIssued(ca) && c.verify(ca.publicKey) ? normalSerial(c.serialNumber) : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Whether the certificate on disk can be kept for this request (`fits`), is the same one near its end (`renew`:
   * past two thirds of its life, or expired), or falls short in anything else (`replace`: none, unreadable, not
   * this CA's, not its key's, another name or role, or short of a name or address asked for).
   */
  async #fit(
    paths: CertPaths,
    name: string,
    role: Role,
    dns: string[],
    ips: string[],
  ): Promise<'fits' | 'renew' | 'replace'> {
    let cert: X509Certificate;
    try {
      const [c, ca, key] = await Promise.all([
        readFile(paths.cert).then((b) => new X509Certificate(b)),
        readFile(this.caCert).then((b) => new X509Certificate(b)),
        readFile(paths.key),
      ]);
      if (!c.checkIssued(ca) || !c.verify(ca.publicKey)) return 'replace';
      if (!c.checkPrivateKey(createPrivateKey(key))) return 'replace';
      cert = c;
    } catch {
      return 'replace'; // missing or unreadable: reissue
    }
    if (cert.subject !== `CN=${name}`) return 'replace';
    if (certificateRole(cert) !== role) return 'replace';
    const eku = cert.keyUsage ?? [];
    if (!eku.includes(OID_CLIENT_AUTH) || eku.includes(OID_SERVER_AUTH) !== (role !== 'client'))
      return 'replace';
    const sanDns = new Set(
      sanEntries(cert)
        .filter((e) => e.startsWith('DNS:'))
        .map((e) => e.slice(4).toLowerCase()),
    );
    if (!dns.every((d) => sanDns.has(d.toLowerCase()))) return 'replace';
    if (!ips.every((ip) => cert.checkIP(ip) !== undefined)) return 'replace';
    const from = cert.validFromDate.getTime();
    const to = cert.validToDate.getTime();
    return to - this.#now() < (to - from) * RENEW_AT_REMAINING ? 'renew' : 'fits';
  }
}

/**
 * Why a TLS peer's certificate did not verify, in words, from OpenSSL's (and Node's) verify code; `whose` is the
 * side that presented it (a client certificate needs clientAuth, a server's serverAuth). Undefined for a code
 * that is not about the certificate.
 */
export function verifyFailure(code: string, whose: 'client' | 'server'): string | undefined {
  switch (code) {
    case 'CERT_HAS_EXPIRED':
      return 'has expired';
    case 'CERT_NOT_YET_VALID':
      return 'is not valid yet (are the clocks of both hosts right?)';
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
      return "is not signed by this cluster's CA";
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
      return 'is self-signed';
    case 'CERT_SIGNATURE_FAILURE':
      return 'has a signature that does not verify';
    case 'CERT_REVOKED':
      return 'was revoked (ferry ca rotate or issue replaced it)';
    case 'INVALID_PURPOSE':
      return whose === 'client'
        ? 'is not for TLS clients (its extended key usage lacks clientAuth)'
        : 'is not for TLS servers (its extended key usage lacks serverAuth)';
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return 'does not carry the name dialled';
    case 'UNABLE_TO_GET_CRL':
      // OpenSSL's last word on a chain that ends in another CA: the list covers everything this CA signed (a
      // list of another CA is refused when a daemon starts), so a certificate without one is another CA's
      return "is not signed by this cluster's CA (no revocation list of its CA here)";
    case 'CRL_NOT_YET_VALID':
      return "cannot be checked: this host's revocation list is not valid yet (is this host's clock behind?)";
    case 'CRL_HAS_EXPIRED':
      return "cannot be checked: this host's revocation list has expired (with the CA: a new CA is due)";
    case 'CRL_SIGNATURE_FAILURE':
    case 'UNABLE_TO_DECRYPT_CRL_SIGNATURE':
      return "cannot be checked against this host's revocation list (copy the CA's current ca.crl here)";
    default:
      return undefined;
  }
}

export type CertInput = Buffer | Uint8Array | string | X509Certificate;

function toX509(c: CertInput): X509Certificate {
  return c instanceof X509Certificate ? c : new X509Certificate(c);
}

function sanEntries(cert: X509Certificate): string[] {
  // Node lists the entries comma-separated, quoting (JSON) any entry that itself contains a separator; a quoted
  // entry is never taken for a role.
  return (cert.subjectAltName ?? '').split(', ');
}

/** The role a certificate (DER, PEM or parsed) carries; undefined if it names none, several, or an unknown one. */
export function certificateRole(cert: CertInput): Role | undefined {
  const roles = sanEntries(toX509(cert))
    .filter((e) => e.startsWith(`URI:${ROLE_URI_PREFIX}`))
    .map((e) => e.slice(`URI:${ROLE_URI_PREFIX}`.length));
  if (roles.length !== 1) return undefined;
  return isRole(roles[0]) ? roles[0] : undefined;
}

/** The name (subject CN) a certificate (DER, PEM or parsed) was issued to; undefined if it has none. */
export function certificateName(cert: CertInput): string | undefined {
  const m = /^CN=(.+)$/m.exec(toX509(cert).subject);
  return m?.[1] || undefined;
}

/** When a certificate (DER, PEM or parsed) stops being valid. */
export function certificateExpiry(cert: CertInput): Date {
  return toX509(cert).validToDate;
}

/** Whether a certificate is outside its validity period at `now` (expired, or not yet valid). */
export function certificateExpired(cert: CertInput, now: number = Date.now()): boolean {
  const c = toX509(cert);
  return now >= c.validToDate.getTime() || now < c.validFromDate.getTime();
}

/**
 * Checks that a TLS peer's certificate (as `socket.getPeerCertificate()` returns it, or DER/PEM) carries one of
 * the `allowed` roles, and returns the role. Throws FERRY_E_AUTH without a certificate, FERRY_E_AUTH_ROLE for a
 * role not allowed (or none). The chain itself is the TLS layer's business: the peer's certificate must have
 * been verified against the cluster CA before this is asked (`tlsServerOptions` refuses others at the handshake,
 * the API's server setup before any route).
 */
export function requireRole(
  peer: PeerCertificate | DetailedPeerCertificate | CertInput | null | undefined,
  allowed: readonly Role[],
): Role {
  // getPeerCertificate() returns {} when the peer sent none
  const raw: CertInput | undefined =
    peer && typeof peer === 'object' && !(peer instanceof Uint8Array) && !(peer instanceof X509Certificate)
      ? (peer as PeerCertificate).raw
      : (peer ?? undefined);
  if (raw === undefined || (!(raw instanceof X509Certificate) && raw.length === 0))
    throw new FerryError('FERRY_E_AUTH', 'the peer presented no certificate', {
      hint: 'use a certificate from the cluster CA',
    });
  let role: Role | undefined;
  try {
    role = certificateRole(raw);
  } catch (err) {
    throw new FerryError('FERRY_E_AUTH', 'the peer certificate cannot be parsed', { cause: err });
  }
  if (role && allowed.includes(role)) return role;
  throw new FerryError(
    'FERRY_E_AUTH_ROLE',
    `certificate role ${role ?? '(none)'} is not allowed here; allowed: ${allowed.join(', ')}`,
    { hint: `connect with a certificate issued for the role ${allowed.join(' or ')}` },
  );
}

/**
 * Checks a daemon's own certificate files before it listens: readable, the key matching the certificate, signed
 * by the CA file, valid now, of `role` (and issued to `name`, when given). FERRY_E_INPUT_ARGS naming the file and
 * what is wrong: started with a wrong certificate, a daemon would only fail later, in the other ends' handshakes.
 */
export function checkOwnCertificate(
  p: CertPaths,
  want: { role: Role; name?: string },
  now: number = Date.now(),
): { name: string | undefined; notAfter: Date } {
  const bad = (file: string, what: string, cause?: unknown) =>
    new FerryError('FERRY_E_INPUT_ARGS', `${file}: ${what}`, {
      phase: 'input',
      ...(cause === undefined ? {} : { cause }),
      hint: 'ferry ca issue makes a certificate for this host, ferry ca rotate renews one',
    });
  const read = (
    file: string,
    parse: (b: Buffer) => X509Certificate | ReturnType<typeof createPrivateKey>,
  ) => {
    try {
      return parse(readFileSync(file));
    } catch (err) {
      throw bad(file, `cannot read it (${(err as Error).message})`, err);
    }
  };
  const cert = read(p.cert, (b) => new X509Certificate(b)) as X509Certificate;
  const ca = read(p.ca, (b) => new X509Certificate(b)) as X509Certificate;
  const key = read(p.key, (b) => createPrivateKey(b)) as ReturnType<typeof createPrivateKey>;
  if (!cert.checkPrivateKey(key)) throw bad(p.key, `is not the key of ${p.cert}`);
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey))
    throw bad(p.cert, `is not signed by the CA ${p.ca}`);
  if (now >= cert.validToDate.getTime()) throw bad(p.cert, `expired on ${cert.validToDate.toISOString()}`);
  if (now < cert.validFromDate.getTime())
    throw bad(p.cert, `is not valid before ${cert.validFromDate.toISOString()}`);
  const role = certificateRole(cert);
  if (role !== want.role) throw bad(p.cert, `has the role ${role ?? '(none)'}, not ${want.role}`);
  const name = certificateName(cert);
  if (want.name !== undefined && name !== want.name)
    throw bad(p.cert, `is issued to ${name ?? '(no name)'}, not ${want.name}`);
  return { name, notAfter: cert.validToDate };
}

/**
 * A daemon's own certificate must not be one a rotation replaced (the others would refuse it): FERRY_E_INPUT_ARGS
 * naming the file. Checked against the revocation list beside the CA file, when there is one.
 */
export async function checkOwnNotRevoked(p: CertPaths): Promise<void> {
  const serial = normalSerial(new X509Certificate(readFileSync(p.cert)).serialNumber);
  let revoked: Set<string>;
  try {
    revoked = await revokedSerials(p.ca);
  } catch (err) {
    throw new FerryError('FERRY_E_INPUT_ARGS', `${crlPath(p.ca)}: ${(err as Error).message}`, {
      phase: 'input',
      cause: err,
      hint: `copy the revocation list of the CA ${p.ca} there (ferry ca init and rotate write it beside ca.crt)`,
    });
  }
  if (revoked.has(serial))
    throw new FerryError(
      'FERRY_E_INPUT_ARGS',
      `${p.cert}: was replaced by ferry ca rotate or issue and is revoked (listed in ${crlPath(p.ca)})`,
      { phase: 'input', hint: 'use the certificate and key the rotation wrote' },
    );
}

/** The TLS material of these files; the CA's revocation list too, when there is one beside the CA file. */
export interface TlsFiles {
  key: Buffer;
  cert: Buffer;
  ca: Buffer;
  crl?: Buffer;
}

function readPaths(p: CertPaths): TlsFiles {
  const crl = readRevocationList(p.ca);
  return {
    key: readFileSync(p.key),
    cert: readFileSync(p.cert),
    ca: readFileSync(p.ca),
    ...(crl ? { crl } : {}),
  };
}

/** Options for tls/https servers: only peers with a certificate from the cluster CA get through the handshake. */
export function tlsServerOptions(p: CertPaths): TlsFiles & {
  requestCert: true;
  rejectUnauthorized: true;
} {
  return { ...readPaths(p), requestCert: true, rejectUnauthorized: true };
}

/**
 * Options for tls/https clients: presents our certificate and trusts only the cluster CA (rejectUnauthorized
 * is Node's default). The server's certificate must name the host dialled; to dial an address and check for a
 * host name instead, add `servername: '<host name>'`.
 */
export function tlsClientOptions(p: CertPaths): TlsFiles {
  return readPaths(p);
}

/** The role of the peer's verified certificate; undefined if it presented none, it did not verify, or no role. */
export function peerRole(socket: TLSSocket): Role | undefined {
  if (!socket.authorized) return undefined;
  const raw = socket.getPeerCertificate().raw;
  return raw ? certificateRole(raw) : undefined;
}
