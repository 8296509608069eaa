// The one HTTP server setup of the agent and the controller: fastify with mutual TLS, who may call each route
// (the roles of its `config`, checked before the body is read), the typebox type provider (handlers see the
// types of the schemas they are validated against), strict validation, and the single error handler: a
// FerryError becomes its status and `{error}` body, a validation failure FERRY_E_INPUT_REQUEST.
import { X509Certificate } from 'node:crypto';
import type { TLSSocket, Server as TlsServer } from 'node:tls';
import type { Static, TSchema } from '@sinclair/typebox';
import Fastify, {
  type FastifyInstance,
  type FastifyRequest,
  type FastifyTypeProvider,
  type RouteOptions,
} from 'fastify';
import { asFerryError, FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import {
  type CertInput,
  type CertPaths,
  certificateName,
  type Role,
  requireRole,
  tlsServerOptions,
  verifyFailure,
} from '../runtime/pki.ts';
import { crlPath, watchRevocationList } from '../runtime/revocation.ts';

export type { Role };

/** Who called: the role and the name (CN) of the certificate the TLS handshake verified. */
export interface Caller {
  role: Role;
  name: string;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * The roles a caller's certificate may carry to call this route. Every route declares them: a route
     * without is refused at registration, so that no endpoint is open to any certificate of the CA by omission.
     */
    roles?: readonly Role[];
    /** Only a host this server knows by name (`ApiServerOptions.knownPeer`) may call this route. */
    knownPeer?: boolean;
    /**
     * The host this request must come from (a field of its body, or the source of the migration it names); it
     * must be the caller's own name, so that one host cannot speak or act for another. Undefined: no claim.
     */
    claimedPeer?: (req: FastifyRequest) => string | undefined;
  }
  interface FastifyRequest {
    /** Set before the handler runs whenever the server knows its callers (always over TLS). */
    caller: Caller | undefined;
  }
}

/** The type provider of @fastify/type-provider-typebox: a few lines of types, not worth a dependency. */
export interface TypeBoxTypeProvider extends FastifyTypeProvider {
  validator: this['schema'] extends TSchema ? Static<this['schema']> : unknown;
  serializer: this['schema'] extends TSchema ? Static<this['schema']> : unknown;
}

export interface HttpsServerOptions {
  key: Buffer;
  cert: Buffer;
  ca: Buffer;
  /** The CA's revocation list, when there is one: certificates a rotation replaced are refused. */
  crl?: Buffer;
  requestCert: true;
  rejectUnauthorized: true;
}

export interface ApiServerOptions {
  log: Logger;
  /** Absent in unit tests (fastify's inject needs no socket). */
  https?: HttpsServerOptions;
  /** Largest JSON body accepted (fastify's default, 1 MiB, unless given); streams are not limited by it. */
  bodyLimit?: number;
  /** Whether a host may call the routes marked `knownPeer`; without it, no one may. */
  knownPeer?: (name: string) => boolean;
  /**
   * The caller's certificate when there is no TLS (unit tests through inject()). Over TLS the certificate is
   * always the one the handshake verified and this is not consulted; without either, roles are not checked.
   */
  peerCertificate?: (req: FastifyRequest) => CertInput | undefined;
}

/**
 * The caller's certificate as the handshake verified it, parsed once per connection (keep-alive reuses it).
 * FERRY_E_AUTH when the client sent none or the cluster CA does not vouch for it, naming why.
 */
const parsedPeers = new WeakMap<TLSSocket, X509Certificate | FerryError>();

function tlsPeer(socket: TLSSocket): X509Certificate {
  let peer = parsedPeers.get(socket);
  if (!peer) {
    const raw = socket.getPeerCertificate()?.raw;
    if (!raw || raw.length === 0)
      peer = new FerryError('FERRY_E_AUTH', 'the peer presented no certificate', {
        hint: 'use a certificate from the cluster CA',
      });
    else if (!socket.authorized) {
      const why = String(socket.authorizationError ?? 'unverified');
      // the name it claims (unverified, but it tells the operator whose certificate it is) and where from
      const cn = socket.getPeerCertificate()?.subject?.CN;
      const who = `${cn ? `the certificate of ${cn}` : 'the certificate'} (from ${socket.remoteAddress ?? '?'})`;
      peer = new FerryError(
        'FERRY_E_AUTH',
        `${who} ${verifyFailure(why, 'client') ?? 'does not verify'} (${why})`,
        {
          hint: "use a current certificate from this cluster's CA (ferry ca issue; after ferry ca rotate, the new one)",
          details: { verifyError: why, ...(cn ? { name: cn } : {}) },
        },
      );
    } else peer = new X509Certificate(raw);
    parsedPeers.set(socket, peer);
  }
  if (peer instanceof FerryError) throw peer;
  return peer;
}

/**
 * The caller of a route with these `roles`: FERRY_E_AUTH without a certificate, FERRY_E_AUTH_ROLE for a role
 * not among them (or none), FERRY_E_AUTH_PEER when the route takes only known hosts and this one is not.
 */
export function authorize(
  cert: CertInput | undefined,
  route: { roles: readonly Role[]; knownPeer?: boolean },
  knownPeer: (name: string) => boolean = () => false,
): Caller {
  const role = requireRole(cert, route.roles);
  const name = cert === undefined ? undefined : certificateName(cert);
  if (!name)
    throw new FerryError('FERRY_E_AUTH', 'the peer certificate names no one (no subject CN)', {
      hint: 'use a certificate from the cluster CA',
    });
  if (route.knownPeer && !knownPeer(name))
    throw new FerryError('FERRY_E_AUTH_PEER', `host ${name} is not a known peer of this host`, {
      hint: "list it under peers in this agent's config",
    });
  return { role, name };
}

/** A route as registered: its method, URL and the schemas its requests are validated against. */
export interface RouteSchemas {
  method: string;
  url: string;
  params?: TSchema;
  querystring?: TSchema;
  body?: TSchema;
}

const ROUTES = new WeakMap<object, RouteSchemas[]>();

/** Every route of a server built here, with its schemas (the schema-driven fuzz tests walk them all). */
export function routesOf(app: object): RouteSchemas[] {
  return [...(ROUTES.get(app) ?? [])];
}

/** A fastify instance whose routes take their request types from their typebox schemas. */
export type ApiServer = ReturnType<typeof buildApiServer>;

export function buildApiServer(opts: ApiServerOptions) {
  const app = Fastify({
    loggerInstance: opts.log,
    disableRequestLogging: true,
    // no coercion, no stripping: a request is valid as sent or refused
    ajv: { customOptions: { allErrors: false, coerceTypes: false, removeAdditional: false } },
    ...(opts.bodyLimit !== undefined ? { bodyLimit: opts.bodyLimit } : {}),
    // The handshake lets a client with a missing, expired or foreign certificate through so that it hears why
    // it is refused (401 FERRY_E_AUTH naming the reason) instead of a reset connection: the first hook answers
    // every request of such a connection with that refusal, before any route, body parser or handler.
    ...(opts.https ? { https: { ...opts.https, rejectUnauthorized: false } } : {}),
  }) as unknown as FastifyInstance;

  const routes: RouteSchemas[] = [];
  ROUTES.set(app, routes);
  app.addHook('onRoute', (r) => {
    const schema = (r.schema ?? {}) as { params?: TSchema; querystring?: TSchema; body?: TSchema };
    for (const method of [r.method].flat()) {
      if (method === 'HEAD') continue;
      routes.push({
        method,
        url: r.url,
        ...(schema.params ? { params: schema.params } : {}),
        ...(schema.querystring ? { querystring: schema.querystring } : {}),
        ...(schema.body ? { body: schema.body } : {}),
      });
    }
  });
  app.decorateRequest('caller', undefined);
  app.addHook('onRoute', (route: RouteOptions) => {
    if (!route.config?.roles?.length)
      throw new Error(`route ${String(route.method)} ${route.url} declares no roles (config.roles)`);
  });
  const identify = opts.https
    ? (req: FastifyRequest) => tlsPeer(req.raw.socket as TLSSocket)
    : opts.peerCertificate;
  if (identify) {
    // onRequest: before the body is read or parsed, so a caller without the role cannot even send one
    app.addHook('onRequest', async (req) => {
      const cert = identify(req);
      if (req.is404) return; // a verified caller may learn that an endpoint does not exist
      const cfg = req.routeOptions.config;
      req.caller = authorize(
        cert,
        { roles: cfg.roles ?? [], knownPeer: cfg.knownPeer === true },
        opts.knownPeer,
      );
    });
    app.addHook('preHandler', async (req) => {
      const claimed = req.routeOptions.config.claimedPeer?.(req);
      if (claimed !== undefined && claimed !== req.caller?.name)
        throw new FerryError(
          'FERRY_E_AUTH_PEER',
          `host ${req.caller?.name ?? '(unknown)'} cannot speak for host ${claimed}`,
          { hint: 'each host calls with its own certificate' },
        );
    });
  }

  // image and bundle streams pass through untouched; handlers read request.raw
  app.addContentTypeParser('application/octet-stream', (_req, _payload, done) => done(null, undefined));

  app.setErrorHandler((err, req, reply) => {
    const e = err as Error & { validation?: unknown; statusCode?: number };
    if (e.validation) {
      reply
        .code(400)
        .send({ error: { code: 'FERRY_E_INPUT_REQUEST', message: `malformed request: ${e.message}` } });
      return;
    }
    // fastify's own 4xx (a body too large, bad JSON, an unsupported media type) are the caller's mistake
    if (!(err instanceof FerryError) && e.statusCode && e.statusCode < 500) {
      const code = e.statusCode === 413 ? 'FERRY_E_INPUT_TOO_LARGE' : 'FERRY_E_INPUT_REQUEST';
      reply.code(e.statusCode).send({ error: { code, message: e.message } });
      return;
    }
    const fe = asFerryError(err);
    // who was turned away, for the operator: a wrong certificate in the cluster is a misconfiguration or worse
    if (fe.code.startsWith('FERRY_E_AUTH'))
      opts.log.warn(
        { code: fe.code, from: req.raw.socket.remoteAddress, caller: req.caller?.name, url: req.url },
        fe.message,
      );
    if (fe.status >= 500) opts.log.error({ err }, 'request failed');
    reply.code(fe.status).send({ error: fe.toJSON() });
  });
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({
      error: { code: 'FERRY_E_INPUT_REQUEST', message: `no such endpoint: ${req.method} ${req.url}` },
    });
  });
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  ROUTES.set(typed, routes);
  return typed;
}

/**
 * Keeps a listening server's trust current: when the CA's revocation list beside `tls.ca` changes (an operator
 * copied the one `ferry ca rotate` wrote), new connections are checked against it, without a restart. Connections
 * already open keep the verdict of their handshake. `clients` gets the same material for the daemon's own calls
 * (`TlsPool.reload`). Returns the function that stops watching.
 */
export function followRevocations(
  server: unknown,
  tls: CertPaths,
  log: Logger,
  clients?: (material: ReturnType<typeof tlsServerOptions>) => void,
): () => void {
  return watchRevocationList(tls.ca, () => {
    try {
      const material = tlsServerOptions(tls);
      const { key, cert, ca, crl } = material;
      (server as TlsServer).setSecureContext({ key, cert, ca, ...(crl ? { crl } : {}) });
      clients?.(material);
      log.info({ crl: crlPath(tls.ca) }, 'revocation list reloaded');
    } catch (err) {
      // a half-copied or unreadable list: keep the one in force, say so, and take the next copy
      log.error({ err, crl: crlPath(tls.ca) }, 'revocation list not reloaded');
    }
  });
}
