// The one HTTP server setup of the agent and the controller: fastify with mutual TLS, the typebox type provider
// (handlers see the types of the schemas they are validated against), strict validation, and the single error
// handler: a FerryError becomes its status and `{error}` body, a validation failure FERRY_E_INPUT_REQUEST.
import type { Static, TSchema } from '@sinclair/typebox';
import Fastify, { type FastifyInstance, type FastifyTypeProvider } from 'fastify';
import { asFerryError, FerryError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';

/** The type provider of @fastify/type-provider-typebox: a few lines of types, not worth a dependency. */
export interface TypeBoxTypeProvider extends FastifyTypeProvider {
  validator: this['schema'] extends TSchema ? Static<this['schema']> : unknown;
  serializer: this['schema'] extends TSchema ? Static<this['schema']> : unknown;
}

export interface HttpsServerOptions {
  key: Buffer;
  cert: Buffer;
  ca: Buffer;
  requestCert: true;
  rejectUnauthorized: true;
}

export interface ApiServerOptions {
  log: Logger;
  /** Absent in unit tests (fastify's inject needs no socket). */
  https?: HttpsServerOptions;
  /** Largest JSON body accepted (fastify's default, 1 MiB, unless given); streams are not limited by it. */
  bodyLimit?: number;
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
    ...(opts.https ? { https: opts.https } : {}),
  }) as unknown as FastifyInstance;

  // image and bundle streams pass through untouched; handlers read request.raw
  app.addContentTypeParser('application/octet-stream', (_req, _payload, done) => done(null, undefined));

  app.setErrorHandler((err, _req, reply) => {
    const e = err as Error & { validation?: unknown; statusCode?: number };
    if (e.validation) {
      reply
        .code(400)
        .send({ error: { code: 'FERRY_E_INPUT_REQUEST', message: `malformed request: ${e.message}` } });
      return;
    }
    // fastify's own 4xx (a body too large, bad JSON, an unsupported media type) are the caller's mistake
    if (!(err instanceof FerryError) && e.statusCode && e.statusCode < 500) {
      reply.code(e.statusCode).send({ error: { code: 'FERRY_E_INPUT_REQUEST', message: e.message } });
      return;
    }
    const fe = asFerryError(err);
    if (fe.status >= 500) opts.log.error({ err }, 'request failed');
    reply.code(fe.status).send({ error: fe.toJSON() });
  });
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({
      error: { code: 'FERRY_E_INPUT_REQUEST', message: `no such endpoint: ${req.method} ${req.url}` },
    });
  });
  return app.withTypeProvider<TypeBoxTypeProvider>();
}
