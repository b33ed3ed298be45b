/**
 * fixtures/kv's request path (its HTTP front end and store, the same code) as a plain
 * PM2 cluster worker, for the PM2 row of the latency bench (bench/latency.ts).
 *
 * fixtures/kv itself cannot run under PM2: its data-dir lock keeps a reload's second
 * process from starting while the first one lives (see bench/apps/hello.ts). Here each
 * process opens a data dir of its own (`KV_PM2_DATA/<pid>`), so a reload starts on empty
 * data: PM2 carries no state across (it has no handoff), which the bench states. The
 * rest is what a careful PM2 user would write: kv's warm-up before serving, with PM2's
 * `wait_ready` (the old worker is stopped once this one says `ready`, not at its
 * first listen: the warm-up's private server would count as that), and on SIGINT
 * (PM2's reload signal) kv's keep-alive-safe drain, a seal of the store, then exit.
 *
 * Env: KV_PM2_DATA (required), PORT, HOST (default 127.0.0.1), KV_SHARDS (4).
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { KvHttp } from '../../fixtures/kv/http.js';
import { Store } from '../../fixtures/kv/store.js';
import { warmUp } from '../../fixtures/kv/warmup.js';

const env = process.env;
if (!env.KV_PM2_DATA) throw new Error('KV_PM2_DATA is required');
const dir = path.join(env.KV_PM2_DATA, String(process.pid));
mkdirSync(dir, { recursive: true });
await warmUp(dir);
const store = new Store(dir, Number(env.KV_SHARDS ?? 4));
await store.open();
const http: KvHttp = new KvHttp(store, {
  idleGraceMs: 500,
  keepAliveTimeoutMs: 65_000,
  maxValueBytes: 1024 * 1024,
  // The same fields as fixtures/kv's /healthz, so the answers weigh the same.
  health: () => ({
    ok: !store.broken,
    pid: process.pid,
    generation: 0,
    role: 'standalone',
    revisions: Object.fromEntries(Object.entries(store.revisionMap()).map(([k, v]) => [k, v.toString()])),
    shards: store.shardInfo(),
    keys: store.keyCount,
    openConns: http.openConns,
    draining: http.draining,
    problems: store.broken ? [store.broken] : [],
  }),
});
process.once('SIGINT', () => {
  void http
    .drain(new Date(Date.now() + 10_000))
    .then(() => store.seal())
    .finally(() => process.exit(0));
});
await http.listenPort(Number(env.PORT ?? 8080), env.HOST ?? '127.0.0.1');
// PM2's wait_ready: this worker serves now.
process.send?.('ready');
