// The cluster CA's revocation list (a signed X.509 CRL, `ca.crl` beside `ca.crt`): `ferry ca rotate` lists the
// certificate it replaces (and `ferry ca issue` one it replaces for more than a renewal), so a copy of the old key and certificate is refused by every agent and controller that
// has the list, not only once it expires. The TLS layer (OpenSSL, through Node's `crl` option) does the checking;
// this module writes the list, reads it, and tells a running daemon when it changed on disk.
import type { webcrypto } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { loadX509 } from './x509-lib.ts';

/** How often a daemon looks at its revocation list for a new copy (a stat, nothing more). */
export const CRL_POLL_MS = 1000;

/** The revocation list of the CA whose certificate is `caCert`: the same name with `.crl` (`ca.crt` → `ca.crl`). */
export function crlPath(caCert: string): string {
  const base = basename(caCert, extname(caCert));
  return join(dirname(caCert), `${base}.crl`);
}

/**
 * The list's PEM, or undefined when there is none (a CA created before revocation lists, or a host the list was
 * not copied to: then only expiry ends a certificate's life there).
 */
export function readRevocationList(caCert: string): Buffer | undefined {
  try {
    return readFileSync(crlPath(caCert));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** A serial number as one spelling: lower-case hex without leading zeros (Node prints upper case). */
export function normalSerial(serial: string): string {
  return serial.toLowerCase().replace(/^0+(?=.)/, '');
}

/**
 * The serial numbers the list beside `caCert` revokes (none without a list). Throws when the list cannot be read
 * or is not signed by that CA: with it, TLS would refuse every certificate of the cluster.
 */
export async function revokedSerials(caCert: string): Promise<Set<string>> {
  let pem: string;
  try {
    pem = await readFile(crlPath(caCert), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Set();
    throw err;
  }
  const x = await loadX509();
  let crl: InstanceType<typeof x.X509Crl>;
  try {
    crl = new x.X509Crl(pem);
  } catch (err) {
    throw new Error(`not a revocation list (${(err as Error).message})`);
  }
  const ca = new x.X509Certificate(await readFile(caCert, 'utf8'));
  if (!(await crl.verify({ publicKey: ca.publicKey })))
    throw new Error(`is not signed by the CA ${caCert}: another CA's revocation list`);
  return new Set(crl.entries.map((e) => normalSerial(e.serialNumber)));
}

export interface CrlOptions {
  /** The CA's certificate (PEM): the list's issuer and authority key. */
  caPem: string;
  signingKey: webcrypto.CryptoKey;
  /** The list so far (PEM), whose entries are kept. */
  previous: string | undefined;
  /** Serial numbers (hex) to add. */
  revoke: string[];
  now: number;
  /** How far thisUpdate is set back, for hosts whose clocks run behind. */
  backdateMs: number;
}

/**
 * A new list signed by the CA: the previous entries and the new ones. Its nextUpdate is the CA's own end: the list
 * is replaced when something is revoked, not on a schedule, and OpenSSL refuses every certificate once a list's
 * nextUpdate has passed. (Without one, the library reads the list's entries back as none.)
 */
export async function crlPem(o: CrlOptions): Promise<string> {
  const x = await loadX509();
  const ca = new x.X509Certificate(o.caPem);
  const entries = new Map<string, { serialNumber: string; revocationDate: Date }>();
  if (o.previous)
    for (const e of new x.X509Crl(o.previous).entries)
      entries.set(normalSerial(e.serialNumber), {
        serialNumber: e.serialNumber,
        revocationDate: e.revocationDate,
      });
  for (const s of o.revoke) {
    const n = normalSerial(s);
    // whole bytes: the library reads the hex two digits at a time
    if (!entries.has(n))
      entries.set(n, { serialNumber: n.length % 2 ? `0${n}` : n, revocationDate: new Date(o.now) });
  }
  const crl = await x.X509CrlGenerator.create({
    issuer: ca.subject,
    thisUpdate: new Date(o.now - o.backdateMs),
    nextUpdate: ca.notAfter,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    signingKey: o.signingKey,
    entries: [...entries.values()].map((e) => ({ ...e, reason: x.X509CrlReason.superseded })),
    extensions: [await x.AuthorityKeyIdentifierExtension.create(ca.publicKey)],
  });
  // OpenSSL reads only the "X509 CRL" label (the library writes "CRL")
  return `${x.PemConverter.encode(crl.rawData, 'X509 CRL')}\n`;
}

/**
 * Calls `onChange` whenever the list beside `caCert` changes on disk, created or replaced (an operator copies a
 * new one there after `ferry ca rotate`). Polled with stat: a watch on the path survives the rename that replaces
 * the file. Returns the function that stops watching.
 */
export function watchRevocationList(caCert: string, onChange: () => void): () => void {
  const path = crlPath(caCert);
  const listener = (cur: { mtimeMs: number; ino: number }, prev: { mtimeMs: number; ino: number }) => {
    if (cur.mtimeMs !== prev.mtimeMs || cur.ino !== prev.ino) onChange();
  };
  watchFile(path, { interval: CRL_POLL_MS, persistent: false }, listener);
  return () => unwatchFile(path, listener);
}
