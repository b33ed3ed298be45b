import { appendFile, chmod, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import { BatonError, errorMessage } from './errors.js';
import type { Requester } from './jobs.js';
import type { Logger } from './log.js';

/**
 * The admin API: JSON over HTTP on a Unix socket (`<stateDir>/admin.sock`, mode 0600,
 * in the 0700 state dir), so `curl --unix-socket` works.
 *
 * Boundary: only processes that can open the socket file can talk to it: the state
 * dir's owner (the user baton runs as) and root. Node cannot read SO_PEERCRED, so the
 * requester's pid/uid in the audit log is what the client *claims* (headers
 * x-baton-client-pid/-uid/-user, sent by the baton CLI), marked `verified: false`.
 *
 * Limits: request body ≤ 64 KiB (413), headers ≤ 16 KiB, the whole request must
 * arrive within 10 s (408), ≤ 32 connections; anything that is not HTTP gets a 400
 * and the connection is closed. A handler error is a 500 reply, never a crash.
 */

export const MAX_BODY_BYTES = 64 * 1024;
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

export interface AdminServerOptions {
  socketPath: string;
  auditPath: string;
  log: Logger;
  /** Routes: "GET /v1/status" → handler; a segment ":name" matches any one segment (req.params.name). */
  routes: Record<string, AdminHandler>;
}

export class AdminServer {
  private readonly server: http.Server;
  private auditChain: Promise<void> = Promise.resolve();

  constructor(private readonly opts: AdminServerOptions) {
    this.server = http.createServer(
      { requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: HEADERS_TIMEOUT_MS, maxHeaderSize: 16 * 1024, connectionsCheckingInterval: 1_000 },
      (req, res) => void this.handle(req, res),
    );
    this.server.maxConnections = 32;
    this.server.on('clientError', (err, socket) => {
      if (socket.writable) {
        const body = JSON.stringify({ error: { code: 'E_BAD_REQUEST', message: `malformed HTTP request: ${errorMessage(err)}` } });
        socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      } else {
        socket.destroy();
      }
      this.audit({ who: unknownRequester(), method: '-', path: '-', status: 400, result: `malformed: ${errorMessage(err)}` });
    });
    this.server.on('error', (err) => opts.log.error({ event: 'admin.error', err: errorMessage(err) }, 'admin socket error'));
  }

  /** Binds the socket (mode 0600). The caller made sure no live supervisor owns the path. */
  async listen(): Promise<void> {
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
  }

  async close(): Promise<void> {
    // Let replies in flight (the answer to POST /v1/stop) finish; cut what is left after 1 s.
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const timer = setTimeout(() => this.server.closeAllConnections(), 1_000);
    await closed;
    clearTimeout(timer);
    await rm(this.opts.socketPath, { force: true });
    await this.auditChain;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const who = requesterOf(req);
    const url = parseTarget(req.url);
    if (!url) {
      // e.g. "GET //" or "GET *": not a path we serve; never let it reach a handler (or throw).
      const text = `${toJson(errorReply(400, 'E_BAD_REQUEST', `bad request target ${JSON.stringify(String(req.url).slice(0, 200))}: expected an absolute path`).body)}\n`;
      if (!res.destroyed) res.writeHead(400, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), connection: 'close' }).end(text);
      this.audit({ who, method: req.method ?? '?', path: String(req.url).slice(0, 200), body: {}, status: 400, result: 400 });
      return;
    }
    const method = req.method ?? 'GET';
    let streaming = false;
    let reply: AdminReply;
    let body: Record<string, unknown> = {};
    try {
      const { handler, params } = this.route(method, url.pathname);
      if (!handler) {
        const known = Object.keys(this.opts.routes).some((r) => matchPath(r.slice(r.indexOf(' ') + 1), url.pathname) !== undefined);
        reply = known
          ? errorReply(405, 'E_METHOD', `${method} is not allowed on ${url.pathname}`)
          : errorReply(404, 'E_NOT_FOUND', `no such endpoint: ${method} ${url.pathname}; known: ${Object.keys(this.opts.routes).join(', ')}`);
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
              if (!res.destroyed) res.write(`${toJson(line)}\n`);
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
    if (streaming) {
      if (!res.destroyed) res.end(`${toJson(reply.body)}\n`);
    } else if (!res.headersSent && !res.destroyed) {
      const text = `${toJson(reply.body)}\n`;
      res.writeHead(reply.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...(reply.status >= 400 && { connection: 'close' }) });
      res.end(text);
    }
    this.audit({ who, method, path: url.pathname + url.search, body, status: reply.status, result: reply.audit ?? reply.status });
  }

  private route(method: string, pathname: string): { handler: AdminHandler | undefined; params: Record<string, string> } {
    const exact = this.opts.routes[`${method} ${pathname}`];
    if (exact) return { handler: exact, params: {} };
    for (const [key, handler] of Object.entries(this.opts.routes)) {
      const space = key.indexOf(' ');
      if (key.slice(0, space) !== method) continue;
      const params = matchPath(key.slice(space + 1), pathname);
      if (params) return { handler, params };
    }
    return { handler: undefined, params: {} };
  }

  /** One JSON line per admin command: when, who (claimed), what, result. */
  private audit(entry: { who: Requester; method: string; path: string; body?: unknown; status: number; result: unknown }): void {
    const line = `${toJson({ at: new Date().toISOString(), ...entry })}\n`;
    this.auditChain = this.auditChain.then(() =>
      appendFile(this.opts.auditPath, line, { mode: 0o600 }).catch((err: unknown) =>
        this.opts.log.error({ event: 'admin.audit_failed', err: errorMessage(err) }, 'could not write the audit log'),
      ),
    );
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

/**
 * One request to the admin socket. For NDJSON replies, `onLine` gets every line but
 * the last; the last line is the returned body. A progress line (a `type` other than
 * "result") is passed on as soon as it arrives, not when the next one does, so a live
 * display does not lag one step behind. Connect failures are
 * E_NOT_RUNNING (no socket / nobody listening).
 */
export function adminRequest(
  socketPath: string,
  method: string,
  urlPath: string,
  body?: unknown,
  opts: { onLine?: (line: Record<string, unknown>) => void; timeoutMs?: number } = {},
): Promise<ClientReply> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        socketPath,
        method,
        path: urlPath,
        headers: {
          'content-type': 'application/json',
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
        return reject(new AdminClientError('E_NOT_RUNNING', `no supervisor is running for this state dir (nothing answers at ${socketPath})`));
      }
      if (err.code === 'EACCES') return reject(new AdminClientError('E_ACCESS', `permission denied on ${socketPath}: the admin socket is only for the user baton runs as (and root)`));
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
