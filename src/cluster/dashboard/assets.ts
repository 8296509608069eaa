// The dashboard's page and its bundle. The browser code (src/web/) is bundled with esbuild when the controller
// first serves it and kept in memory: no build step to forget, no CDN (nothing outside the cluster is reachable),
// and a controller never serves a bundle older than its own code.
import { fileURLToPath } from 'node:url';
import { FerryError } from '../../core/errors.ts';

export interface Asset {
  body: Buffer;
  type: string;
}

const ENTRY = fileURLToPath(new URL('../../web/main.tsx', import.meta.url));

/** app.js and app.css, built once per process. */
export class DashboardAssets {
  private built: Promise<Map<string, Asset>> | undefined;

  get(name: string): Promise<Asset | undefined> {
    this.built ??= bundle().catch((err: unknown) => {
      this.built = undefined;
      throw new FerryError(
        'FERRY_E_INTERNAL',
        `the dashboard's bundle could not be built: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    });
    return this.built.then((m) => m.get(name));
  }
}

async function bundle(): Promise<Map<string, Asset>> {
  // loaded on first use: a controller nobody opens the dashboard of never starts esbuild's service
  const { build } = await import('esbuild');
  const r = await build({
    entryPoints: [ENTRY],
    bundle: true,
    write: false,
    outdir: '/assets',
    entryNames: 'app',
    format: 'esm',
    target: 'es2022',
    minify: true,
    jsx: 'automatic',
    jsxImportSource: 'preact',
    loader: { '.css': 'css' },
    logLevel: 'silent',
  });
  const out = new Map<string, Asset>();
  for (const f of r.outputFiles) {
    const name = f.path.split('/').at(-1) ?? '';
    const type = name.endsWith('.css') ? 'text/css; charset=utf-8' : 'text/javascript; charset=utf-8';
    out.set(name, { body: Buffer.from(f.contents), type });
  }
  return out;
}

const escapeAttr = (s: string) => s.replace(/[&"<>]/g, (c) => `&#${c.charCodeAt(0)};`);

/** The one page; the CSRF token rides in a meta tag, read once by the script (the session cookie is HttpOnly). */
export function indexHtml(csrf: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="ferry-csrf" content="${escapeAttr(csrf)}">
<title>ferry dashboard</title>
<link rel="stylesheet" href="/assets/app.css">
<script type="module" src="/assets/app.js"></script>
</head>
<body><div id="app"></div></body>
</html>
`;
}

/** For a browser without a session: what to do, no data. */
export function loginNeededHtml(message: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ferry dashboard: log in</title></head>
<body><main><h1>ferry dashboard</h1><p>${message.replace(/[&<>]/g, (c) => `&#${c.charCodeAt(0)};`)}</p>
<p>Run <code>ferry dashboard</code> on a machine with the cluster's client certificate and open the URL it prints.</p></main></body></html>
`;
}
