import { chmod, rm } from 'node:fs/promises';
import http from 'node:http';
import { BatonError, errorMessage } from '../os/errors.js';
import { requiredRole, roleAllows, type AdminRole, type AdminTokens } from './admin-auth.js';
import { AuditLog, type AuditLimits } from './audit.js';
import { ConnectionGuard, isLoopback } from './conn-guard.js';
import { jsonTextDepth, MAX_JSON_DEPTH, safeJson } from '../os/json-limits.js';
import type { Requester } from './jobs.js';
import type { Logger } from '../os/log.js';

/**
 * The admin API: JSON over HTTP on a Unix socket (`<stateDir>/admin.sock`, mode 0600,
 * in the 0700 state dir), so `curl --unix-socket` works; optionally the same API on a
 * TCP address (`adminListen`), where every request needs a token.
 *
 * Boundary: only processes that can open the socket file can talk to it: the state
 * dir's owner (the user baton runs as) and root. Node cannot read SO_PEERCRED, so the
 * requester's pid/uid in the audit log is what the client *claims* (headers
 * x-baton-client-pid/-uid/-user, sent by the baton CLI), marked `verified: false`.
 *
 * Roles read < write < admin (admin-auth.ts: ROLE_OVERRIDES / requiredRole), enforced on every
 * route. A request with `Authorization: Bearer <token>` has the role of that token
 * (files `<stateDir>/tokens/<role>.token`); one without a token is `admin` on the Unix
 * socket (the file permission is the boundary) and refused (401) on TCP.
 *
 * Limits: request body ≤ 64 KiB (413) and ≤ 32 levels deep (400), headers ≤ 16 KiB,
 * the whole request must arrive within 10 s (408), ≤ 32 connections per listener with a
 * connection guard (conn-guard.ts: a connection that sends no (authenticated, on TCP)
 * request within 5 s / 2 s is closed; idle ones are evicted oldest-first when full);
 * anything that is not HTTP gets a 400 and the connection is closed. A handler error or
 * an unserialisable reply is a 500, never a crash. The audit log is bounded (audit.ts).
 */

export const MAX_BODY_BYTES = 64 * 1024;
/** TCP listener (adminListen): connections in all, from one address, and how long one has to authenticate. */
export const TCP_MAX_CONNECTIONS = 32;
export const TCP_MAX_PER_ADDRESS = 16;
export const PRE_AUTH_TIMEOUT_MS = 2_000;
/** Unix socket: how long a connection has to send its first request. */
export const UNIX_FIRST_REQUEST_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 10_000;
const HEADERS_TIMEOUT_MS = 5_000;

export interface AdminRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  body: Record<string, unknown>;
  who: Requester;
  /** Path parameters of a pattern route ("GET /v1/jobs/:id" → {id}). */
  params: Record<string, string>;
}

export interface AdminReply {
  status: number;
  body: unknown;
  /** One-line result for the audit log (default: the status). */
  audit?: unknown;
}

export interface AdminContext {
  /** Switches the reply to NDJSON (200) and writes one line; the handler's return value becomes the last line. */
  stream(line: unknown): void;
  /** True once the client went away. */
  readonly closed: boolean;
}

export type AdminHandler = (req: AdminRequest, ctx: AdminContext) => Promise<AdminReply>;

/** An error reply in the one error shape: {"error": {"code", "message"}}. */
export function errorReply(status: number, code: string, message: string): AdminReply {
  return { status, body: { error: { code, message } } };
}

/** The roles and tokens (admin-auth.ts) and the client (admin-client.ts), for the tests and benches that import them from here. */
export { ADMIN_ROLES, AdminTokens, requiredRole, roleAllows, ROLE_OVERRIDES, tokenPath, type AdminRole } from './admin-auth.js';
export { AdminClientError, adminRequest, adminSocketLive, type AdminTarget, type ClientReply } from './admin-client.js';

// ---------------------------------------------------------------- server

export interface AdminServerOptions {
  socketPath: string;
  auditPath: string;
  log: Logger;
  /** Routes: "GET /v1/status" → handler; a segment ":name" matches any one segment (req.params.name). */
  routes: Record<string, AdminHandler>;
  tokens: AdminTokens;
  /** Also serve the API on this TCP address (tokens required). */
  tcp?: { host: string; port: number } | undefined;
  /** Bounds of the audit log (audit.ts; tests make them small). */
  auditLimits?: Partial<AuditLimits> | undefined;
}

type Transport = 'unix' | 'tcp';

/** How a request authenticated, for the audit log: never the token itself. */
interface Auth {
  role: AdminRole;
  /** "socket-peer" (no token, on the Unix socket) or "token:<role>". */
  via: string;
}

export class AdminServer {
  private readonly server: http.Server;
  private tcpServer: http.Server | undefined;
  /** TCP servers closed by stopListening(), whose connections close() still ends. */
  private readonly retiredTcp: http.Server[] = [];
  /** TCP requests that arrive before the Unix socket opens (start-up) get 503. */
  private serving = false;
  /** Whether listen() bound the socket path (only then does close() remove it). */
  private unixBound = false;
  private readonly auditLog: AuditLog;
  private tcpGuard: ConnectionGuard | undefined;
  private unixGuard: ConnectionGuard | undefined;

  constructor(private readonly opts: AdminServerOptions) {
    this.server = this.createServer('unix');
    this.auditLog = new AuditLog(opts.auditPath, opts.log, opts.auditLimits);
  }

  private createServer(transport: Transport): http.Server {
    const server = http.createServer(
      { requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: HEADERS_TIMEOUT_MS, maxHeaderSize: 16 * 1024, connectionsCheckingInterval: 1_000 },
      (req, res) => void this.handle(req, res, transport).catch(() => res.destroy()),
    );
    if (transport === 'unix') {
      // Only this user and root can connect here, but a stuck client of theirs must not
      // lock the CLI out either: 32 connections, one that sends no request within 5 s is
      // closed, idle ones are evicted oldest-first (conn-guard.ts).
      this.unixGuard = new ConnectionGuard({ name: 'admin-socket', log: this.opts.log, maxConnections: 32, maxPerAddress: 32, unprovenTimeoutMs: UNIX_FIRST_REQUEST_TIMEOUT_MS });
      this.unixGuard.attach(server);
    } else {
      // Anyone who can reach the port can connect: idle and unauthenticated connections
      // must not lock token holders out (conn-guard.ts: evicted oldest-first, 2 s to
      // authenticate, per-address cap, drops logged).
      this.tcpGuard = new ConnectionGuard({ name: 'admin', log: this.opts.log, maxConnections: TCP_MAX_CONNECTIONS, maxPerAddress: TCP_MAX_PER_ADDRESS, unprovenTimeoutMs: PRE_AUTH_TIMEOUT_MS });
      this.tcpGuard.attach(server);
      server.keepAliveTimeout = 5_000;
    }
    server.on('clientError', (err, socket) => {
      if (socket.writable) {
        const body = JSON.stringify({ error: { code: 'E_BAD_REQUEST', message: `malformed HTTP request: ${errorMessage(err)}` } });
        socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      } else {
        socket.destroy();
      }
      this.audit({ who: unknownRequester(), transport, method: '-', path: '-', status: 400, result: `malformed: ${errorMessage(err)}` });
    });
    server.on('error', (err) => this.opts.log.error({ event: 'admin.error', transport, err: errorMessage(err) }, `admin ${transport} listener error`));
    return server;
  }

  /**
   * Binds the TCP listener (when configured). Called before the app starts, so a taken
   * port fails the start with nothing running; it answers 503 until ready().
   */
  async listenTcp(): Promise<void> {
    const tcp = this.opts.tcp;
    if (!tcp) return;
    const server = this.createServer('tcp');
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(tcp.port, tcp.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.tcpServer = server;
    if (!isLoopback(tcp.host)) {
      this.opts.log.warn({ event: 'admin.tcp_not_loopback', address: this.tcpAddress }, `admin API on ${this.tcpAddress}: not a loopback address; tokens cross the network in clear text (plain HTTP)`);
    }
    this.opts.log.info({ event: 'admin.tcp_listening', address: this.tcpAddress }, `admin API on ${this.tcpAddress} (token required)`);
  }

  /** "tcp://HOST:PORT" of the TCP listener, or undefined. */
  get tcpAddress(): string | undefined {
    const a = this.tcpServer?.address();
    if (!a || typeof a !== 'object') return undefined;
    return `tcp://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  }

  /** Binds the socket (mode 0600). The caller made sure no live supervisor owns the path. */
  async listen(opts: { ready?: boolean } = {}): Promise<void> {
    await rm(this.opts.socketPath, { force: true });
    const old = process.umask(0o177); // born 0600: no window with a wider mode
    try {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen(this.opts.socketPath, () => {
          this.server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(old);
    }
    await chmod(this.opts.socketPath, 0o600);
    this.unixBound = true;
    if (opts.ready ?? true) this.serving = true;
  }

  /** Resolves once every audit line recorded so far is written. */
  auditFlushed(): Promise<void> {
    return this.auditLog.flushed();
  }

  /** Start answering requests (until now every request is 503 E_STARTING). */
  ready(): void {
    this.serving = true;
  }

  /**
   * Stops accepting (the socket path removed, the TCP port free) while the connections
   * open now finish: a self-upgrade hands the admin surfaces to the new supervisor, and
   * the request that asked for it still gets its answer. `listen()`/`listenTcp()` open
   * them again (a failed self-upgrade).
   */
  async stopListening(): Promise<void> {
    for (const s of [this.server, this.tcpServer]) if (s?.listening) s.close();
    if (this.tcpServer) this.retiredTcp.push(this.tcpServer);
    this.tcpServer = undefined;
    if (this.unixBound) await rm(this.opts.socketPath, { force: true });
    this.unixBound = false;
    await new Promise((r) => setImmediate(r)); // the listening fds are closed on this turn of the loop
  }

  /** Connections open on the socket and TCP listeners (those stopListening() retired included). */
  async openConnections(): Promise<number> {
    const servers = [this.server, ...(this.tcpServer ? [this.tcpServer] : []), ...this.retiredTcp];
    const counts = await Promise.all(servers.map((s) => new Promise<number>((r) => s.getConnections((err, n) => r(err ? 0 : n)))));
    return counts.reduce((a, b) => a + b, 0);
  }

  async close(): Promise<void> {
    // Let replies in flight (the answer to POST /v1/stop) finish; cut what is left after 1 s.
    const servers = [this.server, ...(this.tcpServer ? [this.tcpServer] : []), ...this.retiredTcp];
    const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => (s.listening ? s.close(() => resolve()) : resolve()))));
    for (const s of servers) s.closeIdleConnections();
    const timer = setTimeout(() => servers.forEach((s) => s.closeAllConnections()), 1_000);
    await closed;
    clearTimeout(timer);
    this.tcpGuard?.close();
    this.unixGuard?.close();
    if (this.unixBound) await rm(this.opts.socketPath, { force: true });
    this.unixBound = false;
    await this.auditLog.close();
  }

  /** Who may do what: no token on the Unix socket is admin; a token has its role; TCP needs one. */
  private authenticate(req: http.IncomingMessage, transport: Transport): Auth | { error: AdminReply; via: string } {
    const header = req.headers.authorization;
    if (header === undefined) {
      if (transport === 'unix') return { role: 'admin', via: 'socket-peer' };
      return {
        via: 'none',
        error: errorReply(401, 'E_UNAUTHENTICATED', 'the TCP admin listener needs a token: send "Authorization: Bearer <token>" (baton: --token-file FILE or $BATON_TOKEN; the tokens are <state-dir>/tokens/{read,write,admin}.token)'),
      };
    }
    const m = /^Bearer +(\S+) *$/i.exec(header);
    if (!m) return { via: 'malformed', error: errorReply(401, 'E_UNAUTHENTICATED', 'the Authorization header must be "Bearer <token>"') };
    const role = this.opts.tokens.roleOf(m[1]!);
    if (!role) return { via: 'token:invalid', error: errorReply(401, 'E_UNAUTHENTICATED', 'the token presented is not one of this supervisor\'s tokens (<state-dir>/tokens/*.token)') };
    return { role, via: `token:${role}` };
  }

  /**
   * One request. Never rejects: whatever fails in it (a handler, serialising the reply
   * or the audit line) ends as an error reply or a closed connection, never as an
   * unhandled rejection that would end the supervisor (issue #21, item 1).
   */
  private async handle(req: http.IncomingMessage, res: http.ServerResponse, transport: Transport): Promise<void> {
    try {
      await this.handleRequest(req, res, transport);
    } catch (err) {
      this.opts.log.error({ event: 'admin.request_failed', transport, err: errorMessage(err) }, 'admin request failed outside its handler');
      if (!res.headersSent && !res.destroyed) {
        const text = `${JSON.stringify({ error: { code: 'E_INTERNAL', message: 'the request failed; see the supervisor log' } })}\n`;
        res.writeHead(500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), connection: 'close' }).end(text);
      } else {
        res.destroy();
      }
    }
  }

  private async handleRequest(req: http.IncomingMessage, res: http.ServerResponse, transport: Transport): Promise<void> {
    const who = requesterOf(req);
    const url = parseTarget(req.url);
    if (!url) {
      // e.g. "GET //" or "GET *": not a path we serve; never let it reach a handler (or throw).
      const text = `${toJson(errorReply(400, 'E_BAD_REQUEST', `bad request target ${JSON.stringify(String(req.url).slice(0, 200))}: expected an absolute path`).body)}\n`;
      if (!res.destroyed) res.writeHead(400, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), connection: 'close' }).end(text);
      this.audit({ who, transport, method: req.method ?? '?', path: String(req.url).slice(0, 200), body: {}, status: 400, result: 400 });
      return;
    }
    const method = req.method ?? 'GET';
    let streaming = false;
    let reply: AdminReply;
    let body: Record<string, unknown> = {};
    const auth = this.authenticate(req, transport);
    who.auth = auth.via;
    if ('role' in auth) who.role = auth.role;
    if (transport === 'tcp' && 'role' in auth) this.tcpGuard?.prove(req.socket);
    if (transport === 'unix') this.unixGuard?.prove(req.socket);
    try {
      const { handler, params, key } = this.route(method, url.pathname);
      const need = key === undefined ? undefined : requiredRole(key);
      if (!this.serving) {
        reply = errorReply(503, 'E_STARTING', 'the supervisor is starting; try again in a moment');
        req.resume();
      } else if ('error' in auth) {
        reply = auth.error;
        req.resume();
      } else if (!handler) {
        const known = Object.keys(this.opts.routes).some((r) => matchPath(r.slice(r.indexOf(' ') + 1), url.pathname) !== undefined);
        reply = known
          ? errorReply(405, 'E_METHOD', `${method} is not allowed on ${url.pathname}`)
          : errorReply(404, 'E_NOT_FOUND', `no such endpoint: ${method} ${url.pathname}; known: ${Object.keys(this.opts.routes).join(', ')}`);
        req.resume();
      } else if (need !== undefined && !roleAllows(auth.role, need)) {
        reply = errorReply(403, 'E_FORBIDDEN', `${method} ${url.pathname} needs the ${need} role; the token presented has the ${auth.role} role`);
        req.resume();
      } else {
        const parsed = await readJsonBody(req);
        if ('error' in parsed) reply = parsed.error;
        else {
          body = parsed.body;
          const ctx: AdminContext = {
            stream: (line) => {
              if (!streaming) {
                streaming = true;
                res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
              }
              if (!res.destroyed) res.write(`${safeJson(line) ?? JSON.stringify({ type: 'error', error: { code: 'E_REPLY_UNSERIALISABLE', message: 'a progress line could not be serialised' } })}\n`);
            },
            get closed() {
              return res.destroyed || res.writableEnded;
            },
          };
          reply = await handler({ method, path: url.pathname, query: url.searchParams, body, who, params }, ctx);
        }
      }
    } catch (err) {
      this.opts.log.error({ event: 'admin.handler_failed', err: errorMessage(err) }, 'admin handler failed');
      reply = errorReply(500, err instanceof BatonError ? err.code : 'E_INTERNAL', errorMessage(err));
    }
    let json = safeJson(reply.body);
    if (json === undefined) {
      // A reply that cannot be serialised (a value nested too deep, a cycle): an error reply, not a crash.
      this.opts.log.error({ event: 'admin.reply_unserialisable', method, path: url.pathname }, 'admin reply could not be serialised');
      reply = { ...errorReply(500, 'E_REPLY_UNSERIALISABLE', `the reply to ${method} ${url.pathname} could not be serialised`), audit: 'unserialisable reply' };
      json = JSON.stringify(reply.body);
    }
    if (streaming) {
      if (!res.destroyed) res.end(`${json}\n`);
    } else if (!res.headersSent && !res.destroyed) {
      const text = `${json}\n`;
      res.writeHead(reply.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...(reply.status >= 400 && { connection: 'close' }) });
      res.end(text);
    }
    this.audit({ who, transport, method, path: url.pathname + url.search, body, status: reply.status, result: reply.audit ?? reply.status });
  }

  private route(method: string, pathname: string): { handler: AdminHandler | undefined; params: Record<string, string>; key?: string } {
    // HEAD is GET without the body (Node leaves the body out of a HEAD reply): read role, same handler.
    if (method === 'HEAD') method = 'GET';
    const exactKey = `${method} ${pathname}`;
    const exact = this.opts.routes[exactKey];
    if (exact) return { handler: exact, params: {}, key: exactKey };
    for (const [key, handler] of Object.entries(this.opts.routes)) {
      const space = key.indexOf(' ');
      if (key.slice(0, space) !== method) continue;
      const params = matchPath(key.slice(space + 1), pathname);
      if (params) return { handler, params, key };
    }
    return { handler: undefined, params: {} };
  }

  /**
   * One JSON line per admin request (reads, writes, refusals): when, who (claimed; with
   * how it authenticated and the role), over which transport, what, result.
   */
  private audit(entry: { who: Requester; transport: Transport; method: string; path: string; body?: unknown; status: number; result: unknown }): void {
    this.auditLog.record({ at: new Date().toISOString(), ...entry }, entry.status >= 400 && entry.status < 500);
  }
}

/** "/v1/jobs/:id" against "/v1/jobs/abc" → {id: "abc"}; undefined when it does not match. */
function matchPath(pattern: string, pathname: string): Record<string, string> | undefined {
  const p = pattern.split('/');
  const a = pathname.split('/');
  if (p.length !== a.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < p.length; i++) {
    const seg = p[i]!;
    if (seg.startsWith(':')) {
      if (a[i] === '') return undefined;
      try {
        params[seg.slice(1)] = decodeURIComponent(a[i]!);
      } catch {
        return undefined;
      }
    } else if (seg !== a[i]) return undefined;
  }
  return params;
}

async function readJsonBody(req: http.IncomingMessage): Promise<{ body: Record<string, unknown> } | { error: AdminReply }> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) {
    req.resume();
    return { error: errorReply(413, 'E_TOO_LARGE', `request body is ${declared} bytes; the limit is ${MAX_BODY_BYTES}`) };
  }
  const chunks: Buffer[] = [];
  let size = 0;
  let tooLarge = false;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) tooLarge = true; // keep reading (and dropping) so the reply can be sent
    else chunks.push(chunk);
  }
  if (tooLarge) return { error: errorReply(413, 'E_TOO_LARGE', `request body is over the limit of ${MAX_BODY_BYTES} bytes`) };
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return { body: {} };
  // Before parsing: a deep body parses fine but overflows the stack wherever it is walked later.
  if (jsonTextDepth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH) {
    return { error: errorReply(400, 'E_BAD_JSON', `request body is nested deeper than ${MAX_JSON_DEPTH} levels`) };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { error: errorReply(400, 'E_BAD_JSON', `request body is not valid JSON: ${errorMessage(err)}`) };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { error: errorReply(400, 'E_BAD_JSON', 'request body must be a JSON object') };
  }
  return { body: value as Record<string, unknown> };
}

function requesterOf(req: http.IncomingMessage): Requester {
  const int = (h: string | string[] | undefined): number | undefined => {
    const n = Number(Array.isArray(h) ? h[0] : h);
    return h !== undefined && Number.isInteger(n) && n >= 0 ? n : undefined;
  };
  const user = req.headers['x-baton-client-user'];
  return {
    pid: int(req.headers['x-baton-client-pid']),
    uid: int(req.headers['x-baton-client-uid']),
    user: typeof user === 'string' ? user.slice(0, 64) : undefined,
    verified: false,
  };
}

function unknownRequester(): Requester {
  return { verified: false };
}

function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x));
}

/** The request target as a URL, or undefined when it is not a plain absolute path. */
function parseTarget(target: string | undefined): URL | undefined {
  if (!target || !target.startsWith('/') || target.startsWith('//')) return undefined;
  try {
    return new URL(`http://baton${target}`);
  } catch {
    return undefined;
  }
}
