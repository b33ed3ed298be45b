/**
 * examples/fastify: the key-value service of examples/node-http on fastify 5. The HTTP
 * adapter owns the servers (`serverFactory`), their drain and the re-listen after an
 * aborted handoff; `fastifyOptions` loads the plugins and routes before this process
 * says Hello. Never `app.listen()` (the adapter listens on baton's sockets) and never
 * `app.close()` to drain (it resets idle keep-alive connections). README.md beside it.
 *
 *   GET /            → {"pid","keys","rev"}
 *   GET /kv/:key     → 200 {"value"} | 404
 *   PUT /kv/:key     body = value → 200 {"rev"} once it is on disk (503 while sealed for a handoff)
 *   GET /healthz     → 200 {"ok","pid"}
 */
import Fastify from 'fastify';
import { startBaton, verifyOpened } from '@baton-sh/baton';
import { fastifyOptions, HttpListeners, httpDrainable } from '@baton-sh/baton/http';
import { AppendLog, SealedError } from '../shared/append-log.js';

let log: AppendLog; // opened once the data-dir lock is ours (after begin)

const web = new HttpListeners();
const app = Fastify({ serverFactory: web.serverFactory, bodyLimit: 64 * 1024 });
// A PUT's body is the value, whatever its content type.
app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body));

app.get('/', async () => ({ pid: process.pid, keys: log.size, rev: String(log.rev) }));
app.get('/healthz', async () => ({ ok: true, pid: process.pid }));
app.get<{ Params: { key: string } }>('/kv/:key', async (req, reply) => {
  const value = log.get(req.params.key);
  return value === undefined ? reply.code(404).send({ error: 'no such key' }) : { value };
});
app.put<{ Params: { key: string }; Body: string }>('/kv/:key', async (req, reply) => {
  try {
    return { rev: String(log.put(req.params.key, req.body ?? '')) };
  } catch (err) {
    if (!(err instanceof SealedError)) throw err;
    // Sealed for a handoff: the next process takes the retry.
    return reply.code(503).header('retry-after', '1').send({ error: err.message });
  }
});

const baton = await startBaton({
  drainable: httpDrainable(web, {
    seal: () => log.seal(), // after the drain: every write is on disk; stop writing, report revision and chain
    reopen: () => log.open(), // an aborted handoff: read again what the successor may have written
    readiness: () => ({ healthzOk: true, advertisedRevisionPerShard: log.summary().lastRevisionPerShard }),
    snapshot: () => ({ shardCount: 1, lastRevisionPerShard: log.summary().lastRevisionPerShard }),
  }),
  ...fastifyOptions(web, app), // warmUp: app.ready() before Hello, off the handoff's write blackout
  onExit: () => log?.close(),
});

const begin = await baton.begin(); // the data-dir lock is ours now
log = new AppendLog(baton.dataDir);
log.open();
verifyOpened(begin, log.summary()); // after a handoff: exactly what the incumbent sealed, or the handoff aborts
await web.serve(baton); // every listener baton passes (standalone: BATON_LISTEN)
await baton.ready(); // resolves once this process is the one serving
console.log(`fastify example: pid ${process.pid} serving, revision ${log.rev} (${log.size} keys)`);
