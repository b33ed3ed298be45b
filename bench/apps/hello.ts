/**
 * The stateless HTTP app of the restart comparison: the SAME code runs under baton,
 * under PM2 (cluster mode) and as a plain process (naive restart), so the three differ
 * only in how they restart it. (fixtures/kv cannot run under PM2: its stand-alone mode
 * takes the data-dir lock, which a PM2 reload's second process cannot get while the
 * first one lives.)
 *
 * Every answer is `200 {"pid":N}`. Shutdown (baton's drain, or SIGINT/SIGTERM when
 * not under baton) is keep-alive-safe by default: stop accepting, answer the next
 * request on each connection with `Connection: close`, end connections that stay
 * idle for HELLO_IDLE_GRACE_MS, exit (or report Drained) when none is left.
 *
 * Env:
 *   HELLO_START_DELAY_MS  start-up work before the app can serve (default 0); under
 *                         baton it runs before startBaton, like any app's own init
 *   HELLO_SHUTDOWN        not under baton: `drain` (default, as above) or `close`
 *                         (`server.close(() => process.exit(0))`, the pattern PM2's docs show)
 *   HELLO_IDLE_GRACE_MS   default 500 (same as fixtures/kv)
 *   PORT, HOST            not under baton: where to listen (default 127.0.0.1:8080)
 */
import http from 'node:http';
import net from 'node:net';
import { startBaton, type Drainable } from '../../src/app/app.js';

const env = process.env;
const START_DELAY_MS = Number(env.HELLO_START_DELAY_MS ?? 0);
const IDLE_GRACE_MS = Number(env.HELLO_IDLE_GRACE_MS ?? 500);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Conn {
  busy: number;
  idleSince: number;
}

class HelloServer {
  private servers: http.Server[] = [];
  private readonly conns = new Map<net.Socket, Conn>();
  draining = false;
  private readonly body = JSON.stringify({ pid: process.pid });

  private create(): http.Server {
    const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
      const c = this.conns.get(req.socket);
      if (c) c.busy++;
      res.once('close', () => {
        if (c) {
          c.busy--;
          c.idleSince = Date.now();
        }
      });
      req.resume();
      req.once('end', () => {
        if (this.draining) res.setHeader('Connection', 'close');
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(this.body) });
        res.end(this.body);
      });
    });
    server.on('connection', (socket: net.Socket) => {
      this.conns.set(socket, { busy: 0, idleSince: Date.now() });
      socket.once('close', () => this.conns.delete(socket));
    });
    return server;
  }

  listenFd(fd: number): void {
    this.draining = false;
    const s = this.create();
    s.listen({ fd });
    this.servers.push(s);
  }

  listenPort(port: number, host: string): Promise<void> {
    const s = this.create();
    this.servers.push(s);
    return new Promise((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, host, () => resolve());
    });
  }

  /** Keep-alive-safe drain (see the file comment); resolves with the connections left at the deadline. */
  async drain(deadline: number): Promise<number> {
    this.draining = true;
    // net's close, not http's: http.Server.close() also resets idle keep-alive sockets.
    for (const s of this.servers) net.Server.prototype.close.call(s);
    this.servers = [];
    while (this.conns.size > 0 && Date.now() < deadline) {
      const now = Date.now();
      for (const [socket, c] of this.conns) if (c.busy === 0 && now - c.idleSince >= IDLE_GRACE_MS) socket.end();
      await sleep(5);
    }
    return this.conns.size;
  }

  /** The pattern most PM2 users copy: http's close (which also drops idle keep-alive sockets), then exit. */
  closeAndExit(): void {
    let open = this.servers.length;
    for (const s of this.servers) s.close(() => --open === 0 && process.exit(0));
  }
}

if (START_DELAY_MS > 0) await sleep(START_DELAY_MS);
const app = new HelloServer();

if (env.BATON_ROLE) {
  let name = 'http';
  const drainable: Drainable = {
    async drain(deadline) {
      const left = await app.drain(deadline.getTime());
      return { openConnsRemaining: left, acceptClosed: true };
    },
    seal: () => ({ lastRevisionPerShard: {}, dataDirFingerprint: new Uint8Array(32) }),
    resumeAfterAbort: () => app.listenFd(baton.listenFd(name)),
    snapshotState: () => ({ shardCount: 0, openConns: 0, lastRevisionPerShard: {} }),
    readiness: () => ({ listeningOn: [name], healthzOk: true, advertisedRevisionPerShard: {} }),
  };
  const baton = await startBaton({ drainable, buildId: 'hello' });
  name = [...baton.listeners.keys()][0] ?? 'http';
  await baton.begin();
  app.listenFd(baton.listenFd(name));
  await baton.ready();
} else {
  const stop = (): void => {
    if (env.HELLO_SHUTDOWN === 'close') return app.closeAndExit();
    void app.drain(Date.now() + 10_000).then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  await app.listenPort(Number(env.PORT ?? 8080), env.HOST ?? '127.0.0.1');
}
