// The controller API as typed methods: what agents (heartbeats) and the CLI (cluster, rebalance, drain, place)
// call.
import type { MoveRequest, MoveStarted } from './dashboard.ts';
import { HttpsClient, seg } from './https-client.ts';
import type {
  ClaimRequest,
  ClusterSummary,
  ControllerHealth,
  DashboardLogin,
  HeartbeatBody,
  HeartbeatReply,
  MigrationRecord,
  PlaceRequest,
  PlanReply,
  RebalanceRequest,
} from './types.ts';

export class ControllerClient extends HttpsClient {
  health(): Promise<ControllerHealth> {
    return this.request('GET', '/v1/health');
  }

  heartbeat(body: HeartbeatBody, opts: { timeoutMs?: number } = {}): Promise<HeartbeatReply> {
    return this.request('POST', '/v1/heartbeat', { json: body, ...opts });
  }

  cluster(): Promise<ClusterSummary> {
    return this.request('GET', '/v1/cluster');
  }

  rebalance(req: RebalanceRequest): Promise<PlanReply> {
    return this.request('POST', '/v1/rebalance', { json: req });
  }

  drain(host: string): Promise<PlanReply> {
    return this.request('POST', '/v1/drain', { json: { host } });
  }

  /** Claims a name (and address) cluster-wide while a container is created; held until a heartbeat shows it. */
  async claim(c: ClaimRequest, opts: { timeoutMs?: number } = {}): Promise<void> {
    await this.request('POST', '/v1/claims', { json: c, ...opts });
  }

  async releaseClaim(token: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    await this.request('DELETE', `/v1/claims/${seg(token)}`, opts);
  }

  /** The host a new container should run on (the one with the most remaining capacity). */
  async place(req: PlaceRequest): Promise<string> {
    return (await this.request<{ host: string }>('POST', '/v1/place', { json: req })).host;
  }

  migrations(): Promise<MigrationRecord[]> {
    return this.request('GET', '/v1/migrations');
  }

  /** One container to one host, queued and run by the controller like a drain's move; follow it in migrations(). */
  move(req: MoveRequest): Promise<MoveStarted> {
    return this.request('POST', '/v1/moves', { json: req });
  }

  /** A dashboard URL carrying a one-time login token (works once, for a few minutes). */
  dashboardLogin(): Promise<DashboardLogin> {
    return this.request('POST', '/v1/dashboard/login');
  }

  batch(batch: string): Promise<MigrationRecord[]> {
    return this.request('GET', `/v1/batches/${seg(batch)}`);
  }
}
