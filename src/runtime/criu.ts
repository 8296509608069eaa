// Typed wrapper over the criu CLI for what runc does not drive: version and kernel feature checks, post-copy's
// lazy-pages daemon, and the page server a cold migration's dump sends its pages to.
import { FerryError } from '../core/errors.ts';
import { withPreload } from './criu-preload.ts';
import { type Runner, type StartedProcess, startProcess } from './exec.ts';

export const CRIU_MIN_VERSION = '4.2';

export const CRIU_FEATURES = [
  'mem_dirty_track',
  'uffd',
  'uffd-noncoop',
  'network_lock_nftables',
  'tcp_half_closed',
] as const;
export type CriuFeature = (typeof CRIU_FEATURES)[number];

export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/).map((x) => Number.parseInt(x, 10) || 0);
  const pb = b.split(/[.-]/).map((x) => Number.parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

/**
 * The agent's own certificate, key and CA (and the CA's revocation list, when the host has one) for CRIU's TLS
 * (GnuTLS) between a dump and a page server: PEM files, the agents' ECDSA P-256 keys as PKCS#8.
 */
export interface CriuTls {
  ca: string;
  cert: string;
  key: string;
  crl?: string;
}

/** CRIU's TLS options as `[option, value]` pairs, for its command line or a configuration file. */
export function criuTlsOptions(t: CriuTls): [string, string | undefined][] {
  const out: [string, string | undefined][] = [
    ['tls', undefined],
    ['tls-cacert', t.ca],
    ['tls-cert', t.cert],
    ['tls-key', t.key],
  ];
  if (t.crl) out.push(['tls-cacrl', t.crl]);
  for (const [, v] of out) {
    // (a configuration file's value ends at white space)
    if (v !== undefined && /\s/.test(v))
      throw new FerryError('FERRY_E_INPUT_ARGS', `CRIU cannot take a TLS file whose path has a space: ${v}`);
  }
  return out;
}

export class Criu {
  readonly path: string;
  private readonly runner: Runner;
  /** The library preloaded into the lazy-pages daemon and a cold move's page server (criu-preload.ts). */
  private readonly uncork: string | undefined;

  constructor(runner: Runner, path = 'criu', opts: { uncork?: string } = {}) {
    this.runner = runner;
    this.path = path;
    this.uncork = opts.uncork;
  }

  /** The installed version, or undefined when criu is missing. */
  async version(): Promise<string | undefined> {
    try {
      const r = await this.runner.run([this.path, '--version'], { allowFail: true });
      return /Version:\s*(\S+)/.exec(r.stdout)?.[1];
    } catch {
      return undefined;
    }
  }

  /** `criu check`: the basic set ferry needs (includes TCP repair). */
  async checkBasic(): Promise<{ ok: boolean; message: string }> {
    const r = await this.runner.run([this.path, 'check'], { allowFail: true });
    const text = `${r.stdout}\n${r.stderr}`.trim();
    return {
      ok: r.code === 0,
      message:
        text
          .split('\n')
          .filter((l) => !/kdat cache/.test(l))
          .slice(-1)[0] ?? '',
    };
  }

  /** The destination's lazy-pages daemon: serves the restored tasks' page faults from the source's page server. */
  lazyPages(o: { address: string; port: number; imagesDir: string }): StartedProcess {
    // without the cork its closing request, after the last page, is not held 200 ms (criu-preload.ts)
    const env = this.uncork ? { env: withPreload(this.uncork) } : {};
    return startProcess(
      [
        this.path,
        'lazy-pages',
        '--page-server',
        '--address',
        o.address,
        '--port',
        String(o.port),
        '-D',
        o.imagesDir,
        '-W',
        o.imagesDir,
        '-o',
        'lazy-pages.log',
        '-v2',
      ],
      env,
    );
  }

  /**
   * A cold migration's page server on the destination: takes one dump's connection on `port` (every address:
   * the agent fences the port to the source), writes its pagemap and page images into `imagesDir` and exits
   * when the dump closes it. TLS both ways with the agents' certificates; the client's name is not checked
   * against an address (it is the source's, which a fence already pins), its CA signature and revocation are.
   */
  pageServer(o: { port: number; imagesDir: string; tls: CriuTls }): StartedProcess {
    // its TLS handshake with the dump is not held by Nagle's algorithm (criu-preload.ts)
    const env = this.uncork ? { env: withPreload(this.uncork) } : {};
    return startProcess(
      [
        this.path,
        'page-server',
        '--images-dir',
        o.imagesDir,
        '--work-dir',
        o.imagesDir,
        '--port',
        String(o.port),
        ...criuTlsOptions(o.tls).flatMap(([k, v]) => (v === undefined ? [`--${k}`] : [`--${k}`, v])),
        '-o',
        'page-server.log',
        '-v2',
      ],
      env,
    );
  }

  async checkFeature(f: CriuFeature): Promise<{ ok: boolean; message: string }> {
    const r = await this.runner.run([this.path, 'check', '--feature', f], { allowFail: true });
    const text = `${r.stdout}\n${r.stderr}`.trim();
    const last =
      text
        .split('\n')
        .filter((l) => !/kdat cache/.test(l))
        .slice(-1)[0] ?? '';
    // criu exits 0 for some missing features; trust the words too
    const ok = r.code === 0 && /is supported|supported$/i.test(last) && !/not supported|OFF/i.test(last);
    return { ok, message: last.replace(/^Warn\s*\([^)]*\):\s*/, '') };
  }
}
