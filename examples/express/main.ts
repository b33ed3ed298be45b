/**
 * examples/express: the key-value service of examples/node-http on express 5. An express
 * app is a request handler, so it is the handler of the adapter's servers
 * (`new HttpListeners(app)`); the adapter owns the servers, their drain and the re-listen
 * after an aborted handoff. Never `app.listen()` (the adapter listens on baton's
 * sockets). README.md beside it.
 *
 *   GET /            → {"pid","keys","rev"}
 *   GET /kv/:key     → 200 {"value"} | 404
 *   PUT /kv/:key     body = value → 200 {"rev"} once it is on disk (503 while sealed for a handoff)
 *   GET /healthz     → 200 {"ok","pid"}
 */
import express from 'express';
import { startBaton, verifyOpened } from '@baton-sh/baton';
import { HttpListeners, httpDrainable } from '@baton-sh/baton/http';
import { AppendLog, SealedError } from '../shared/append-log.js';

let log: AppendLog; // opened once the data-dir lock is ours (after begin)

const app = express();
app.get('/', (_req, res) => {
  res.json({ pid: process.pid, keys: log.size, rev: String(log.rev) });
});
app.get('/healthz', (_req, res) => {
  res.json({ ok: true, pid: process.pid });
});
app.get('/kv/:key', (req, res) => {
  const value = log.get(req.params.key);
  if (value === undefined) res.status(404).json({ error: 'no such key' });
  else res.json({ value });
});
// A PUT's body is the value, whatever its content type.
app.put('/kv/:key', express.text({ type: () => true, limit: '64kb' }), (req, res) => {
  try {
    res.json({ rev: String(log.put(req.params.key, typeof req.body === 'string' ? req.body : '')) });
  } catch (err) {
    if (!(err instanceof SealedError)) throw err;
    // Sealed for a handoff: the next process takes the retry.
    res.status(503).set('retry-after', '1').json({ error: err.message });
  }
});

const web = new HttpListeners(app);

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
console.log(`express example: pid ${process.pid} serving, revision ${log.rev} (${log.size} keys)`);
