// The certificates both ends of the wire present: the cluster CA issues each with the role the endpoints it calls
// expect (docs/trust.md). The CA itself is runtime/pki.ts; this is its face for the CLI's `ferry ca`, which
// speaks to the wire's contract and never below it.
export {
  type CertificateInfo,
  type CertPaths,
  ClusterCA,
  DEFAULT_DAYS,
  ROLES,
  type Role,
} from '../runtime/pki.ts';
export { crlPath } from '../runtime/revocation.ts';
