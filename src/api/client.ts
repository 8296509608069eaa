// The API's clients in one import: the typed agent and controller clients over the shared HTTPS transport, the
// pool that gives a process one keep-alive pool per TLS identity, and the clients of a cluster file.
export { AgentClient } from './agent-client.ts';
export { ClusterClients } from './cluster-clients.ts';
export { ControllerClient } from './controller-client.ts';
export {
  type Endpoint,
  errorFromBody,
  HttpsClient,
  type RequestOptions,
  type TlsMaterial,
  TlsPool,
} from './https-client.ts';
export { ClientPool } from './pool.ts';
