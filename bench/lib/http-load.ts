/**
 * Keep-alive GET load for the stateless app (bench/apps/hello): `conns` loops, each
 * with its own one-socket keep-alive agent, back to back. No retries: every error is
 * a failed request, counted by kind (a reset or hang-up on a reused connection, a
 * refused connect, a timeout, a non-200).
 */
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { LoadLoops } from './load-loops.js';
import { Samples } from './stats.js';

export class HttpLoad extends LoadLoops {
  readonly latencies = new Samples();
  /** Answers per server pid. */
  readonly byPid = new Map<number, number>();
  /**
   * Failure episodes: runs of consecutive failed requests on one connection loop, each
   * counted once. Loops do not pause after a failure (a refused connect on loopback
   * fails in ~0.1 ms), so the failed-request count grows with the length of an outage
   * times the spin rate; episodes do not.
   */
  episodes = 0;

  constructor(
    private readonly port: number,
    conns: number,
    private readonly timeoutMs = 10_000,
  ) {
    super();
    for (let i = 0; i < conns; i++) this.loops.push(this.loop());
  }

  private async loop(): Promise<void> {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    let failing = false;
    while (this.running) {
      const t0 = performance.now();
      let kind: string | undefined;
      try {
        const { status, body } = await get(this.port, agent, this.timeoutMs);
        if (status !== 200) kind = `http_${status}`;
        else {
          const pid = (JSON.parse(body) as { pid: number }).pid;
          this.byPid.set(pid, (this.byPid.get(pid) ?? 0) + 1);
        }
      } catch (err) {
        kind = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      }
      if (kind !== undefined) {
        this.fail(kind);
        if (!failing) this.episodes++;
      }
      failing = kind !== undefined;
      this.requests++;
      this.latencies.push(performance.now() - t0);
    }
    agent.destroy();
  }
}

function get(port: number, agent: http.Agent, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'GET', path: '/', agent, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('request timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end();
  });
}
