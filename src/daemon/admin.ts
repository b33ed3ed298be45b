import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { lstatSync, mkdirSync, type Stats } from 'node:fs';
import { chmod, open, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { BatonError, ConfigError, errorMessage } from '../os/errors.js';
import { AuditLog, type AuditLimits } from './audit.js';
import { ConnectionGuard, isLoopback } from './conn-guard.js';
import { jsonTextDepth, MAX_JSON_DEPTH, safeJson } from '../os/json-limits.js';
import { readStateFile, setAside, tightenDir, UnsafePathError } from '../os/secure-fs.js';
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
 * Roles read < write < admin (ROLE_OVERRIDES / requiredRole below), enforced on every
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

// ---------------------------------------------------------------- roles and tokens

export const ADMIN_ROLES = ['read', 'write', 'admin'] as const;
export type AdminRole = (typeof ADMIN_ROLES)[number];
const RANK: Record<AdminRole, number> = { read: 0, write: 1, admin: 2 };

/**
 * Routes that need more than the rule in requiredRole gives them. `stop` ends the
 * service (an upgrade keeps it serving), so it is admin; a monitoring token (read) or a
 * deploy token (write) cannot take the service down.
 */
export const ROLE_OVERRIDES: Readonly<Record<string, AdminRole>> = {
  'POST /v1/stop': 'admin',
};

/**
 * The role a route ("METHOD /pattern", as in AdminServerOptions.routes) needs: its
 * override, else read for GET/HEAD and write for every other method, so a route added
 * later is guarded the day it exists.
 */
export function requiredRole(routeKey: string): AdminRole {
  const o = ROLE_OVERRIDES[routeKey];
  if (o) return o;
  const method = routeKey.slice(0, routeKey.indexOf(' '));
  return method === 'GET' || method === 'HEAD' ? 'read' : 'write';
}

export function roleAllows(have: AdminRole, need: AdminRole): boolean {
  return RANK[have] >= RANK[need];
}

const TOKEN_RE = /^[\x21-\x7e]{32,512}$/;

/**
 * The per-role tokens: `<dir>/<role>.token` (dir 0700, files 0600), 32 random bytes as
 * hex, made at start when absent (an operator may also write their own: 32..512
 * printable characters). Only SHA-256 digests stay in memory; a presented token is
 * hashed and compared with every role's digest in constant time (timingSafeEqual on
 * equal-length digests, no early exit). Read at start: to rotate a token, replace its
 * file and restart `baton run`. Tokens are never logged.
 */
export class AdminTokens {
  private constructor(
    readonly dir: string,
    private readonly digests: ReadonlyMap<AdminRole, Buffer>,
  ) {}

  static async ensure(dir: string, log: Logger): Promise<AdminTokens> {
    prepareTokensDir(dir, log);
    const digests = new Map<AdminRole, Buffer>();
    const seen = new Map<string, AdminRole>();
    for (const role of ADMIN_ROLES) {
      const file = tokenPath(dir, role);
      // O_NOFOLLOW | O_NONBLOCK + fstat: a link, a FIFO, a device, another user's file or one
      // others may read is never read (nor chmod-ed): it is set aside and a new token made.
      let read = await readStateFile(file, MAX_TOKEN_FILE_BYTES, { private: true });
      if (read.kind === 'untrusted') {
        const aside = await setAside(file, 'untrusted');
        log.warn({ event: 'admin.token_untrusted', role, file, setAsideAs: aside, reason: read.reason }, `token file ${file} ${read.reason}: it cannot be trusted; set aside as ${aside}, making a new ${role} token`);
        read = { kind: 'missing' };
      }
      let created = false;
      if (read.kind === 'missing') {
        created = await createToken(file);
        read = await readStateFile(file, MAX_TOKEN_FILE_BYTES, { private: true });
        if (read.kind !== 'ok') throw new UnsafePathError('E_UNSAFE_PATH', `token file ${file}: ${read.kind === 'untrusted' ? read.reason : 'vanished'} right after it was made`, { path: file });
      }
      const token = read.text.trim();
      if (!TOKEN_RE.test(token)) {
        throw new ConfigError('E_CONFIG', `${file}: expected a token of 32..512 printable characters without spaces (baton writes 64 hex digits); delete the file to have a new one made`, { field: 'tokens' });
      }
      const digest = sha256(token);
      const dup = seen.get(digest.toString('hex'));
      if (dup) throw new ConfigError('E_CONFIG', `${file}: the same token as ${tokenPath(dir, dup)}; every role needs its own token`, { field: 'tokens' });
      seen.set(digest.toString('hex'), role);
      digests.set(role, digest);
      if (created) log.info({ event: 'admin.token_created', role, file }, `made the ${role} token ${file}`);
    }
    return new AdminTokens(dir, digests);
  }

  /** The role of a presented token, or undefined when it is none of ours. */
  roleOf(token: string): AdminRole | undefined {
    const d = sha256(token);
    let found: AdminRole | undefined;
    for (const role of ADMIN_ROLES) if (timingSafeEqual(d, this.digests.get(role)!) && found === undefined) found = role;
    return found;
  }
}

/** A token file is 32..512 characters and a newline: anything much larger is not one. */
const MAX_TOKEN_FILE_BYTES = 1024;

/**
 * The tokens dir: made 0700 when absent; refused when it is a link, not a directory or
 * not ours; tightened to 0700 (through an O_NOFOLLOW descriptor) when others may read it.
 */
function prepareTokensDir(dir: string, log: Logger): void {
  let st: Stats;
  try {
    st = lstatSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    mkdirSync(dir, { mode: 0o700 });
    st = lstatSync(dir);
  }
  const me = process.getuid?.();
  if (st.isSymbolicLink()) throw new UnsafePathError('E_UNSAFE_PATH', `token dir ${dir} is a symbolic link; refusing to use it (remove it to have a new one made)`, { path: dir });
  if (!st.isDirectory()) throw new UnsafePathError('E_UNSAFE_PATH', `token dir ${dir} is not a directory; refusing to use it`, { path: dir });
  if (me !== undefined && st.uid !== me) throw new UnsafePathError('E_UNSAFE_PATH', `token dir ${dir} is owned by uid ${st.uid}, not by this user (uid ${me}); refusing to use it`, { path: dir });
  const was = tightenDir(dir);
  if (was !== undefined) log.warn({ event: 'admin.tokens_dir_mode', dir, mode: was.toString(8) }, `token dir ${dir} was mode ${was.toString(8)}; set to 0700 (every token file in it is checked)`);
}

export function tokenPath(dir: string, role: AdminRole): string {
  return path.join(dir, `${role}.token`);
}

/** Creates the token file when absent ('wx': an existing token is never overwritten). */
async function createToken(file: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(file, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    await fh.writeFile(`${randomBytes(32).toString('hex')}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return true;
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

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

  async close(): Promise<void> {
    // Let replies in flight (the answer to POST /v1/stop) finish; cut what is left after 1 s.
    const servers = [this.server, ...(this.tcpServer ? [this.tcpServer] : [])];
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

// ---------------------------------------------------------------- client (the CLI)

export class AdminClientError extends BatonError {}

export interface ClientReply {
  status: number;
  body: Record<string, unknown>;
}

/** Where a client sends admin requests: the Unix socket (default) or a TCP listener, with an optional token. */
export interface AdminTarget {
  socketPath?: string | undefined;
  tcp?: { host: string; port: number } | undefined;
  /** Sent as "Authorization: Bearer <token>"; required on TCP. */
  token?: string | undefined;
}

/**
 * One request to the admin API (a socket path, or an AdminTarget). For NDJSON replies,
 * `onLine` gets every line but the last; the last line is the returned body. A progress
 * line (a `type` other than "result") is passed on as soon as it arrives, not when the
 * next one does, so a live display does not lag one step behind. Connect
 * failures are E_NOT_RUNNING (no socket / nobody listening).
 */
export function adminRequest(
  target: string | AdminTarget,
  method: string,
  urlPath: string,
  body?: unknown,
  opts: { onLine?: (line: Record<string, unknown>) => void; timeoutMs?: number } = {},
): Promise<ClientReply> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const t: AdminTarget = typeof target === 'string' ? { socketPath: target } : target;
    const where = t.tcp ? `tcp://${t.tcp.host.includes(':') ? `[${t.tcp.host}]` : t.tcp.host}:${t.tcp.port}` : t.socketPath;
    const req = http.request(
      {
        ...(t.tcp ? { host: t.tcp.host, port: t.tcp.port } : { socketPath: t.socketPath }),
        method,
        path: urlPath,
        headers: {
          'content-type': 'application/json',
          ...(t.token !== undefined && { authorization: `Bearer ${t.token}` }),
          ...(payload !== undefined && { 'content-length': Buffer.byteLength(payload) }),
          'x-baton-client-pid': String(process.pid),
          'x-baton-client-uid': String(process.getuid?.() ?? ''),
          'x-baton-client-user': safeUser(),
        },
        timeout: opts.timeoutMs ?? 0,
      },
      (res) => {
        res.setEncoding('utf8');
        let buf = '';
        let last: Record<string, unknown> | undefined;
        let lastProgress: Record<string, unknown> | undefined;
        const ndjson = String(res.headers['content-type'] ?? '').startsWith('application/x-ndjson');
        const take = (line: string): void => {
          if (line.trim() === '') return;
          let parsed: Record<string, unknown>;
          try {
            parsed = JSON.parse(line) as Record<string, unknown>;
          } catch {
            parsed = { error: { code: 'E_BAD_REPLY', message: `unparseable reply line: ${line.slice(0, 200)}` } };
          }
          if (last !== undefined) opts.onLine?.(last);
          last = undefined;
          if (ndjson && typeof parsed.type === 'string' && parsed.type !== 'result') {
            lastProgress = parsed;
            opts.onLine?.(parsed);
          } else {
            last = parsed;
          }
        };
        res.on('data', (chunk: string) => {
          buf += chunk;
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            take(buf.slice(0, nl));
            buf = buf.slice(nl + 1);
          }
        });
        res.on('end', () => {
          take(buf);
          last ??= lastProgress;
          if (last === undefined) return reject(new AdminClientError('E_BAD_REPLY', `empty reply from the supervisor (HTTP ${res.statusCode})`));
          resolve({ status: res.statusCode ?? 0, body: last });
        });
        res.on('error', reject);
        res.on('aborted', () => reject(new AdminClientError('E_CONNECTION_LOST', 'the supervisor closed the connection before the reply was complete')));
      },
    );
    req.on('timeout', () => req.destroy(new AdminClientError('E_TIMEOUT', `no reply from the supervisor within ${opts.timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof AdminClientError) return reject(err);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        return reject(new AdminClientError('E_NOT_RUNNING', t.tcp ? `no supervisor answers at ${where}` : `no supervisor is running for this state dir (nothing answers at ${where})`));
      }
      if (err.code === 'EACCES') return reject(new AdminClientError('E_ACCESS', `permission denied on ${where}: the admin socket is only for the user baton runs as (and root)`));
      if (err.code === 'ECONNRESET') return reject(new AdminClientError('E_CONNECTION_LOST', 'the supervisor closed the connection'));
      reject(new AdminClientError('E_ADMIN', `admin request failed: ${errorMessage(err)}`));
    });
    req.end(payload);
  });
}

/** Is a supervisor answering on this admin socket? (A stale socket file refuses.) */
export function adminSocketLive(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function safeUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    return '';
  }
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
