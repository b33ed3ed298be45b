/**
 * One HTTP request to 127.0.0.1:port, optionally on a keep-alive agent, with a timeout
 * that fails it as ETIMEDOUT. Shared by the demo, the kv load and the test suites
 * (test/support/engine.ts re-exports it).
 *
 * Servers that name themselves in an `x-baton-pid` response header (fixtures/kv) are
 * remembered per connection: an answer carries `pid`, and a request that fails on a
 * connection that had answered before carries `serverPid` on its error — the process
 * that held that connection (a fresh connection that never answered has none).
 */
import http from 'node:http';
import type { Socket } from 'node:net';

export interface HttpResult {
  status: number;
  body: string;
  /** The answering process, from `x-baton-pid` (undefined when the server does not send it). */
  pid?: number;
}

/** A failed request's error: `serverPid` names the process that last answered on its connection. */
export type HttpError = NodeJS.ErrnoException & { serverPid?: number; reusedSocket?: boolean };

/** Connection → the pid that last answered on it. */
const answeredBy = new WeakMap<Socket, number>();

/** One request; a keep-alive agent may be passed to reuse connections. */
export function request(
  port: number,
  method: string,
  urlPath: string,
  body?: string,
  agent?: http.Agent,
  timeoutMs = 10_000,
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    let socket: Socket | undefined;
    const failed = (err: HttpError): void => {
      const pid = socket && answeredBy.get(socket);
      if (pid !== undefined) err.serverPid = pid;
      err.reusedSocket = req.reusedSocket;
      reject(err);
    };
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, agent: agent ?? false, timeout: timeoutMs }, (res) => {
      const header = Number(res.headers['x-baton-pid']);
      const pid = Number.isInteger(header) && header > 0 ? header : undefined;
      if (pid !== undefined && socket) answeredBy.set(socket, pid);
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data, ...(pid !== undefined && { pid }) }));
      res.on('error', failed);
    });
    req.on('socket', (s) => (socket = s));
    req.on('timeout', () => req.destroy(Object.assign(new Error('request timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', failed);
    req.end(body);
  });
}
