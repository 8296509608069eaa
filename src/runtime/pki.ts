// A tiny cluster certificate authority on the `openssl` CLI, for mutual TLS between agents, CLI and controller.
// Keys are EC P-256. Certificates are signed with `openssl ca` (with a throwaway database) rather than
// `openssl x509 -req` because OpenSSL 3.0 can set a backdated notBefore only through `ca -startdate`:
// a host whose clock is a little behind the issuer's would otherwise reject a fresh certificate.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { FerryError } from '../core/errors.ts';
import { checkName } from '../core/names.ts';
import type { Runner } from './exec.ts';

export interface CertPaths {
  cert: string;
  key: string;
  ca: string;
}

export interface IssueOptions {
  kind: 'host' | 'client';
  /** IP addresses for the subjectAltName (host certificates only). */
  ips?: string[];
  /** Extra DNS names for the subjectAltName (host certificates only; the name itself is always included). */
  dns?: string[];
  /** Validity in days (default 825). */
  days?: number;
  /** Reissue even if the existing certificate still fits. */
  force?: boolean;
}

export const CA_CN = 'ferry cluster CA';
const CA_DAYS = 3650;
const LEAF_DAYS = 825;
/** notBefore is set this far in the past to tolerate clock skew between hosts. */
const BACKDATE_MS = 60 * 60 * 1000;
/** An existing certificate closer than this to expiry is reissued. */
const RENEW_BEFORE_MS = 30 * 24 * 60 * 60 * 1000;

const OID_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const OID_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

const DNS_LABEL = '[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?';
const DNS_RE = new RegExp(`^${DNS_LABEL}(?:\\.${DNS_LABEL})*$`);

function opensslDate(d: Date): string {
  // GeneralizedTime, YYYYMMDDHHMMSSZ.
  return `${d.toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`;
}

function uniq(xs: string[]): string[] {
  return [...new Set(xs)];
}

function checkIPs(ips: string[]): string[] {
  for (const ip of ips) {
    if (typeof ip !== 'string' || isIP(ip) === 0 || ip.includes('%')) {
      throw new FerryError(
        'FERRY_E_INPUT_ARGS',
        `invalid IP address for a certificate: ${JSON.stringify(ip)}`,
        {
          phase: 'input',
        },
      );
    }
  }
  return uniq(ips);
}

function checkDNS(names: string[]): string[] {
  for (const n of names) {
    if (typeof n !== 'string' || n.length > 253 || !DNS_RE.test(n)) {
      throw new FerryError('FERRY_E_INPUT_ARGS', `invalid DNS name for a certificate: ${JSON.stringify(n)}`, {
        phase: 'input',
      });
    }
  }
  return uniq(names);
}

// A self-contained config: `-config` keeps the system openssl.cnf (and its default extensions) out of it.
// Paths are relative to the work directory (the cwd of every openssl call), so no path is ever
// interpolated into the config (OpenSSL expands `$` in config values).
function caConfig(san: { dns: string[]; ips: string[] }): string {
  const lines = [
    '[ca]',
    'default_ca = ferry_ca',
    '[ferry_ca]',
    'database = ./index.txt',
    'new_certs_dir = ./new',
    'serial = ./serial',
    'default_md = sha256',
    'policy = ferry_policy',
    'unique_subject = no',
    'email_in_dn = no',
    'copy_extensions = none',
    '[ferry_policy]',
    'commonName = supplied',
    '[req]',
    'distinguished_name = ferry_dn',
    'prompt = no',
    '[ferry_dn]',
    'CN = unused',
    '[ext_ca]',
    'basicConstraints = critical,CA:TRUE,pathlen:0',
    'keyUsage = critical,keyCertSign,cRLSign',
    'subjectKeyIdentifier = hash',
    '[ext_client]',
    'basicConstraints = critical,CA:FALSE',
    'keyUsage = critical,digitalSignature',
    'extendedKeyUsage = clientAuth',
    'subjectKeyIdentifier = hash',
    'authorityKeyIdentifier = keyid',
    '[ext_host]',
    'basicConstraints = critical,CA:FALSE',
    'keyUsage = critical,digitalSignature',
    'extendedKeyUsage = serverAuth,clientAuth',
    'subjectKeyIdentifier = hash',
    'authorityKeyIdentifier = keyid',
    'subjectAltName = @ferry_san',
    '[ferry_san]',
    ...san.dns.map((d, i) => `DNS.${i + 1} = ${d}`),
    ...san.ips.map((ip, i) => `IP.${i + 1} = ${ip}`),
  ];
  return `${lines.join('\n')}\n`;
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

export class ClusterCA {
  readonly dir: string;
  readonly caCert: string;
  readonly caKey: string;
  #runner: Runner;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(dir: string, runner: Runner) {
    this.dir = dir;
    this.caCert = join(dir, 'ca.crt');
    this.caKey = join(dir, 'ca.key');
    this.#runner = runner;
  }

  /** Paths of `name`'s certificate (whether or not it has been issued). */
  paths(name: string): CertPaths {
    checkName(name, 'certificate');
    return { cert: join(this.dir, `${name}.crt`), key: join(this.dir, `${name}.key`), ca: this.caCert };
  }

  /** Creates the CA if it is missing. Idempotent. */
  ensure(): Promise<void> {
    return this.#serialized(() => this.#ensure());
  }

  /**
   * Issues `<dir>/<name>.crt` and `.key` (and creates the CA if needed). An existing certificate is kept if it
   * is signed by this CA, matches its key, is of the same kind, covers every requested IP and DNS name and has
   * more than 30 days left; otherwise (or with `force`) a new key and certificate replace it.
   */
  issue(name: string, opts: IssueOptions): Promise<CertPaths> {
    return this.#serialized(() => this.#issue(name, opts));
  }

  #serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(() => fn());
    this.#queue = run.catch(() => {});
    return run;
  }

  async #openssl(args: string[], cwd: string): Promise<void> {
    await this.#runner.run(['openssl', ...args], { cwd, errorCode: 'FERRY_E_INTERNAL', timeoutMs: 30_000 });
  }

  async #withWorkDir<T>(fn: (work: string) => Promise<T>): Promise<T> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    // Inside dir (not /tmp): fresh private keys never leave it, and rename() into place is atomic.
    const work = await mkdtemp(join(this.dir, '.work-'));
    try {
      await mkdir(join(work, 'new'));
      await writeFile(join(work, 'index.txt'), '');
      return await fn(work);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  async #genKey(work: string, file: string): Promise<void> {
    await this.#openssl(
      ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file],
      work,
    );
    await chmod(join(work, file), 0o600);
  }

  async #ensure(): Promise<void> {
    const [haveCert, haveKey] = await Promise.all([exists(this.caCert), exists(this.caKey)]);
    if (haveCert && haveKey) return;
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
    await this.#withWorkDir(async (work) => {
      await writeFile(join(work, 'ferry.cnf'), caConfig({ dns: [], ips: [] }));
      await this.#genKey(work, 'ca.key');
      await this.#openssl(
        ['req', '-new', '-config', 'ferry.cnf', '-key', 'ca.key', '-subj', `/CN=${CA_CN}`, '-out', 'ca.csr'],
        work,
      );
      await this.#openssl(
        [
          'ca',
          '-batch',
          '-notext',
          '-config',
          'ferry.cnf',
          '-selfsign',
          '-keyfile',
          'ca.key',
          '-in',
          'ca.csr',
          '-out',
          'ca.crt',
          '-rand_serial',
          '-startdate',
          opensslDate(new Date(Date.now() - BACKDATE_MS)),
          '-days',
          String(CA_DAYS),
          '-extensions',
          'ext_ca',
        ],
        work,
      );
      // Key first: a crash in between leaves only a key, which the next ensure() replaces.
      await rename(join(work, 'ca.key'), this.caKey);
      await rename(join(work, 'ca.crt'), this.caCert);
    });
  }

  async #issue(name: string, opts: IssueOptions): Promise<CertPaths> {
    checkName(name, opts.kind === 'host' ? 'host' : 'client');
    if (name.toLowerCase() === 'ca') {
      throw new FerryError(
        'FERRY_E_INPUT_NAME',
        `invalid certificate name "${name}": reserved for the cluster CA`,
        {
          phase: 'input',
        },
      );
    }
    if (opts.kind !== 'host' && opts.kind !== 'client') {
      throw new FerryError('FERRY_E_INPUT_ARGS', `invalid certificate kind ${JSON.stringify(opts.kind)}`, {
        phase: 'input',
      });
    }
    const ips = checkIPs(opts.ips ?? []);
    const extraDns = checkDNS(opts.dns ?? []);
    if (opts.kind === 'client' && (ips.length > 0 || extraDns.length > 0)) {
      throw new FerryError('FERRY_E_INPUT_ARGS', 'client certificates carry no IP addresses or DNS names', {
        phase: 'input',
      });
    }
    const days = opts.days ?? LEAF_DAYS;
    if (!Number.isInteger(days) || days < 1 || days > CA_DAYS) {
      throw new FerryError('FERRY_E_INPUT_ARGS', `invalid certificate validity ${days} days`, {
        phase: 'input',
      });
    }
    const dns = opts.kind === 'host' ? uniq([name, ...extraDns]) : [];

    await this.#ensure();
    const paths = this.paths(name);
    if (!opts.force && (await this.#fits(paths, name, opts.kind, dns, ips))) return paths;

    await this.#withWorkDir(async (work) => {
      await writeFile(join(work, 'ferry.cnf'), caConfig({ dns, ips }));
      await this.#genKey(work, 'leaf.key');
      await this.#openssl(
        [
          'req',
          '-new',
          '-config',
          'ferry.cnf',
          '-key',
          'leaf.key',
          '-subj',
          `/CN=${name}`,
          '-out',
          'leaf.csr',
        ],
        work,
      );
      await this.#openssl(
        [
          'ca',
          '-batch',
          '-notext',
          '-config',
          'ferry.cnf',
          '-cert',
          this.caCert,
          '-keyfile',
          this.caKey,
          '-in',
          'leaf.csr',
          '-out',
          'leaf.crt',
          '-rand_serial',
          '-startdate',
          opensslDate(new Date(Date.now() - BACKDATE_MS)),
          '-days',
          String(days),
          '-extensions',
          opts.kind === 'host' ? 'ext_host' : 'ext_client',
        ],
        work,
      );
      await rename(join(work, 'leaf.key'), paths.key);
      await rename(join(work, 'leaf.crt'), paths.cert);
    });
    return paths;
  }

  /** Whether the certificate on disk can be kept for this request. */
  async #fits(
    paths: CertPaths,
    name: string,
    kind: 'host' | 'client',
    dns: string[],
    ips: string[],
  ): Promise<boolean> {
    let cert: X509Certificate;
    let ca: X509Certificate;
    let keyPem: Buffer;
    try {
      [cert, ca, keyPem] = await Promise.all([
        readFile(paths.cert).then((b) => new X509Certificate(b)),
        readFile(this.caCert).then((b) => new X509Certificate(b)),
        readFile(paths.key),
      ]);
      if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return false;
      if (!cert.checkPrivateKey(createPrivateKey(keyPem))) return false;
    } catch {
      return false; // missing or unreadable: reissue
    }
    if (cert.subject !== `CN=${name}`) return false;
    if (cert.validToDate.getTime() - Date.now() < RENEW_BEFORE_MS) return false;
    const eku = cert.keyUsage ?? [];
    const wantServer = kind === 'host';
    if (!eku.includes(OID_CLIENT_AUTH) || eku.includes(OID_SERVER_AUTH) !== wantServer) return false;
    const sanDns = new Set(
      (cert.subjectAltName ?? '')
        .split(', ')
        .filter((e) => e.startsWith('DNS:'))
        .map((e) => e.slice(4).toLowerCase()),
    );
    if (!dns.every((d) => sanDns.has(d.toLowerCase()))) return false;
    return ips.every((ip) => cert.checkIP(ip) !== undefined);
  }
}

function readPaths(p: CertPaths): { key: Buffer; cert: Buffer; ca: Buffer } {
  return { key: readFileSync(p.key), cert: readFileSync(p.cert), ca: readFileSync(p.ca) };
}

/** Options for tls/https servers: only peers with a certificate from the cluster CA get through the handshake. */
export function tlsServerOptions(p: CertPaths): {
  key: Buffer;
  cert: Buffer;
  ca: Buffer;
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
export function tlsClientOptions(p: CertPaths): { key: Buffer; cert: Buffer; ca: Buffer } {
  return readPaths(p);
}
