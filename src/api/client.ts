// HTTPS client for the agent API, with mutual TLS. The peer is pinned by name: its certificate must carry it.

import type { IncomingMessage } from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { FerryError, type FerryErrorJSON } from '../core/errors.ts';

export interface Endpoint {
  name: string;
  address: string;
  port: number;
}

export interface TlsMaterial {
  key: Buffer;
  cert: Buffer;
  ca: Buffer;
}

export interface RequestOptions {
  json?: unknown;
  body?: Readable;
  timeoutMs?: number;
  headers?: Record<string, string>;
}

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

export class AgentClient {
  readonly endpoint: Endpoint;
  private readonly agent: https.Agent;
  private readonly timeoutMs: number;

  constructor(endpoint: Endpoint, tls: TlsMaterial, opts: { timeoutMs?: number } = {}) {
    this.endpoint = endpoint;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.agent = new https.Agent({
      keepAlive: true,
      key: tls.key,
      cert: tls.cert,
      ca: tls.ca,
      maxSockets: 16,
    });
  }

  close(): void {
    this.agent.destroy();
  }

  private unreachable(err: Error & { code?: string }, path: string): FerryError {
    const ep = this.endpoint;
    const code = err.code ?? '';
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
        agent: this.agent,
        servername: ep.name,
        timeout: opts.timeoutMs ?? this.timeoutMs,
      });
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        opts.body?.destroy();
        req.destroy();
        reject(err instanceof FerryError ? err : this.unreachable(err, path));
      };
      req.on('timeout', () => fail(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
      req.on('error', fail);
      req.on('response', (res) => {
        if (settled) return;
        settled = true;
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

  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.open(method, path, opts);
    const text = await readAll(res).catch((err: Error) => {
      throw this.unreachable(err, path);
    });
    const status = res.statusCode ?? 0;
    if (status >= 400) throw errorFromBody(text, status, this.endpoint.name);
    if (!text) return undefined as T;
    return JSON.parse(text) as T;
  }

  /** Reads newline-delimited JSON objects from a streaming response. */
  async ndjson(method: string, path: string, json: unknown, onObject: (o: unknown) => void): Promise<void> {
    const res = await this.open(method, path, { json, timeoutMs: 0 });
    const status = res.statusCode ?? 0;
    if (status >= 400) throw errorFromBody(await readAll(res), status, this.endpoint.name);
    let buf = '';
    res.setEncoding('utf8');
    await new Promise<void>((resolve, reject) => {
      res.on('data', (chunk: string) => {
        buf += chunk;
        let nl = buf.indexOf('\n');
        while (nl >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) onObject(JSON.parse(line));
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

export function errorFromBody(text: string, status: number, host: string): FerryError {
  try {
    const j = JSON.parse(text) as { error?: FerryErrorJSON };
    if (j.error?.code) return FerryError.fromJSON(j.error);
  } catch {
    // not JSON
  }
  return new FerryError('FERRY_E_INTERNAL', `host ${host} answered ${status}: ${text.slice(0, 200)}`);
}
