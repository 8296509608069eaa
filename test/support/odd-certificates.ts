// Certificates `ferry ca` never makes, for the tests that check they are refused: signed by a cluster CA's real key
// with the same X.509 library, but with a validity window or key usages of the test's choosing (a client
// certificate used as a server's, a server-only certificate used as a client's, one not valid yet).
import 'reflect-metadata';
import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as x from '@peculiar/x509';
import type { CertPaths, Role } from '../../src/runtime/pki.ts';

x.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x.cryptoProvider.set>[0]);

const USAGE = { serverAuth: '1.3.6.1.5.5.7.3.1', clientAuth: '1.3.6.1.5.5.7.3.2' } as const;
const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;

export interface OddCertificate {
  /** The role URI it carries, as `ferry ca` would write it. */
  role: Role;
  /** Its extended key usages. */
  usages: (keyof typeof USAGE)[];
  notBefore: Date;
  notAfter: Date;
  /** Extra IP SANs (for a server's certificate dialled by address). */
  ips?: string[];
}

/**
 * Writes `<dir>/<name>.crt` and `.key`, signed by the CA in `caDir` (its `ca.crt` and `ca.key`), and returns the
 * paths with that CA as the trust anchor.
 */
export async function issueOdd(
  caDir: string,
  dir: string,
  name: string,
  o: OddCertificate,
): Promise<CertPaths> {
  const caPem = readFileSync(join(caDir, 'ca.crt'), 'utf8');
  const ca = new x.X509Certificate(caPem);
  const caKey = await webcrypto.subtle.importKey(
    'pkcs8',
    createPrivateKey(readFileSync(join(caDir, 'ca.key'))).export({ type: 'pkcs8', format: 'der' }),
    EC,
    false,
    ['sign'],
  );
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01;
  const cert = await x.X509CertificateGenerator.create({
    serialNumber: serial.toString('hex'),
    subject: `CN=${name}`,
    issuer: ca.subject,
    notBefore: o.notBefore,
    notAfter: o.notAfter,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    signingKey: caKey,
    publicKey: keys.publicKey,
    extensions: [
      new x.BasicConstraintsExtension(false, undefined, true),
      new x.KeyUsagesExtension(x.KeyUsageFlags.digitalSignature, true),
      new x.ExtendedKeyUsageExtension(
        o.usages.map((u) => USAGE[u]),
        false,
      ),
      new x.SubjectAlternativeNameExtension(
        [
          { type: 'dns', value: name },
          ...(o.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
          { type: 'url', value: `ferry://role/${o.role}` },
        ],
        false,
      ),
      await x.AuthorityKeyIdentifierExtension.create(ca.publicKey),
    ],
  });
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const paths = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`), ca: join(caDir, 'ca.crt') };
  writeFileSync(
    paths.key,
    `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END PRIVATE KEY-----\n`,
    { mode: 0o600 },
  );
  writeFileSync(paths.cert, cert.toString('pem'));
  return paths;
}
