// Connects and resets at once (RST, no FIN): how ferry makes a CRIU page server fail rather than finish.
import { connect } from 'node:net';

export function resetConnection(host: string, port: number, timeoutMs = 2000): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`${host}:${port}: no connection within ${timeoutMs} ms`));
    }, timeoutMs);
    s.on('connect', () => {
      clearTimeout(timer);
      s.resetAndDestroy();
      resolve();
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
