/**
 * Preloaded into the bench's app processes (`NODE_OPTIONS=--import=<this file>`, see
 * bench/latency.ts): the main thread's garbage-collection pauses of 1 ms or more, as
 * pino-like JSON lines on stderr, so they land in the same log as the supervisor's
 * phase lines (baton pipes its apps' stderr into its own) and a slow request can be
 * matched with a pause of the process that answered it.
 *
 *   {"time":<ms>,"pid":N,"event":"bench.gc","gcs":[[startMs, durationMs, kind], ...]}
 *
 * start is epoch ms (performance.timeOrigin + the entry's startTime); kind is V8's
 * (1 minor / scavenge, 2 major / mark-compact, 4 incremental marking, 8 weak callbacks).
 * Collected in memory and written once a second and at exit: one write, not one per pause.
 */
import { writeSync } from 'node:fs';
import { PerformanceObserver, performance, type PerformanceEntry } from 'node:perf_hooks';
import { isMainThread } from 'node:worker_threads';

const MIN_MS = 1;
let pending: [number, number, number][] = [];

function flush(): void {
  if (pending.length === 0) return;
  const line = JSON.stringify({ time: Date.now(), pid: process.pid, event: 'bench.gc', gcs: pending });
  pending = [];
  try {
    writeSync(2, `${line}\n`);
  } catch {
    // stderr gone: nothing to report to
  }
}

// Preloads run in worker threads too (baton's agent): only the main thread's pauses delay requests.
if (isMainThread) start();

function start(): void {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries() as (PerformanceEntry & { detail?: { kind?: number } })[]) {
      if (e.duration < MIN_MS) continue;
      pending.push([Math.round((performance.timeOrigin + e.startTime) * 1000) / 1000, Math.round(e.duration * 1000) / 1000, e.detail?.kind ?? 0]);
    }
  }).observe({ entryTypes: ['gc'] });
  setInterval(flush, 1_000).unref();
  process.on('exit', flush);
}
