/**
 * Restart comparison: the same app, the same load (64 keep-alive connections plus a
 * prober opening a new connection every 5 ms), restarted N times by
 *   - baton: `baton run` + `baton upgrade --json` (the CLI, as a user runs it);
 *   - naive: SIGTERM the app, wait for it to exit, start the new one (which binds the
 *     port again);
 *   - PM2 7 `reload`, cluster mode, 1 instance, PM2's defaults (listen_timeout 3 s,
 *     kill_timeout 1.6 s), private PM2_HOME;
 * and the same with an app whose start-up takes 4 s (over PM2's listen_timeout).
 * The app is bench/apps/hello (stateless), because fixtures/kv cannot run under PM2
 * (see hello.ts). fixtures/kv is then compared under baton and naive restarts only,
 * with its mixed read/write load.
 */
import type { ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { request } from './lib/http.js';
import { BatonDaemon } from './lib/daemon.js';
import { HttpLoad } from './lib/http-load.js';
import { KvLoad } from './lib/kv-load.js';
import { Pm2 } from './lib/pm2.js';
import { ProberProcess, type ProbeReport } from './lib/prober.js';
import { exited, freePort, HELLO_APP, KV_APP, rssKb, Scope, sleep, waitFor } from './lib/scope.js';
import { int, ms, percent, summarize, table } from './lib/stats.js';
import type { BenchContext, Section } from './run.js';

const CONNS = 64;
const SLOW_START_MS = 4_000;

interface VariantResult {
  id: string;
  label: string;
  app: 'hello' | 'kv';
  restarts: number;
  /** Wall time of each restart as its user sees it (command start → command done / new process answering). */
  restartMs: number[];
  requests: number;
  failures: Record<string, number>;
  failed: number;
  /** hello only: runs of consecutive failures on one connection, each counted once. */
  episodes?: number;
  p99: number;
  max: number;
  probe: ProbeReport;
  /** The load client's event-loop delay p99 (ms): inside its latency figures. */
  clientLagP99?: number;
  /** RSS of the supervising process at the end (baton run / PM2 daemon), kB. */
  supervisorRssKb?: number;
  notes: string[];
  /** baton: upgrades that did not commit. */
  aborted?: number;
  /** kv only. */
  blackouts?: number[];
  lost?: number;
  verified?: number;
}

export interface Restarter {
  /** The port the load goes to. */
  port: number;
  /** One restart; resolves with its wall time in ms. */
  restart(): Promise<number>;
  supervisorPid?: () => Promise<number>;
  notes: string[];
  /** kv: server pids before/after each restart, for the write blackout. */
  pids?: [number, number][];
  /** baton: the phases of each upgrade (from its job record). */
  phases?: { phase: string; ms: number }[][];
  /** baton: upgrades that did not commit (the old process served on). */
  aborted?: number;
}

async function measure(
  ctx: BenchContext,
  scope: Scope,
  spec: { id: string; label: string; app: 'hello' | 'kv' },
  r: Restarter,
  n: number,
): Promise<VariantResult> {
  const load = spec.app === 'hello' ? new HttpLoad(r.port, CONNS) : new KvLoad(r.port, { conns: CONNS });
  const prober = new ProberProcess(scope, r.port, 5);
  const lag = monitorEventLoopDelay({ resolution: 1 });
  lag.enable();
  const restartMs: number[] = [];
  let probe: ProbeReport | undefined;
  try {
    await sleep(ctx.quick ? 500 : 1_000);
    for (let i = 0; i < n; i++) {
      restartMs.push(await r.restart());
      await sleep(ctx.quick ? 800 : 1_500);
    }
  } finally {
    lag.disable();
    [, probe] = await Promise.all([load.stop(), prober.stop()]);
  }
  let p99: number;
  let max: number;
  const out: VariantResult = { ...spec, restarts: restartMs.length, restartMs, requests: load.requests, failures: load.failures, failed: load.failureCount, p99: 0, max: 0, probe: probe!, notes: r.notes, clientLagP99: lag.percentile(99) / 1e6, ...(r.aborted !== undefined && { aborted: r.aborted }) };
  if (r.phases?.length) {
    const names = [...new Set(r.phases.flat().map((p) => p.phase))];
    const p50 = (name: string) => summarize(r.phases!.map((ps) => ps.filter((p) => p.phase === name).reduce((a, p) => a + p.ms, 0))).p50;
    out.notes = [...out.notes, `baton phases of the committed upgrades, p50 ms: ${names.map((n) => `${n} ${ms(p50(n))}`).join(', ')}`];
  }
  if (load instanceof HttpLoad) {
    out.episodes = load.episodes;
    const s = load.latencies.sorted();
    p99 = summarizeSorted(s, 99);
    max = s[s.length - 1] ?? NaN;
  } else {
    p99 = load.latencyPercentile(99);
    max = load.latencyPercentile(100);
    out.blackouts = (r.pids ?? []).map(([a, b]) => load.writeBlackout(a, b)).filter((b): b is number => b !== undefined);
    const v = await load.verify();
    out.lost = v.lost.length + v.resurrected.length;
    out.verified = v.checked;
  }
  out.p99 = p99;
  out.max = max;
  if (r.supervisorPid) out.supervisorRssKb = await rssKb(await r.supervisorPid()).catch(() => undefined);
  ctx.log(
    `  ${spec.label}: ${out.restarts} restarts, ${int(out.requests)} requests, ${out.failed} failed ${JSON.stringify(out.failures)}, ` +
      `p99 ${ms(p99)} ms, max ${ms(max)} ms, refused ${ms(probe.longestRefusedMs)} ms, no answer ${ms(probe.longestNoAnswerMs)} ms`,
  );
  return out;
}

function summarizeSorted(s: Float64Array, p: number): number {
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** GET until `pid`'s process answers (hello: `/`, kv: `/healthz` with ok). */
async function waitServing(port: number, app: 'hello' | 'kv', pid: number, timeoutMs = 30_000): Promise<void> {
  await waitFor(
    async () => {
      const r = await request(port, 'GET', app === 'kv' ? '/healthz' : '/', undefined, undefined, 2_000);
      const body = JSON.parse(r.body) as { pid: number };
      return r.status === 200 && body.pid === pid ? true : undefined;
    },
    `pid ${pid} to answer on port ${port}`,
    timeoutMs,
    5,
  );
}

async function batonRestarter(scope: Scope, app: 'hello' | 'kv', env: Record<string, string>): Promise<Restarter> {
  const d = new BatonDaemon(scope, [process.execPath, app === 'hello' ? HELLO_APP : KV_APP], env);
  await d.start();
  const r: Restarter = {
    port: d.port,
    notes: [],
    pids: [],
    phases: [],
    aborted: 0,
    supervisorPid: async () => d.pid,
    async restart() {
      const t0 = performance.now();
      const job = await d.upgradeCli();
      const wall = performance.now() - t0;
      if (job.state !== 'SUCCEEDED') {
        r.aborted!++;
        r.notes.push(`upgrade ${job.state}: ${job.code ?? ''} ${job.reason ?? ''}`);
      }
      if (job.handoff?.oldPid && job.handoff.newPid) r.pids!.push([job.handoff.oldPid, job.handoff.newPid]);
      if (job.handoff && job.state === 'SUCCEEDED') r.phases!.push(job.handoff.phases);
      return wall;
    },
  };
  return r;
}

export async function naiveRestarter(scope: Scope, app: 'hello' | 'kv', env: Record<string, string>): Promise<Restarter> {
  const port = await freePort();
  const dir = scope.tempDir('baton-bench-naive-');
  const dataDir = path.join(dir, 'data');
  mkdirSync(dataDir);
  const logFile = path.join(dir, 'app.log');
  const start = (): ChildProcess => {
    const fd = openSync(logFile, 'a');
    const child = scope.spawn(process.execPath, [app === 'hello' ? HELLO_APP : KV_APP], {
      stdio: ['ignore', 'ignore', fd],
      env: scope.env({ PORT: String(port), KV_PORT: String(port), BATON_DATA_DIR: dataDir, BATON_LOG_LEVEL: 'warn', ...env }),
    });
    closeSync(fd);
    return child;
  };
  const serving = async (child: ChildProcess) => {
    try {
      await waitServing(port, app, child.pid!);
    } catch (err) {
      const exit = child.exitCode !== null || child.signalCode !== null ? `exited ${child.exitCode ?? child.signalCode}` : 'still running';
      throw new Error(`${(err as Error).message} (pid ${child.pid} ${exit}; its log: ${readFileSync(logFile, 'utf8').slice(-1500)})`);
    }
  };
  let cur = start();
  await serving(cur);
  const r: Restarter = {
    port,
    notes: [],
    pids: [],
    async restart() {
      const t0 = performance.now();
      const old = cur;
      old.kill('SIGTERM');
      const t = setTimeout(() => old.kill('SIGKILL'), 15_000);
      await exited(old);
      clearTimeout(t);
      cur = start();
      await serving(cur);
      r.pids!.push([old.pid!, cur.pid!]);
      return performance.now() - t0;
    },
  };
  return r;
}

async function pm2Restarter(scope: Scope, pm2: Pm2, name: string, env: Record<string, string>): Promise<Restarter> {
  const port = await freePort();
  await pm2.startCluster({ name, script: HELLO_APP, env: { PORT: String(port), ...env } });
  await waitFor(async () => ((await request(port, 'GET', '/', undefined, undefined, 2_000)).status === 200 ? true : undefined), `PM2 app ${name} to answer`, 30_000, 20);
  void scope;
  return {
    port,
    notes: [],
    supervisorPid: () => pm2.daemonPid(),
    async restart() {
      const t0 = performance.now();
      await pm2.reload(name);
      return performance.now() - t0;
    },
  };
}

export async function restartCompare(ctx: BenchContext): Promise<Section> {
  const n = ctx.quick ? 2 : 5;
  const results: VariantResult[] = [];
  const slow = { HELLO_START_DELAY_MS: String(SLOW_START_MS) };
  type Plan = { id: string; label: string; app: 'hello' | 'kv'; make: (s: Scope, pm2: () => Pm2) => Promise<Restarter>; quick: boolean };
  const plans: Plan[] = [
    { id: 'baton', label: 'baton upgrade', app: 'hello', quick: true, make: (s) => batonRestarter(s, 'hello', {}) },
    { id: 'naive', label: 'naive restart (SIGTERM, then start)', app: 'hello', quick: true, make: (s) => naiveRestarter(s, 'hello', {}) },
    { id: 'pm2-close', label: 'PM2 reload, app closes its server on SIGINT', app: 'hello', quick: true, make: (s, p) => pm2Restarter(s, p(), 'hello-close', { HELLO_SHUTDOWN: 'close' }) },
    { id: 'pm2-drain', label: 'PM2 reload, app drains keep-alive-safely on SIGINT', app: 'hello', quick: true, make: (s, p) => pm2Restarter(s, p(), 'hello-drain', {}) },
    { id: 'baton-slow', label: 'baton upgrade, 4 s start-up', app: 'hello', quick: false, make: (s) => batonRestarter(s, 'hello', slow) },
    { id: 'naive-slow', label: 'naive restart, 4 s start-up', app: 'hello', quick: false, make: (s) => naiveRestarter(s, 'hello', slow) },
    { id: 'pm2-slow', label: 'PM2 reload, 4 s start-up (drain on SIGINT)', app: 'hello', quick: true, make: (s, p) => pm2Restarter(s, p(), 'hello-slow', slow) },
    { id: 'kv-baton', label: 'baton upgrade', app: 'kv', quick: true, make: (s) => batonRestarter(s, 'kv', {}) },
    { id: 'kv-naive', label: 'naive restart (SIGTERM, then start)', app: 'kv', quick: true, make: (s) => naiveRestarter(s, 'kv', {}) },
  ];
  // BENCH_RESTART_VARIANTS=kv-naive,pm2-slow runs only those rows (for investigating one).
  const only = process.env.BENCH_RESTART_VARIANTS?.split(',');
  for (const plan of plans) {
    if (only ? !only.includes(plan.id) : ctx.quick && !plan.quick) continue;
    const scope = new Scope(`restart-compare/${plan.id}`);
    let pm2: Pm2 | undefined;
    try {
      const r = await plan.make(scope, () => (pm2 ??= new Pm2(scope)));
      results.push(await measure(ctx, scope, plan, r, n));
    } catch (err) {
      ctx.log(`  ${plan.label}: FAILED: ${(err as Error).message}`);
      results.push({ ...plan, restarts: 0, restartMs: [], requests: 0, failures: {}, failed: 0, p99: NaN, max: NaN, probe: { probes: 0, answered: 0, failed: {}, skipped: 0, longestRefusedMs: NaN, longestNoAnswerMs: NaN }, notes: [`did not complete: ${(err as Error).message}`] });
    } finally {
      await scope.close();
      if (scope.leftovers.length) results[results.length - 1]!.notes.push(`had to kill leftover pids ${scope.leftovers.join(', ')}`);
    }
  }
  const by = (id: string) => results.find((r) => r.id === id);
  const f = (id: string) => {
    const r = by(id);
    if (!r || !r.restarts) return 'n/a';
    return `${int(r.failed)} (${percent(r.failed, r.requests)})${r.aborted ? ` but ${r.aborted} of ${r.restarts} upgrades aborted` : ''}`;
  };
  const headline =
    `**Failed requests** over ${n} restarts under 64 keep-alive connections (stateless app, same load): **baton ${f('baton')}**, PM2 reload ${f('pm2-close')} with the app closing its server as PM2's docs show, ${f('pm2-drain')} with a keep-alive-safe app, ${f('pm2-slow')} when the new version takes 4 s to start (baton: ${f('baton-slow')}); naive restart ${f('naive')}. ` +
    `fixtures/kv (mixed reads/writes): baton ${f('kv-baton')}, naive ${f('kv-naive')}; lost acknowledged writes: baton ${by('kv-baton')?.lost ?? 'n/a'}, naive ${by('kv-naive')?.lost ?? 'n/a'}.`;
  return { id: 'restart', title: 'Restart comparison: baton vs naive restart vs PM2 reload', markdown: render(results, n, ctx), headline, data: results };
}

function failuresText(f: Record<string, number>): string {
  const e = Object.entries(f);
  return e.length ? e.map(([k, v]) => `${k} ${v}`).join(', ') : '—';
}

function render(results: VariantResult[], n: number, ctx: BenchContext): string {
  const hello = results.filter((r) => r.app === 'hello');
  const kv = results.filter((r) => r.app === 'kv');
  const restartCell = (r: VariantResult) => {
    if (r.restartMs.length === 0) return 'n/a';
    const s = summarize(r.restartMs);
    return `${ms(s.p50)} (max ${ms(s.max)})`;
  };
  const rows = (rs: VariantResult[]) =>
    rs.map((r) => [
      r.label,
      r.aborted ? `${r.restarts} (**${r.aborted} aborted**, the old process served on)` : r.restarts,
      int(r.requests),
      `**${int(r.failed)}** (${percent(r.failed, r.requests)})`,
      r.episodes === undefined ? 'n/a' : int(r.episodes),
      failuresText(r.failures),
      ms(r.p99),
      ms(r.max),
      ms(r.probe.longestRefusedMs),
      ms(r.probe.longestNoAnswerMs),
      restartCell(r),
      ms(r.clientLagP99),
    ]);
  const head = ['variant', 'restarts', 'requests', 'failed', 'failure episodes', 'failures by kind', 'p99 ms', 'max ms', 'refused window ms', 'no-answer gap ms', 'restart wall ms p50 (max)', 'client lag p99 ms'];
  const notes = results.filter((r) => r.notes.length).map((r) => `- ${r.app} / ${r.label}: ${r.notes.join('; ')}`);
  const rss = results.filter((r) => r.supervisorRssKb !== undefined).map((r) => `${r.app} / ${r.label}: ${(r.supervisorRssKb! / 1024).toFixed(1)} MiB`);
  const kvRows = kv.map((r) => {
    const b = r.blackouts && r.blackouts.length ? summarize(r.blackouts) : undefined;
    return [r.label, b ? `${ms(b.p50)} / ${ms(b.max)}` : 'n/a', r.verified !== undefined ? `${int(r.verified)} checked, **${r.lost} lost**` : 'n/a'];
  });
  return [
    `Same machine, same run, same load for every row: ${CONNS} keep-alive client connections back to back (no retries; a reset or hang-up on a reused connection is a failure), plus a prober that opens a new connection every 5 ms. ${n} restarts per row${ctx.quick ? ' (--quick)' : ''}, 1.5 s apart.`,
    '',
    '- **failed**: requests that did not get a correct answer. The loops do not pause after a failure (a refused connect on loopback fails in ~0.1 ms), so this count grows with the outage times the spin rate; **failure episodes** counts each run of consecutive failures on one connection once (stateless app only).',
    '- **refused window**: the longest run of prober connections that were refused or reset (nothing listening), until one was answered.',
    '- **no-answer gap**: the longest time in which no prober connection got an answer (nothing listening, or nobody accepting: connections wait in the backlog).',
    '- The prober runs in a process of its own; the load loops share one event loop, whose delay (**client lag**) is inside their latencies.',
    '- **restart wall**: `baton upgrade --json` and `pm2 reload` as commands (process start to exit); naive: SIGTERM until the new process answers.',
    '',
    '**Stateless app** (`bench/apps/hello`; the same code in every row — fixtures/kv cannot run under PM2, whose reload starts the second process while the first holds the data-dir lock). Its shutdown on SIGINT/SIGTERM is the same keep-alive-safe drain baton asks for (stop accepting, `Connection: close` on the next answer, idle connections ended after 500 ms), except in the "closes its server" row, which uses `server.close(() => process.exit(0))` as PM2\'s docs show.',
    '',
    table(head, rows(hello)),
    '',
    `**fixtures/kv** (mixed GET/PUT/DELETE from ${CONNS} connections; naive = the kv's stand-alone mode, which has no SIGTERM handler: the default action ends it at once). Every acknowledged write is read back at the end.`,
    '',
    table(head, rows(kv)),
    '',
    table(['variant', 'write blackout ms p50 / max', 'acknowledged writes read back'], kvRows),
    '',
    `Supervisor RSS at the end: ${rss.join('; ') || 'n/a'}.`,
    ...(notes.length ? ['', 'Notes:', ...notes] : []),
  ].join('\n');
}
