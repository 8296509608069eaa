// GET /metrics: Prometheus' text format from a prom-client registry, behind the same mutual TLS as every route. A
// scraper presents a certificate of the cluster CA: a user's (`ferry ca issue --user prometheus`) or the
// controller's; an agent's certificate cannot read another agent's metrics (it has no need to).
import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import type { Role } from './http-server.ts';

export const METRICS_PATH = '/metrics';
export const METRICS_ROLES: readonly Role[] = ['client', 'controller'];

export function registerMetricsRoute(app: FastifyInstance, registry: Registry): void {
  app.get(METRICS_PATH, { config: { roles: METRICS_ROLES } }, async (_req, reply) => {
    reply.header('content-type', registry.contentType);
    reply.header('cache-control', 'no-store');
    return registry.metrics();
  });
}
