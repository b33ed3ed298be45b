import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import { BatonError, errorMessage } from '../os/errors.js';

/**
 * The admin API's client (the CLI, tests, benches): one request over the Unix socket or
 * TCP, NDJSON progress lines passed on as they arrive; whether a supervisor answers on
 * a socket.
 */

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
