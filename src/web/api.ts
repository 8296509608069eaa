// The page's calls to its controller: JSON over fetch with the session cookie (sent by the browser, unreadable
// here) and the CSRF token from the page's meta tag on every state-changing call; the event stream.
import type { DashboardEvent } from '../api/dashboard.ts';

/** An error answer of the controller (the shape of FerryError's JSON). */
export interface FerryErrorJSON {
  code: string;
  message: string;
  phase?: string;
  hint?: string;
}

const csrf = document.querySelector<HTMLMetaElement>('meta[name="ferry-csrf"]')?.content ?? '';

export class ApiError extends Error {
  readonly error: FerryErrorJSON;
  constructor(error: FerryErrorJSON) {
    super(`${error.code}: ${error.message}`);
    this.error = error;
  }
}

async function call<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const res = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: method === 'POST' ? { 'content-type': 'application/json', 'x-ferry-csrf': csrf } : {},
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  if (res.status === 204) return undefined as T;
  const data = (await res.json().catch(() => ({}))) as { error?: FerryErrorJSON };
  if (!res.ok) throw new ApiError(data.error ?? { code: 'FERRY_E_INTERNAL', message: `HTTP ${res.status}` });
  return data as T;
}

export const get = <T>(path: string) => call<T>('GET', path);
export const post = <T>(path: string, body: unknown) => call<T>('POST', path, body);

/** Follows the controller's events; the browser reconnects on its own after a drop. */
export function subscribe(on: (e: DashboardEvent) => void, onState: (open: boolean) => void): () => void {
  const src = new EventSource('/api/events');
  for (const t of ['cluster', 'history', 'migration', 'progress', 'plan'] as const)
    src.addEventListener(t, (m) => on(JSON.parse((m as MessageEvent<string>).data) as DashboardEvent));
  src.onopen = () => onState(true);
  src.onerror = () => onState(false);
  return () => src.close();
}
