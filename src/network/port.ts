// Waits until a TCP port accepts connections (a server in a container has started).
import { connect } from 'node:net';

export function waitForPort(address: string, port: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = connect({ host: address, port, timeout: 500 });
      s.on('connect', () => {
        s.destroy();
        resolve();
      });
      const retry = () => {
        s.destroy();
        if (Date.now() > deadline) reject(new Error(`${address}:${port} did not open`));
        else setTimeout(attempt, 100);
      };
      s.on('error', retry);
      s.on('timeout', retry);
    };
    attempt();
  });
}
