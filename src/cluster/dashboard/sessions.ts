// The dashboard's logins: one-time tokens that `ferry dashboard` asks for (over the controller's mutual-TLS API)
// and the browser sessions they turn into. A browser has no client certificate, so the token in the printed URL
// is its only way in: it works once, and only for a few minutes. Sessions live in memory: a controller restart
// logs every browser out, which is the safe direction.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { FerryError } from '../../core/errors.ts';

export const LOGIN_TOKEN_TTL_MS = 5 * 60_000;
export const SESSION_TTL_MS = 12 * 3600_000;
export const SESSION_COOKIE = 'ferry_session';

export interface Session {
  id: string;
  /** Sent back by the page in the x-ferry-csrf header of every state-changing call. */
  csrf: string;
  expiresAt: number;
}

const secret = () => randomBytes(32).toString('base64url');

export class DashboardLogins {
  private readonly tokens = new Map<string, number>();
  private readonly sessions = new Map<string, Session>();
  private readonly now: () => number;

  constructor(opts: { now?: () => number } = {}) {
    this.now = opts.now ?? Date.now;
  }

  /** A fresh login token and when it stops working. */
  issueToken(): { token: string; expiresAt: number } {
    this.sweep();
    const token = secret();
    const expiresAt = this.now() + LOGIN_TOKEN_TTL_MS;
    this.tokens.set(token, expiresAt);
    return { token, expiresAt };
  }

  /** Spends a login token on a new session; a token works once, and not after it expired. */
  login(token: string | undefined): Session {
    this.sweep();
    const expires = token === undefined ? undefined : this.tokens.get(token);
    if (token !== undefined) this.tokens.delete(token);
    if (expires === undefined || expires < this.now())
      throw new FerryError(
        'FERRY_E_AUTH',
        'this login link is unknown, used already or expired (a link works once, for five minutes)',
        { hint: 'run `ferry dashboard` for a new one' },
      );
    const s: Session = { id: secret(), csrf: secret(), expiresAt: this.now() + SESSION_TTL_MS };
    this.sessions.set(s.id, s);
    return s;
  }

  /** The session a cookie names, or a FERRY_E_AUTH error. */
  session(id: string | undefined): Session {
    const s = id === undefined ? undefined : this.sessions.get(id);
    if (!s || s.expiresAt < this.now()) {
      if (id !== undefined) this.sessions.delete(id);
      throw new FerryError('FERRY_E_AUTH', 'not logged in to the dashboard', {
        hint: 'run `ferry dashboard` and open the URL it prints',
      });
    }
    return s;
  }

  logout(id: string): void {
    this.sessions.delete(id);
  }

  /** Whether a request's CSRF header is the session's (compared in constant time). */
  static csrfMatches(s: Session, header: string | undefined): boolean {
    if (typeof header !== 'string') return false;
    const a = Buffer.from(header);
    const b = Buffer.from(s.csrf);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  private sweep(): void {
    const now = this.now();
    for (const [t, exp] of this.tokens) if (exp < now) this.tokens.delete(t);
    for (const [id, s] of this.sessions) if (s.expiresAt < now) this.sessions.delete(id);
  }
}

/** The Set-Cookie value of a session: never readable by scripts, never sent over HTTP or from another site. */
export function sessionCookie(s: Session | undefined): string {
  if (!s) return `${SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0`;
  return `${SESSION_COOKIE}=${s.id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=${Math.floor(SESSION_TTL_MS / 1000)}`;
}

/** The session id in a Cookie header. */
export function sessionIdOf(cookieHeader: string | undefined): string | undefined {
  for (const part of (cookieHeader ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === SESSION_COOKIE) return v.join('=') || undefined;
  }
  return undefined;
}
