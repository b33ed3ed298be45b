import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { BatonError, errorMessage } from './errors.js';

/** Connects to a Unix socket, retrying while it does not exist yet or refuses. */
export async function connectUnix(socketPath: string, timeoutMs: number): Promise<net.Socket> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect(socketPath);
        s.once('connect', () => {
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() > until) {
        throw new BatonError('E_INCUMBENT_UNREACHABLE', `cannot connect to the incumbent at ${socketPath}: ${errorMessage(err)}`);
      }
      await sleep(20);
    }
  }
}
