/**
 * Target: every listener the supervisor serves (the admin socket, the TCP admin API,
 * the metrics endpoint) held by slow clients (issue #21): each must be closed by the
 * server within its bound while real requests on the same listener are all answered.
 */
import net from 'node:net';
import { adminRequest } from '../../src/daemon/admin.js';
import { request } from '../lib/http.js';
import { Rng } from '../lib/prng.js';
import { Daemon } from './daemon.js';
import { sleep, Violation } from './util.js';

/** How long each listener may keep a client that never completes a request (its guard's timeout + slack). */
const SLOW_BOUND_MS: Record<string, number> = { 'admin-socket': 5_000 + 3_000, 'admin-tcp': 2_000 + 3_000, metrics: 2_000 + 3_000 };

export interface SlowReport {
  clients: number;
  closedByServer: number;
  maxOpenMs: number;
  realRequests: number;
  realFailures: number;
}

/**
 * One slow client: connects and then says nothing (idle) or trickles a request that never
 * ends, one byte every 300 ms. Resolves when the server closes it, or when we give up at
 * `boundMs` (then `closedByServer` is false: a violation).
 */
function slowOne(connect: () => net.Socket, mode: 'idle' | 'trickle', boundMs: number): Promise<{ closedByServer: boolean; openMs: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const socket = connect();
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (closedByServer: boolean): void => {
      if (done) return;
      done = true;
      clearInterval(timer);
      clearTimeout(giveUp);
      socket.destroy();
      resolve({ closedByServer, openMs: Date.now() - t0 });
    };
    const giveUp = setTimeout(() => finish(false), boundMs);
    socket.on('error', () => finish(true));
    socket.on('close', () => finish(true));
    socket.on('data', () => undefined);
    if (mode === 'trickle') {
      const text = `GET /v1/history?limit=1 HTTP/1.1\r\nhost: baton\r\nx-slow: ${'s'.repeat(1_000)}`;
      let i = 0;
      socket.on('connect', () => {
        timer = setInterval(() => {
          if (!socket.destroyed) socket.write(text[i++ % text.length]!);
        }, 300);
      });
    }
  });
}

/**
 * Slow clients on every listener the supervisor serves (the admin socket, the TCP admin
 * API, the metrics endpoint), `perListener` at once on each: every one must be closed by
 * the server within its bound, and real requests made meanwhile must all succeed.
 */
export async function slowClients(d: Daemon, rng: Rng, out: Record<string, SlowReport>, perListener: number): Promise<void> {
  const targets = [
    { name: 'admin-socket', connect: () => net.connect(d.adminSock), real: async () => (await adminRequest(d.adminSock, 'GET', '/v1/history?limit=1', undefined, { timeoutMs: 10_000 })).status === 200 },
    {
      name: 'admin-tcp',
      connect: () => net.connect(d.adminTcpPort, '127.0.0.1'),
      real: async () => (await adminRequest({ tcp: { host: '127.0.0.1', port: d.adminTcpPort }, token: d.readToken }, 'GET', '/v1/history?limit=1', undefined, { timeoutMs: 10_000 })).status === 200,
    },
    { name: 'metrics', connect: () => net.connect(d.metricsPort, '127.0.0.1'), real: async () => (await request(d.metricsPort, 'GET', '/metrics', undefined, undefined, 10_000)).status === 200 },
  ];
  await Promise.all(
    targets.map(async (t) => {
      const rep = (out[t.name] ??= { clients: 0, closedByServer: 0, maxOpenMs: 0, realRequests: 0, realFailures: 0 });
      const bound = SLOW_BOUND_MS[t.name]!;
      const clients = Array.from({ length: perListener }, () => slowOne(t.connect, rng.chance(0.5) ? 'idle' : 'trickle', bound));
      const real = (async () => {
        for (let i = 0; i < 6; i++) {
          await sleep(400);
          rep.realRequests++;
          if (!(await t.real().catch(() => false))) rep.realFailures++;
        }
      })();
      const results = await Promise.all(clients);
      await real;
      for (const r of results) {
        rep.clients++;
        if (r.closedByServer) rep.closedByServer++;
        rep.maxOpenMs = Math.max(rep.maxOpenMs, r.openMs);
      }
      if (rep.realFailures > 0) throw new Violation(`${t.name}: ${rep.realFailures} of ${rep.realRequests} real requests failed while ${perListener} slow clients were connected`);
      if (rep.closedByServer < rep.clients) throw new Violation(`${t.name}: ${rep.clients - rep.closedByServer} slow clients were still open after ${bound} ms`);
    }),
  );
}
