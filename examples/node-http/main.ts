/**
 * examples/node-http: a small key-value service on node:http, handed over by baton with
 * no failed request and no lost write. The HTTP adapter (`@baton-sh/baton/http`) owns the
 * servers, their drain and the re-listen after an aborted handoff; this file has the
 * routes and the data's side (seal, reopen, verify). README.md beside it: run, upgrade.
 *
 *   GET /            → {"pid","keys","rev"}
 *   GET /kv/:key     → 200 {"value"} | 404
 *   PUT /kv/:key     body = value → 200 {"rev"} once it is on disk (503 while sealed for a handoff)
 *   GET /healthz     → 200 {"ok","pid"}
 */
import http from 'node:http';
import { startBaton, verifyOpened } from '@baton-sh/baton';
import { HttpListeners, httpDrainable } from '@baton-sh/baton/http';
import { AppendLog, SealedError } from '../shared/append-log.js';

const MAX_BODY = 64 * 1024;
let log: AppendLog; // opened once the data-dir lock is ours (after begin)

function send(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function readBody(req: http.IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => resolve(size <= MAX_BODY ? Buffer.concat(chunks).toString('utf8') : undefined));
    req.on('error', reject);
  });
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (url.pathname === '/') return send(res, 200, { pid: process.pid, keys: log.size, rev: String(log.rev) });
  if (url.pathname === '/healthz') return send(res, 200, { ok: true, pid: process.pid });
  const m = /^\/kv\/([^/]+)$/.exec(url.pathname);
  if (!m) return send(res, 404, { error: 'not found' });
  const key = decodeURIComponent(m[1]!);
  if (req.method === 'GET') {
    const value = log.get(key);
    return value === undefined ? send(res, 404, { error: 'no such key' }) : send(res, 200, { value });
  }
  if (req.method !== 'PUT') return send(res, 405, { error: 'GET or PUT' });
  const value = await readBody(req);
  if (value === undefined) return send(res, 413, { error: `over ${MAX_BODY} bytes` });
  try {
    send(res, 200, { rev: String(log.put(key, value)) });
  } catch (err) {
    if (!(err instanceof SealedError)) throw err;
    res.setHeader('retry-after', '1'); // sealed for a handoff: the next process takes the retry
    send(res, 503, { error: err.message });
  }
}

const web = new HttpListeners((req, res) => {
  handle(req, res).catch((err: Error) => send(res, err instanceof URIError ? 400 : 500, { error: err.message }));
});

const baton = await startBaton({
  drainable: httpDrainable(web, {
    seal: () => log.seal(), // after the drain: every write is on disk; stop writing, report revision and chain
    reopen: () => log.open(), // an aborted handoff: read again what the successor may have written
    readiness: () => ({ healthzOk: true, advertisedRevisionPerShard: log.summary().lastRevisionPerShard }),
    snapshot: () => ({ shardCount: 1, lastRevisionPerShard: log.summary().lastRevisionPerShard }),
  }),
  onExit: () => log?.close(),
});

const begin = await baton.begin(); // the data-dir lock is ours now
log = new AppendLog(baton.dataDir);
log.open();
verifyOpened(begin, log.summary()); // after a handoff: exactly what the incumbent sealed, or the handoff aborts
await web.serve(baton); // every listener baton passes (standalone: BATON_LISTEN)
await baton.ready(); // resolves once this process is the one serving
console.log(`node-http example: pid ${process.pid} serving, revision ${log.rev} (${log.size} keys)`);
