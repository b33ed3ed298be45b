/**
 * One HTTP request to 127.0.0.1:port, optionally on a keep-alive agent, with a timeout
 * that fails it as ETIMEDOUT. Shared by the demo, the kv load and the test suites
 * (test/support/engine.ts re-exports it).
 */
import http from 'node:http';

export interface HttpResult {
  status: number;
  body: string;
}

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
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, agent: agent ?? false, timeout: timeoutMs }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('request timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end(body);
  });
}
