/**
 * examples/lmdb: a key-value service on LMDB (the `lmdb` package, an embedded
 * database), handed over by baton with no failed request and no lost write. The recipe
 * of docs/embedded-db.md: every write transaction also bumps a write counter and extends
 * a SHA-256 hash chain stored in the database, in the same transaction; `seal` reports
 * both, and a successor checks what it opened against them with `verifyOpened` before
 * it serves. README.md beside it: run, upgrade, back up.
 *
 *   GET /            → {"pid","rev"}
 *   GET /kv/:key     → 200 {"value"} | 404
 *   PUT /kv/:key     body = value → 200 {"rev"} once committed and flushed to disk (503 while sealed)
 *   GET /healthz     → 200 {"ok","pid"}
 *
 * Maintenance task `backup` (`baton maintenance run backup`): a hot copy of the database
 * into <data dir>/backups/. Env DB_PATH: the database file (default <data dir>/app.mdb).
 */
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import { startBaton, verifyOpened, type SealResult } from '@baton-sh/baton';
import { HttpListeners, httpDrainable } from '@baton-sh/baton/http';

/** The write counter and the hash chain, kept in the database itself. */
interface Head {
  rev: number;
  chain: string; // hex: sha256(previous chain, key, value) per write
}
const GENESIS: Head = { rev: 0, chain: '00'.repeat(32) };

class SealedError extends Error {}

/** The database: items, and the head that every write transaction moves. */
class Db {
  private readonly root: RootDatabase;
  private readonly items: Database<string, string>;
  private readonly meta: Database<Head, string>;
  sealed = false;
  private closed = false;

  constructor(readonly file: string) {
    this.root = open({ path: file });
    this.items = this.root.openDB<string, string>({ name: 'items' });
    this.meta = this.root.openDB<Head, string>({ name: 'meta' });
  }

  get(key: string): string | undefined {
    return this.items.get(key);
  }

  head(): Head {
    return this.meta.get('head') ?? GENESIS;
  }

  /** Writes `key = value` and the new head in one transaction; resolves once it is on disk. */
  async put(key: string, value: string): Promise<number> {
    if (this.sealed) throw new SealedError('sealed for a handoff');
    const rev = await this.root.transaction(() => {
      const { rev, chain } = this.head(); // read inside the transaction: the head of the writes before it
      const next = { rev: rev + 1, chain: createHash('sha256').update(chain).update(JSON.stringify([key, value])).digest('hex') };
      this.items.put(key, value);
      this.meta.put('head', next);
      return next.rev;
    });
    await this.root.flushed; // committed is visible; flushed is durable: acknowledge only that
    return rev;
  }

  summary(): SealResult {
    const { rev, chain } = this.head();
    return { lastRevisionPerShard: { '0': BigInt(rev) }, dataDirFingerprint: Buffer.from(chain, 'hex') };
  }

  /** Stops writing, waits until every write is on disk, reports the head and closes. */
  async seal(): Promise<SealResult> {
    this.sealed = true;
    await this.root.flushed;
    const summary = this.summary();
    await this.close();
    return summary;
  }

  backup(file: string): Promise<void> {
    return this.root.backup(file, false);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.root.close();
  }
}

let db: Db; // opened once the data-dir lock is ours (after begin)
const dbFile = (): string => process.env.DB_PATH ?? path.join(baton.dataDir, 'app.mdb');

function send(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (url.pathname === '/') return send(res, 200, { pid: process.pid, rev: db.head().rev });
  if (url.pathname === '/healthz') return send(res, 200, { ok: true, pid: process.pid });
  const m = /^\/kv\/([^/]+)$/.exec(url.pathname);
  if (!m) return send(res, 404, { error: 'not found' });
  const key = decodeURIComponent(m[1]!);
  if (req.method === 'GET') {
    const value = db.get(key);
    return value === undefined ? send(res, 404, { error: 'no such key' }) : send(res, 200, { value });
  }
  if (req.method !== 'PUT') return send(res, 405, { error: 'GET or PUT' });
  let value = '';
  req.setEncoding('utf8');
  for await (const chunk of req) value += chunk as string;
  try {
    send(res, 200, { rev: await db.put(key, value) });
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
    seal: () => db.seal(),
    reopen() {
      if (db.sealed) db = new Db(dbFile()); // aborted after our seal: open again (LMDB shows what the successor wrote)
    },
    readiness: () => ({ healthzOk: true, advertisedRevisionPerShard: db.summary().lastRevisionPerShard }),
    snapshot: () => ({ shardCount: 1, lastRevisionPerShard: db.summary().lastRevisionPerShard }),
  }),
  tasks: {
    // A hot copy (LMDB copies a consistent snapshot while writes go on).
    backup: async () => {
      const dir = path.join(baton.dataDir, 'backups');
      mkdirSync(dir, { recursive: true });
      const { rev } = db.head();
      const file = path.join(dir, `app-${new Date().toISOString().replace(/[:.]/g, '-')}-rev${rev}.mdb`);
      await db.backup(file);
      return { file, atLeastRev: rev };
    },
  },
  onExit: () => db?.close(),
});

const begin = await baton.begin(); // the data-dir lock is ours now
db = new Db(dbFile());
verifyOpened(begin, db.summary()); // after a handoff: exactly what the incumbent sealed, or the handoff aborts
await web.serve(baton); // every listener baton passes (standalone: BATON_LISTEN)
await baton.ready(); // resolves once this process is the one serving
console.log(`lmdb example: pid ${process.pid} serving ${dbFile()}, revision ${db.head().rev}`);
