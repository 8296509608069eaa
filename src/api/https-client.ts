// The HTTPS transport under every API client: mutual TLS, one keep-alive connection pool per TLS identity, the
// mapping of network failures and error bodies to FerryErrors, and newline-delimited JSON streams. The peer is
// pinned by name: its certificate must carry the endpoint's name, whatever address is dialled.

import type { IncomingMessage } from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { FerryError, type FerryErrorJSON } from '../core/errors.ts';
import { verifyFailure } from '../runtime/pki.ts';
import type { Endpoint } from './types.ts';

export type { Endpoint };

export interface TlsMaterial {
  key: Buffer;
  cert: Buffer;
  ca: Buffer;
  /** The CA's revocation list, when there is one: a server whose certificate a rotation replaced is refused. */
  crl?: Buffer;
}

export interface RequestOptions {
  json?: unknown;
  body?: Readable;
  /** Idle time (no byte either way, connecting included) after which the request fails. */
  timeoutMs?: number;
  headers?: Record<string, string>;
  /**
   * A client with a stall timeout watches a request whose answer may take long while the connection stays quiet (a
   * restore, the last pages): it asks the peer's health on the side and fails the request when the peer stops
   * answering. Default: requests without a body stream (a stream is held to the idle limit instead).
   */
  watch?: boolean;
}

/** Our own idle timer fired (not the kernel's ETIMEDOUT). */
const STALLED = 'ERR_FERRY_STALLED';

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'ECONNRESET',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/**
 * One keep-alive pool for one TLS identity. Node's https.Agent keeps separate sockets per address, port and
 * server name, so every client of a process that speaks with the same certificate shares it.
 */
export class TlsPool {
  /** Read at every request: a reload replaces it. */
  agent: https.Agent;
  /** Pools a reload replaced, closed with this one (their requests in flight finish on them). */
  private readonly retired: https.Agent[] = [];

  constructor(tls: TlsMaterial) {
    this.agent = TlsPool.make(tls);
  }

  private static make(tls: TlsMaterial): https.Agent {
    return new https.Agent({
      keepAlive: true,
      key: tls.key,
      cert: tls.cert,
      ca: tls.ca,
      ...(tls.crl ? { crl: tls.crl } : {}),
      maxSockets: 16,
    });
  }

  /**
   * New TLS material (a new revocation list): new connections use it. The idle connections made with the old one
   * are closed, so that no later request rides a handshake the new list would refuse; requests in flight finish.
   */
  reload(tls: TlsMaterial): void {
    const old = this.agent;
    this.agent = TlsPool.make(tls);
    for (const sockets of Object.values(old.freeSockets)) for (const s of sockets ?? []) s.destroy();
    // a socket that a request in flight returns to the old pool is closed rather than kept
    old.on('free', (socket) => socket.destroy());
    this.retired.push(old);
  }

  close(): void {
    this.agent.destroy();
    for (const a of this.retired.splice(0)) a.destroy();
  }
}

/** A client of one endpoint; the typed clients (agent-client.ts, controller-client.ts) add the endpoints. */
export class HttpsClient {
  readonly endpoint: Endpoint;
  private readonly pool: TlsPool;
  /** A client made from TLS material owns its pool; one made from a shared pool leaves it to its owner. */
  private readonly ownsPool: boolean;
  private readonly timeoutMs: number;
  /**
   * Between agents: the longest a request or a stream may make no progress (deadlines.stallMs) before it fails with
   * FERRY_E_PEER_TIMEOUT, and how long a watched request's health check may take.
   */
  readonly stallMs: number | undefined;

  constructor(
    endpoint: Endpoint,
    tls: TlsMaterial | TlsPool,
    opts: { timeoutMs?: number; stallMs?: number } = {},
  ) {
    this.endpoint = endpoint;
    this.stallMs = opts.stallMs;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.ownsPool = !(tls instanceof TlsPool);
    this.pool = tls instanceof TlsPool ? tls : new TlsPool(tls);
  }

  close(): void {
    if (this.ownsPool) this.pool.close();
  }

  private unreachable(err: Error & { code?: string }, path: string): FerryError {
    const ep = this.endpoint;
    const code = err.code ?? '';
    if (code === STALLED && this.stallMs !== undefined)
      return new FerryError(
        'FERRY_E_PEER_TIMEOUT',
        `host ${ep.name} (${ep.address}:${ep.port}) stopped answering: ${err.message}`,
        {
          cause: err,
          details: { path },
          hint: 'is the link between the hosts up, and the agent there alive? (deadlines.stallMs in the agent config)',
        },
      );
    // reachable, but not the host of this cluster it claims to be: not a network failure, and no retry helps
    const untrusted = verifyFailure(code, 'server');
    if (untrusted)
      return new FerryError(
        'FERRY_E_AUTH',
        `host ${ep.name} (${ep.address}:${ep.port}) presented a certificate that ${untrusted} (${code})`,
        {
          cause: err,
          details: { path },
          hint: `is ${ep.address}:${ep.port} really ${ep.name}, with a current certificate from this cluster's CA?`,
        },
      );
    const what =
      NETWORK_CODES.has(code) || code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL')
        ? code
        : err.message;
    return new FerryError(
      'FERRY_E_HOST_UNREACHABLE',
      `host ${ep.name} (${ep.address}:${ep.port}) unreachable: ${what}`,
      {
        cause: err,
        details: { path },
        hint: 'is its agent running? (ferry hosts)',
      },
    );
  }

  /** Sends a request and returns the response, its body not yet read. */
  open(method: string, path: string, opts: RequestOptions = {}): Promise<IncomingMessage> {
    const ep = this.endpoint;
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = {};
      let payload: string | undefined;
      if (opts.json !== undefined) {
        payload = JSON.stringify(opts.json);
        headers['content-type'] = 'application/json';
        headers['content-length'] = String(Buffer.byteLength(payload));
      } else if (opts.body) {
        headers['content-type'] = 'application/octet-stream';
        Object.assign(headers, opts.headers ?? {});
      }
      const req = https.request({
        host: ep.address,
        port: ep.port,
        method,
        path,
        headers,
        agent: this.pool.agent,
        servername: ep.name,
        timeout: opts.timeoutMs ?? this.timeoutMs,
      });
      let settled = false;
      const idleMs = opts.timeoutMs ?? this.timeoutMs;
      // (a stream is held to the idle limit; a quiet request to the peer's health)
      const watch = this.stallMs !== undefined && (opts.watch ?? !opts.body);
      const watchdog = watch ? this.watchPeer((err) => fail(err)) : undefined;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        watchdog?.stop();
        opts.body?.destroy();
        req.destroy();
        reject(err instanceof FerryError ? err : this.unreachable(err, path));
      };
      req.on('timeout', () =>
        fail(
          this.stallMs !== undefined
            ? Object.assign(new Error(`no progress for ${idleMs} ms`), { code: STALLED })
            : Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' }),
        ),
      );
      req.on('error', fail);
      req.on('response', (res) => {
        if (settled) return;
        settled = true;
        watchdog?.stop();
        // a response before the whole body was sent (an error): stop sending
        if (opts.body && !opts.body.readableEnded) opts.body.unpipe(req);
        res.setTimeout(0);
        req.setTimeout(0);
        resolve(res);
      });
      if (payload !== undefined) req.end(payload);
      else if (opts.body) {
        opts.body.on('error', (err) =>
          fail(
            new FerryError('FERRY_E_TRANSFER_FAILED', `reading the stream: ${err.message}`, { cause: err }),
          ),
        );
        opts.body.pipe(req);
      } else req.end();
    });
  }

  /**
   * While a quiet request waits: the peer's health, asked every half stall on another connection. A health check
   * that fails for want of an answer (not a refusal: a dead agent resets the request itself) fails the request.
   */
  private watchPeer(fail: (err: Error) => void): { stop(): void } | undefined {
    const stallMs = this.stallMs;
    if (stallMs === undefined) return undefined;
    let stopped = false;
    const loop = async () => {
      while (!stopped) {
        await new Promise((r) => setTimeout(r, stallMs / 2).unref());
        if (stopped) return;
        try {
          await this.request('GET', '/v1/health', { timeoutMs: stallMs, watch: false });
        } catch (err) {
          if (!stopped && err instanceof FerryError && err.code === 'FERRY_E_PEER_TIMEOUT') fail(err);
        }
      }
    };
    void loop();
    return {
      stop: () => {
        stopped = true;
      },
    };
  }

  /**
   * A request and its JSON answer. The server validated the request against its schema; the answer is parsed,
   * not validated again (both ends share the types).
   */
  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.open(method, path, opts);
    // the answer's body may stall as well (a cut link): the same idle limit while it is read
    if (this.stallMs !== undefined) {
      res.setTimeout(opts.timeoutMs ?? this.timeoutMs, () =>
        res.destroy(Object.assign(new Error('the answer stopped'), { code: STALLED })),
      );
    }
    const text = await readAll(res).catch((err: Error) => {
      throw this.unreachable(err, path);
    });
    const status = res.statusCode ?? 0;
    if (status >= 400) throw errorFromBody(text, status, this.endpoint.name);
    if (!text) return undefined as T;
    return JSON.parse(text) as T;
  }

  /** Reads newline-delimited JSON objects from a streaming response (no timeout: the stream may be long). */
  async ndjson<T>(
    method: string,
    path: string,
    json: unknown,
    onObject: (o: T) => void,
    opts: { idleMs?: number } = {},
  ): Promise<void> {
    const res = await this.open(method, path, { json, timeoutMs: 0 });
    const status = res.statusCode ?? 0;
    if (status >= 400) throw errorFromBody(await readAll(res), status, this.endpoint.name);
    let buf = '';
    res.setEncoding('utf8');
    // a server that writes blank lines as a heartbeat: silence past idleMs is a dead link, not a slow phase
    if (opts.idleMs)
      res.setTimeout(opts.idleMs, () =>
        res.destroy(Object.assign(new Error(`no word for ${opts.idleMs} ms`), { code: 'ETIMEDOUT' })),
      );
    await new Promise<void>((resolve, reject) => {
      res.on('close', () => {
        if (!res.complete)
          reject(this.unreachable(Object.assign(new Error('connection lost'), { code: 'ECONNRESET' }), path));
      });
      res.on('data', (chunk: string) => {
        buf += chunk;
        let nl = buf.indexOf('\n');
        while (nl >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) onObject(JSON.parse(line) as T);
          nl = buf.indexOf('\n');
        }
      });
      res.on('end', () => resolve());
      res.on('error', (err) => reject(this.unreachable(err, path)));
      res.on('aborted', () =>
        reject(this.unreachable(Object.assign(new Error('connection lost'), { code: 'ECONNRESET' }), path)),
      );
    });
  }
}

async function readAll(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** The FerryError a server sent (`{error: {code, message, ...}}`), or an internal one naming the status. */
export function errorFromBody(text: string, status: number, host: string): FerryError {
  try {
    const j = JSON.parse(text) as { error?: FerryErrorJSON };
    // a refused certificate: say which host refused it (the server's message says whose and why)
    if (j.error?.code === 'FERRY_E_AUTH' && status === 401)
      return FerryError.fromJSON({
        ...j.error,
        message: `host ${host} refused this connection: ${j.error.message}`,
      });
    if (j.error?.code) return FerryError.fromJSON(j.error);
  } catch {
    // not JSON
  }
  return new FerryError('FERRY_E_INTERNAL', `host ${host} answered ${status}: ${text.slice(0, 200)}`);
}

/** A path segment of a name (names are checked by the server; the encoding keeps a bad one a bad request). */
export function seg(s: string): string {
  return encodeURIComponent(s);
}
