// @peculiar/x509 on Node's WebCrypto, loaded once on first use: only issuing certificates and reading the
// revocation list need it, and every CLI command imports the PKI module for its TLS options.
import { webcrypto } from 'node:crypto';

export type X509Lib = typeof import('@peculiar/x509');
let x509Lib: Promise<X509Lib> | undefined;

/** The library, with its crypto provider set. Its dependency injection (tsyringe) needs Reflect metadata first. */
export function loadX509(): Promise<X509Lib> {
  x509Lib ??= (async () => {
    await import('reflect-metadata');
    const lib = await import('@peculiar/x509');
    lib.cryptoProvider.set(webcrypto as unknown as Parameters<typeof lib.cryptoProvider.set>[0]);
    return lib;
  })();
  return x509Lib;
}
