// ferry dashboard: asks the controller (with this user's client certificate) for a login URL and prints it, or
// opens it in the desktop's browser. The URL's token works once, for five minutes.
import { spawn } from 'node:child_process';
import { withCluster } from './commands.ts';

export async function dashboardCommand(o: {
  cluster?: string;
  json?: boolean;
  open?: boolean;
}): Promise<void> {
  await withCluster(o, async (ctx) => {
    const login = await ctx.controller().dashboardLogin();
    if (o.json) process.stdout.write(`${JSON.stringify(login)}\n`);
    else
      process.stdout.write(
        `${login.url}\n(one-time login link, valid until ${login.expiresAt}; the page is served with the cluster CA's certificate)\n`,
      );
    if (o.open) {
      // the desktop's own opener; a headless host has none, and the printed URL is the answer there
      const child = spawn('xdg-open', [login.url], { stdio: 'ignore', detached: true });
      child.on('error', () => process.stderr.write('ferry: could not run xdg-open; open the URL above\n'));
      child.unref();
    }
  });
}
