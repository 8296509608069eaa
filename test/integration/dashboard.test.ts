// The dashboard in a real browser (Debian's chromium driven by playwright-core, headless) against a real
// controller and real agents: log in with the token `ferry dashboard` prints, see the hosts and their load bars,
// open a container's process tree and hover a process, filter by PID, drag a container to another host (a real
// migration with runc and CRIU) and see it arrive with its freeze time, see a migration to a stopped agent fail
// with its code and phase while the container runs on, drain a host, catch up with a drain it missed while its
// connection was cut, and be refused without a session or from another site. The screenshots in docs/ are taken
// here (with FERRY_UPDATE_DOCS=1).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { ProcessRunner } from '../../src/runtime/exec.ts';
import { startAgent, stopAgent } from '../../src/testbed/testbed.ts';
import {
  type Bed,
  containers,
  controllerPlacement,
  FERRY_ARGV,
  skipUnlessReady,
  startBed,
  waitFor,
} from './helpers.ts';

const CHROMIUM = '/usr/bin/chromium';
// The screenshots land in docs/ only when asked (FERRY_UPDATE_DOCS=1): a test run leaves the checkout as it was.
const SHOTS_TMP = process.env.FERRY_UPDATE_DOCS
  ? undefined
  : mkdtempSync(join(tmpdir(), 'ferry-dashboard-shots-'));
if (SHOTS_TMP) process.on('exit', () => rmSync(SHOTS_TMP, { recursive: true, force: true }));
const SHOTS = SHOTS_TMP ? `${SHOTS_TMP}/` : new URL('../../docs/', import.meta.url).pathname;

/** A plain HTTPS request outside the browser (the dashboard's certificate is the cluster CA's). */
function https(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: opts.method ?? 'GET', headers: opts.headers, rejectUnauthorized: false },
      (res) => {
        let body = '';
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

async function hostOf(bed: Bed, name: string): Promise<string | undefined> {
  return (await containers(bed)).find((c) => c.name === name)?.host;
}

const shot = (page: Page, name: string) => page.screenshot({ path: `${SHOTS}dashboard-${name}.png` });

/**
 * Debian's chromium, started in the testbed's client namespace: the browser sits on the LAN where a user's would,
 * and it does not see the interfaces other testbeds add and remove on this machine meanwhile (Chromium aborts
 * requests in flight with ERR_NETWORK_CHANGED when the host's addresses change).
 */
function chromiumIn(netns: string, dir: string): string {
  const path = join(dir, 'chromium');
  writeFileSync(path, `#!/bin/sh\nexec ip netns exec ${netns} ${CHROMIUM} "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

test('dashboard: log in, trees, filter, drag to migrate, a failure shown with the container still home, drain, refusals', async (t) => {
  if (!skipUnlessReady(t)) return;
  if (!existsSync(CHROMIUM)) {
    if (process.env['CI']) assert.fail('chromium missing on CI (make setup installs it)');
    t.skip('needs Debian chromium (make setup installs it)');
    return;
  }
  // a long heartbeat timeout: a stopped agent stays "up" long enough for the controller to try it
  const bed = await startBed(['a', 'b'], {
    controller: { heartbeatMs: 500, heartbeatTimeoutMs: 60_000, rebalanceIntervalMs: 0, cooldownMs: 0 },
  });
  let browser: Browser | undefined;
  const launcher = mkdtempSync(join(tmpdir(), 'ferry-dash-'));
  t.after(async () => {
    await browser?.close().catch(() => {});
    rmSync(launcher, { recursive: true, force: true });
    await bed.down();
  });
  const deps = { runner: new ProcessRunner(), env: bed.env, ferryArgv: FERRY_ARGV };
  const tree = ['/bin/busybox', 'sh', '-c', '/bin/busybox sleep 100000 & /bin/busybox sleep 100001 & wait'];
  for (const [name, host] of [
    ['web', 'a'],
    ['idle', 'b'],
  ] as const) {
    const r = await bed.cli(['run', '--host', host, '--name', name, '--', ...tree]);
    assert.equal(r.code, 0, r.stderr);
  }

  const login = await bed.cli(['dashboard', '--json']);
  assert.equal(login.code, 0, login.stderr);
  const { url } = JSON.parse(login.stdout) as { url: string };
  const origin = new URL(url).origin;

  // no session: nothing, not even the page
  assert.equal((await https(`${origin}/api/cluster`)).status, 401);
  assert.equal((await https(`${origin}/`)).status, 401);

  browser = await chromium.launch({
    executablePath: chromiumIn(bed.state.client.netns, launcher),
    headless: true,
  });
  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 800 },
  });
  const page = await context.newPage();
  await page.goto(url);
  assert.equal(new URL(page.url()).pathname, '/', 'the token leaves the address bar');
  const cookie = (await context.cookies()).find((c) => c.name === 'ferry_session');
  assert.ok(cookie?.httpOnly && cookie.secure && cookie.sameSite === 'Strict', JSON.stringify(cookie));
  // the token worked once
  assert.equal((await https(url)).status, 401, 'a used token is refused');

  // overview: both hosts up with their load bars and containers
  const hostA = page.getByRole('region', { name: 'host a' });
  const hostB = page.getByRole('region', { name: 'host b' });
  await hostA.getByRole('treeitem', { name: 'container web' }).waitFor();
  await hostB.getByRole('treeitem', { name: 'container idle' }).waitFor();
  for (const h of ['a', 'b']) {
    await page.getByRole('meter', { name: `CPU load of ${h}` }).waitFor();
    await page.getByRole('meter', { name: `memory of ${h}` }).waitFor();
  }
  await shot(page, 'overview');

  // the process tree of web: sh with its two sleeps; a hover shows the detail card
  const web = hostA.getByRole('treeitem', { name: 'container web' });
  await web.getByRole('button', { name: 'expand web' }).click();
  const procs = web.getByRole('treeitem', { name: /^process / });
  await waitFor('three processes in the tree', async () => (await procs.count()) === 3 || undefined, 15_000);
  const sleepCmd = web.locator('span.cmd', { hasText: /^\/bin\/busybox sleep 100001$/ });
  const sleep = sleepCmd.locator('xpath=../..');
  await sleepCmd.hover();
  const card = page.getByRole('tooltip');
  await card.waitFor();
  const cardText = await card.innerText();
  assert.match(cardText, /sleep 100001/);
  assert.match(cardText, /State\s+sleeping/);
  assert.match(cardText, /Threads\s+1/);
  await shot(page, 'tree');
  await page.mouse.move(0, 0);
  // the keyboard reaches the same card: Down from the container focuses its first process, the shell
  await web.focus();
  await page.keyboard.press('ArrowDown');
  assert.match(await page.getByRole('tooltip').innerText(), /Children\s+2/);
  await page.keyboard.press('ArrowUp');

  // filter by that sleep's host pid (its pid inside the container is the same number in idle, which runs the same
  // program): only it and its parent stay, in the only container it matches
  const pid = (await sleep.getAttribute('data-pid')) ?? '';
  assert.match(pid, /^\d+$/);
  await page.getByLabel('Filter by name, PID or command').fill(pid);
  await waitFor(
    'the filter leaves the sleep and its parent',
    async () => ((await procs.count()) === 2 && (await sleep.count()) === 1) || undefined,
    15_000,
  );
  assert.equal(
    await hostB.getByRole('treeitem', { name: 'container idle' }).count(),
    0,
    'idle has no such pid',
  );
  await shot(page, 'filter');
  await page.getByLabel('Filter by name, PID or command').fill('');

  // drag web onto b: the dialog's dry run, then a real post-copy migration, its result with the freeze time
  await web.dragTo(hostB);
  const dialog = page.getByRole('dialog');
  await dialog.getByLabel('Strategy').selectOption('postcopy');
  await dialog.getByTestId('plan-strategy').filter({ hasText: 'postcopy' }).waitFor();
  await shot(page, 'migrate');
  // every figure the live progress shows is recorded as the page draws it (it may be gone by the time a test
  // could look), and the dialog as it was drawn while post-copy pages were still arriving, for its screenshot
  await page.evaluate(`(() => {
    const seen = (window.__figures = []);
    new MutationObserver(() => {
      for (const el of document.querySelectorAll('[data-testid=figures], [data-testid=pages-remaining]'))
        if (seen.at(-1) !== el.textContent) seen.push(el.textContent);
      const left = document.querySelector('[data-testid=pages-remaining]');
      if (left && left.textContent !== '0') window.__live = document.querySelector('.backdrop').outerHTML;
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
  })()`);
  await dialog.getByRole('button', { name: 'Migrate' }).click();
  const freeze = dialog.getByTestId('freeze');
  await freeze.waitFor({ timeout: 120_000 });
  assert.match(await freeze.innerText(), /\d+ ms|\d+\.\d s/);
  assert.match(await dialog.innerText(), /web now runs on b/);
  // the phases reached the page live, from the controller's event stream, as the source agent ran them
  const seen = await dialog.getByTestId('phases-seen').innerText();
  for (const phase of ['plan', 'prepare', 'checkpoint', 'transfer', 'restore', 'confirm', 'pages'])
    assert.match(seen, new RegExp(`\\b${phase} \\d`), seen);
  // and so did the figures: bytes while they moved, and post-copy's pages down to none remaining
  const figures = await page.evaluate<string[]>('window.__figures');
  assert.ok(
    figures.some((f) => /(^|: )[1-9][\d.]* (B|KiB|MiB)/.test(f)),
    `a progress update with bytes was shown: ${JSON.stringify(figures)}`,
  );
  assert.match(
    await dialog.getByTestId('pages-seen').innerText(),
    /[1-9][\d,]* pages fetched .* 0 remaining/,
  );
  await shot(page, 'result');
  // the live progress as it was drawn mid-way, put back over the page for its picture (best effort: a move that
  // ended between two draws leaves the old picture)
  if (await page.evaluate<boolean>('window.__live !== undefined')) {
    await page.evaluate(`(() => {
      const now = document.querySelector('.backdrop');
      now.style.visibility = 'hidden';
      now.insertAdjacentHTML('afterend', window.__live);
      const copy = now.nextElementSibling;
      copy.id = 'live-copy';
      // (the page's CSP drops style attributes parsed from HTML; the app sets them through the CSSOM, as here)
      for (const el of copy.querySelectorAll('[style]')) el.style.cssText = el.getAttribute('style');
    })()`);
    await shot(page, 'progress');
    await page.evaluate(`(() => {
      document.getElementById('live-copy').remove();
      document.querySelector('.backdrop').style.visibility = '';
    })()`);
  }
  await dialog.getByRole('button', { name: 'Close' }).click();
  assert.equal(await hostOf(bed, 'web'), 'b', 'the agents say web runs on b');
  await hostB.getByRole('treeitem', { name: 'container web' }).waitFor({ timeout: 15_000 });

  // by keyboard, to a host whose agent was stopped: the error with its code and phase, web still on b
  const hA = bed.state.hosts.find((h) => h.name === 'a')!;
  await stopAgent(bed.state, hA);
  const menuButton = hostB.getByRole('button', { name: 'Move web to…' });
  await menuButton.focus();
  await page.keyboard.press('Enter');
  await waitFor(
    'the menu takes the focus',
    async () =>
      (await page.evaluate<string | null>('document.activeElement?.getAttribute("role") ?? null')) ===
        'menuitem' || undefined,
    10_000,
  );
  await page.keyboard.press('Enter');
  await dialog.getByRole('heading', { name: /Migrate web: b → a/ }).waitFor();
  // the dry run cannot reach a's agent either and says so; the migration itself is still offered
  await dialog.getByText(/The dry run failed/).waitFor();
  await page.keyboard.press('Tab'); // strategy -> downtime budget
  await page.keyboard.press('Tab'); // -> Migrate
  await page.keyboard.press('Enter');
  const failure = dialog.getByRole('alert', { name: 'result' });
  await failure.waitFor({ timeout: 120_000 }).catch(async (err: Error) => {
    // what the page showed instead, and where the keys went: the difference between a migration that never ended
    // and a keystroke that never reached the button
    const shown = await dialog.innerText().catch(() => '(no dialog)');
    const focused = await page.evaluate<string>(
      'document.activeElement?.outerHTML.slice(0, 200) ?? "nothing"',
    );
    throw new Error(
      `no result in the dialog: it shows ${JSON.stringify(shown)}; the focus is on ${focused}`,
      {
        cause: err,
      },
    );
  });
  assert.equal(await failure.getByTestId('error-code').innerText(), 'FERRY_E_HOST_UNREACHABLE');
  assert.equal(await failure.getByTestId('error-phase').innerText(), 'plan');
  await failure.getByText('web is still running on b.').waitFor();
  assert.equal(await hostOf(bed, 'web'), 'b', 'the agents say web still runs on b');
  await shot(page, 'failure');
  await page.keyboard.press('Escape');
  const activity = page.getByRole('complementary', { name: 'activity' });
  await activity.getByText(/web: b → a — failed: FERRY_E_HOST_UNREACHABLE \(plan\)/).waitFor();

  // history: both migrations, the chart of freeze time against memory
  await page.getByRole('tab', { name: 'History' }).click();
  await page.getByRole('img', { name: /freeze time against memory size/ }).waitFor();
  const rows = page.locator('.history tbody tr');
  await waitFor('two migrations in the history', async () => (await rows.count()) >= 2 || undefined, 15_000);
  await page.getByRole('button', { name: 'web' }).first().click();
  await page.getByRole('list', { name: 'phase timeline' }).first().waitFor();
  await shot(page, 'history');

  // drain b once a is back: a dry run with loads before and after, then applied; its moves show as they run
  await startAgent(bed.state, hA, deps);
  await page.getByRole('tab', { name: 'Rebalance & drain' }).click();
  await page.getByRole('combobox', { name: 'Host' }).selectOption('b');
  await page.getByRole('button', { name: 'Preview drain' }).click();
  const map = page.getByRole('region', { name: 'migration map' });
  await map.getByText(/web: b → a/).waitFor();
  await map.getByRole('meter', { name: 'b load after' }).waitFor();
  await shot(page, 'drain');
  await map.getByRole('button', { name: 'Apply' }).click();
  await waitFor(
    'the drain moved both containers to a',
    async () => {
      const list = await containers(bed);
      return (list.length === 2 && list.every((c) => c.host === 'a' && c.status === 'running')) || undefined;
    },
    120_000,
  );
  // a drain's move opens the same progress and result view as a dragged one
  await activity.getByRole('button', { name: /idle: b → a — done/ }).click({ timeout: 30_000 });
  await dialog.getByTestId('freeze').waitFor();
  assert.match(await dialog.innerText(), /idle now runs on a/);
  await dialog.getByRole('button', { name: 'Close' }).click();

  // a narrow window still shows the hosts, one under the other
  await page.getByRole('tab', { name: 'Overview' }).click();
  await page.setViewportSize({ width: 420, height: 800 });
  await page
    .getByRole('region', { name: 'host a' })
    .getByRole('treeitem', { name: 'container idle' })
    .waitFor({
      timeout: 15_000,
    });
  await shot(page, 'narrow');

  // a forged form post from a page of another origin in the same browser: the session cookie stays home
  // (SameSite=Strict), so it is refused
  const evilPage = `<form method="POST" action="${origin}/api/drain" enctype="text/plain"><input name='{"host":"a","x":"' value='"}'></form><script>document.forms[0].submit()</script>`;
  const forged = await context.newPage();
  const answer = forged.waitForResponse((r) => r.url() === `${origin}/api/drain`);
  await forged.goto(`data:text/html,${encodeURIComponent(evilPage)}`);
  assert.equal((await answer).status(), 401, 'no session cookie on a cross-site post');
  // with the stolen cookie but without the page's CSRF token, or from another origin: refused as well
  const headers = { cookie: `ferry_session=${cookie?.value}`, 'content-type': 'application/json' };
  const noToken = await https(`${origin}/api/drain`, { method: 'POST', headers, body: '{"host":"a"}' });
  assert.equal(noToken.status, 403);
  assert.match(noToken.body, /FERRY_E_AUTH_CSRF/);
  const otherOrigin = await https(`${origin}/api/drain`, {
    method: 'POST',
    headers: { ...headers, origin: 'https://evil.example' },
    body: '{"host":"a"}',
  });
  assert.equal(otherOrigin.status, 403);
  const list = await containers(bed);
  assert.ok(
    list.every((c) => c.host === 'a'),
    'nothing moved',
  );

  // a dropped connection: the stream is cut (its socket destroyed in the browser's namespace) and reconnecting is
  // refused while a drain moves both containers back to b; once the page reconnects, its activity shows the moves
  // it missed (the stream opens with every record)
  const dash = new URL(origin);
  const inClient = (...argv: string[]) =>
    execFileSync('ip', ['netns', 'exec', bed.state.client.netns, ...argv], { stdio: 'pipe' });
  const refuse = [
    'OUTPUT',
    '-p',
    'tcp',
    '-d',
    dash.hostname,
    '--dport',
    dash.port,
    '-j',
    'REJECT',
    '--reject-with',
    'tcp-reset',
  ];
  // (the controller's picture first: a host's last heartbeat from before the first drain could still list a
  // container there, and the drain would find no room for one of that name)
  await waitFor(
    'the controller sees both containers on a only',
    async () =>
      (await controllerPlacement(bed)).map((w) => w.split(':')[0]).join(' ') === 'idle@a web@a' || undefined,
    15_000,
  );
  inClient('iptables', '-I', ...refuse);
  try {
    inClient('ss', '-K', 'dst', dash.hostname, 'dport', '=', dash.port);
    await page.getByText('reconnecting…').waitFor({ timeout: 15_000 });
    const drained = await bed.cli(['drain', 'a', '--json']);
    assert.equal(drained.code, 0, drained.stderr);
    assert.ok(
      (await containers(bed)).every((c) => c.host === 'b'),
      'the drain moved both containers to b',
    );
    assert.equal(await page.getByText('live', { exact: true }).count(), 0, 'the page was away meanwhile');
  } finally {
    inClient('iptables', '-D', ...refuse);
  }
  await page.getByText('live', { exact: true }).waitFor({ timeout: 30_000 });
  await activity.getByRole('button', { name: /idle: a → b — done/ }).waitFor({ timeout: 15_000 });

  // logging out ends the session: the page asks for a login, the cookie opens nothing
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByRole('heading', { name: 'ferry dashboard' }).waitFor();
  assert.equal(
    (await https(`${origin}/api/cluster`, { headers: { cookie: `ferry_session=${cookie?.value}` } })).status,
    401,
  );
});
