/**
 * Tail latency during upgrades (issue 25), measured by an independent load generator:
 * wrk 4.1 with bench/lib/latency.lua, 64 keep-alive connections (60 on 2 threads, plus
 * 4 on threads of their own that time each connection's stalls), each alternating
 * PUT /kv/<new key> and GET /healthz against fixtures/kv's request path, for
 *   - baton: fixtures/kv under `baton run`, upgrades through the admin API;
 *   - PM2 7 `reload`, cluster mode, 1 instance: kv's HTTP front end and store in
 *     bench/apps/kv-pm2 (a data dir per process: PM2 carries no state across);
 *   - naive restart: fixtures/kv stand-alone, SIGTERM, then start it again;
 * per service one run without upgrades ("steady") and one with `upgrades` upgrades
 * spread over the same time ("upgrading"), back to back, after a short warm-up run.
 * Printed per run: requests, errors, latency p50/p99/max (per request as measured,
 * and as wrk prints it: corrected for coordinated omission), the longest
 * per-connection stall, the machine's load average before and after.
 *
 * For baton, every request of the upgrading run slower than the steady run's p99 is
 * attributed to the handoff phase it overlapped most (successor boot, drain, seal,
 * lock + open up to the successor accepting, the successor's first second) from the
 * supervisor's and the apps' log lines, and checked against the garbage-collection
 * pauses of the process that answered it (bench/lib/gc-trace.ts, preloaded into every
 * app process of every variant alike).
 *
 * Env: BENCH_LATENCY_VARIANTS=baton,pm2,naive (default all), BENCH_LATENCY_SECONDS
 * (20), BENCH_LATENCY_UPGRADES (6), BENCH_LATENCY_ROUNDS (1; rounds run the variants
 * alternately), BENCH_LATENCY_KEEP=DIR (keep wrk's per-request records and baton's log
 * there). For an A/B of a baton change, run the old and the new build alternately
 * (worktrees), as the other sections of BENCHMARKS.md did.
 */
import { copyFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { JobRecord } from '../src/daemon/jobs.js';
import { BatonDaemon, type LogEvent } from './lib/daemon.js';
import { request } from './lib/http.js';
import { Pm2 } from './lib/pm2.js';
import { DIST, KV_APP, Scope, sleep, waitFor, freePort } from './lib/scope.js';
import { int, ms, pct, summarize, table } from './lib/stats.js';
import { correctedPercentiles, runWrk, wrkVersion, type Records, type WrkSummary } from './lib/wrk.js';
import { naiveRestarter } from './restart-compare.js';
import type { BenchContext, Section } from './run.js';

const KV_PM2_APP = path.join(DIST, 'bench/apps/kv-pm2.js');
const GC_TRACE = path.join(DIST, 'bench/lib/gc-trace.js');
/** Main load: 60 connections on 2 threads; stall probe: 4 connections, a thread each. */
const MAIN = { threads: 2, conns: 60 };
const PROBE = { threads: 4, conns: 4 };
const CONNS = MAIN.conns + PROBE.conns;
const WARMUP_S = 3;
/** How long after the successor accepts its "first second" phase lasts. */
const FIRST_MS = 1_000;

export const PHASES = ['boot', 'drain', 'seal', 'lock + open', 'first second', 'outside handoffs'] as const;
export type Phase = (typeof PHASES)[number];
const PHASE_TEXT: Record<Phase, string> = {
  boot: 'successor boot (spawn → both Hellos): it starts while the incumbent serves',
  drain: 'drain (PrepareHandoff → Drained): connections closed, clients reconnect into the backlog',
  seal: 'seal (Drained → SealComplete): nobody accepts',
  'lock + open': 'lock + open (SealComplete → the successor accepts): nobody accepts',
  'first second': "the successor's first second (accepts → +1 s): its first requests, commit, the old one exits",
  'outside handoffs': 'outside handoffs',
};

interface Restart {
  startedAt: number;
  endedAt: number;
  ok: boolean;
  job?: JobRecord;
  note?: string;
}

interface Service {
  port: number;
  restart(): Promise<Restart>;
  daemon?: BatonDaemon;
}

interface Plan {
  id: string;
  label: string;
  make(scope: Scope, env: Record<string, string>): Promise<Service>;
}

export interface Figures {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

export interface RunResult {
  variant: string;
  label: string;
  round: number;
  mode: 'steady' | 'upgrading';
  seconds: number;
  loadBefore: number[];
  loadAfter: number[];
  requests: number;
  errors: Record<string, number>;
  errorCount: number;
  /**
   * Requests never answered that wrk did not count as errors: when wrk stops, each
   * connection has one request in flight; every socket error wrk counts (connect, read,
   * write) leaves one more unanswered; any other unanswered request was lost silently
   * (the server closed its connection under it, which wrk does not count).
   */
  lost: number;
  /** Per request as measured (ms), all 64 connections. */
  raw: Figures;
  /** As `wrk --latency` reports: corrected for coordinated omission (ms), all 64 connections. */
  wrk: Figures;
  /** wrk's own figures for its 60-connection process (ms): a check of `wrk` above. */
  wrkMain: { p50: number; p99: number; max: number };
  /** The longest time one probe connection went without an answer (ms), over the run. */
  longestStall: number;
  /** Per restart, the longest such stall overlapping it (ms). */
  restartStalls: number[];
  restarts: Restart[];
  /** baton: last answer from the old pid → first from the new one, as the clients saw it (ms, per handoff). */
  clientGaps?: number[];
  attribution?: Attribution;
}

export interface Attribution {
  thresholdMs: number;
  slow: number;
  byPhase: Record<Phase, { count: number; puts: number; p50: number; max: number; withGc: number; gcMs: number }>;
  /** Slow requests that overlapped a GC pause of the answering process (≥ 1 ms), and those pauses' total overlap. */
  withGc: number;
  /** GC pauses of the app processes during the run: count, total, longest (ms). */
  gc: { count: number; totalMs: number; maxMs: number };
  /** Mean duration of each phase over the handoffs (ms). */
  phaseMs: Record<Phase, number>;
  /**
   * Requests sent before the successor accepted and answered by it (they waited for it:
   * sent on a connection the drain had closed, or in the backlog): how long they waited
   * before it accepted, and after (ms).
   */
  backlog: { requests: number; before: { p50: number; p90: number; max: number }; after: { p50: number; p90: number; max: number } };
  /** Per handoff: its phases' lengths and the requests started from its spawn to the end of the successor's first second (ms). */
  handoffs: { phases: Partial<Record<Phase, number>>; requests: number; p50: number; p99: number; max: number; slow: number }[];
}

function gcEnv(): Record<string, string> {
  const opt = `--import=${pathToFileURL(GC_TRACE).href}`;
  return { NODE_OPTIONS: [process.env.NODE_OPTIONS, opt].filter(Boolean).join(' ') };
}

const PLANS: Plan[] = [
  {
    id: 'baton',
    label: 'baton upgrade',
    async make(scope, env) {
      const d = new BatonDaemon(scope, [process.execPath, KV_APP], { KV_SHARDS: '4', ...env });
      await d.start();
      return {
        port: d.port,
        daemon: d,
        async restart() {
          const startedAt = Date.now();
          const job = await d.upgrade();
          const ok = job.state === 'SUCCEEDED';
          return { startedAt, endedAt: Date.now(), ok, job, ...(!ok && { note: `${job.state} ${job.code ?? ''}: ${job.reason ?? ''}` }) };
        },
      };
    },
  },
  {
    id: 'pm2',
    label: 'PM2 reload (cluster, 1 instance)',
    async make(scope, env) {
      const pm2 = new Pm2(scope);
      const port = await freePort();
      await pm2.startCluster({ name: 'kv', script: KV_PM2_APP, env: { PORT: String(port), KV_PM2_DATA: scope.tempDir('baton-bench-kvpm2-'), ...env }, options: { wait_ready: true } });
      await waitFor(async () => ((await request(port, 'GET', '/healthz', undefined, undefined, 2_000)).status === 200 ? true : undefined), 'PM2 kv to answer', 30_000, 20);
      return {
        port,
        async restart() {
          const startedAt = Date.now();
          await pm2.reload('kv');
          return { startedAt, endedAt: Date.now(), ok: true };
        },
      };
    },
  },
  {
    id: 'naive',
    label: 'naive restart (SIGTERM, then start)',
    async make(scope, env) {
      const r = await naiveRestarter(scope, 'kv', env);
      return {
        port: r.port,
        async restart() {
          const startedAt = Date.now();
          await r.restart();
          return { startedAt, endedAt: Date.now(), ok: true };
        },
      };
    },
  },
];


export async function latencyBench(ctx: BenchContext): Promise<Section> {
  const version = wrkVersion();
  if (!version) throw new Error('wrk is not installed (Debian: apt-get install wrk)');
  const seconds = Number(process.env.BENCH_LATENCY_SECONDS ?? (ctx.quick ? 10 : 20));
  const upgrades = Number(process.env.BENCH_LATENCY_UPGRADES ?? (ctx.quick ? 3 : 6));
  const rounds = Number(process.env.BENCH_LATENCY_ROUNDS ?? 1);
  const ids = process.env.BENCH_LATENCY_VARIANTS?.split(',').map((s) => s.trim()) ?? PLANS.map((p) => p.id);
  const keep = process.env.BENCH_LATENCY_KEEP;
  if (keep) mkdirSync(keep, { recursive: true });
  const results: RunResult[] = [];
  for (let round = 1; round <= rounds; round++) {
    for (const id of ids) {
      const plan = PLANS.find((p) => p.id === id);
      if (!plan) throw new Error(`unknown variant ${id} (known: ${PLANS.map((p) => p.id).join(', ')})`);
      const scope = new Scope(`latency/${id}`);
      try {
        const svc = await plan.make(scope, gcEnv());
        const dir = scope.tempDir('baton-bench-wrk-');
        await runWrk(scope, svc.port, { ...MAIN, seconds: WARMUP_S, recordsFile: path.join(dir, 'warmup') });
        const steady = await measure(ctx, scope, plan, svc, { round, mode: 'steady', seconds, upgrades: 0, dir, keep });
        const upgrading = await measure(ctx, scope, plan, svc, { round, mode: 'upgrading', seconds, upgrades, dir, keep });
        if (svc.daemon) upgrading.attribution = attribute(upgrading, svc.daemon.events(), steady.raw.p99);
        results.push(steady, upgrading);
        if (keep && svc.daemon) copyFileSync(svc.daemon.logFile, path.join(keep, `${id}-r${round}-baton.log`));
        if (upgrading.attribution) logAttribution(ctx, upgrading.attribution);
      } finally {
        await scope.close();
        if (scope.leftovers.length) ctx.log(`  ${plan.label}: had to kill leftover pids ${scope.leftovers.join(', ')}`);
      }
    }
  }
  return render(results, { seconds, upgrades, rounds, version });
}

/** Kept between measure() and attribute(): the upgrading run's records (large: not in the JSON). */
const recordsOf = new WeakMap<RunResult, Records[]>();

async function measure(
  ctx: BenchContext,
  scope: Scope,
  plan: Plan,
  svc: Service,
  o: { round: number; mode: 'steady' | 'upgrading'; seconds: number; upgrades: number; dir: string; keep: string | undefined },
): Promise<RunResult> {
  const loadBefore = os.loadavg();
  const t0 = Date.now();
  const files = ['main', 'probe'].map((n) => path.join(o.dir, `${o.mode}-${n}`));
  const main = runWrk(scope, svc.port, { ...MAIN, seconds: o.seconds, recordsFile: files[0]! });
  const probe = runWrk(scope, svc.port, { ...PROBE, seconds: o.seconds, recordsFile: files[1]! });
  main.catch(() => undefined);
  probe.catch(() => undefined);
  const restarts: Restart[] = [];
  // Upgrades at 1 s, then every (seconds − 3) / upgrades s: the last one ends ≥ 2 s before the load does.
  const every = o.upgrades > 0 ? ((o.seconds - 3) * 1000) / o.upgrades : 0;
  for (let i = 0; i < o.upgrades; i++) {
    const wait = t0 + 1_000 + i * every - Date.now();
    if (wait > 0) await sleep(wait);
    // Restarts that ran long (a busy machine): none starts in the run's last 2 s, and the table says how many ran.
    if (Date.now() > t0 + (o.seconds - 2) * 1000) {
      ctx.log(`  ${plan.label}: ${o.upgrades - i} restart(s) left out: the earlier ones took until the end of the run`);
      break;
    }
    const r = await svc.restart();
    restarts.push(r);
    if (!r.ok) ctx.log(`  ${plan.label}: restart ${i + 1} did not complete: ${r.note ?? ''}`);
  }
  const [m, p] = await Promise.all([main, probe]);
  const loadAfter = os.loadavg();
  if (o.keep) for (const f of files) copyFileSync(f, path.join(o.keep, `${plan.id}-r${o.round}-${path.basename(f)}`));
  const result = figures(plan, o, m, p, restarts, loadBefore, loadAfter, t0 + o.seconds * 1000);
  recordsOf.set(result, [m.records, p.records]);
  ctx.log(
    `  ${plan.label} r${o.round} ${o.mode}: ${int(result.requests)} requests, ${result.errorCount} errors, ${result.lost} lost; ` +
      `p50 ${ms(result.raw.p50)} p99 ${ms(result.raw.p99)} max ${ms(result.raw.max)} ms (wrk: p99 ${ms(result.wrk.p99)}); ` +
      `longest stall ${ms(result.longestStall)} ms; ${restarts.length} restarts; load ${loadBefore[0]!.toFixed(1)} → ${loadAfter[0]!.toFixed(1)}`,
  );
  return result;
}

function figures(
  plan: Plan,
  o: { round: number; mode: 'steady' | 'upgrading'; seconds: number },
  m: { summary: WrkSummary; records: Records },
  p: { summary: WrkSummary; records: Records },
  restarts: Restart[],
  loadBefore: number[],
  loadAfter: number[],
  runEnd: number,
): RunResult {
  const lat: number[] = [];
  let lost = 0;
  for (const [w, conns] of [[m, MAIN.conns], [p, PROBE.conns]] as const) {
    let unanswered = 0;
    for (let i = 0; i < w.records.length; i++) {
      if (w.records.latency[i]! >= 0) lat.push(w.records.latency[i]!);
      else unanswered++;
    }
    const e = w.summary.errors;
    lost += Math.max(0, unanswered - conns - e.connect - e.read - e.write);
  }
  const sorted = Float64Array.from(lat).sort();
  const raw: Figures = { p50: pct(sorted, 50), p90: pct(sorted, 90), p99: pct(sorted, 99), p999: pct(sorted, 99.9), max: sorted[sorted.length - 1] ?? NaN };
  const runUs = Math.max(m.summary.durationUs, p.summary.durationUs);
  const [c50, c90, c99, c999] = correctedPercentiles(lat.map((v) => Math.round(v * 1000)), runUs, CONNS, [50, 90, 99, 99.9]);
  const errors: Record<string, number> = {};
  for (const s of [m.summary, p.summary]) for (const [k, v] of Object.entries(s.errors)) if (v) errors[k] = (errors[k] ?? 0) + v;
  const stalls = probeStalls(p.records, runEnd);
  const out: RunResult = {
    variant: plan.id,
    label: plan.label,
    round: o.round,
    mode: o.mode,
    seconds: o.seconds,
    loadBefore,
    loadAfter,
    requests: m.summary.requests + p.summary.requests,
    errors,
    errorCount: Object.values(errors).reduce((a, b) => a + b, 0),
    lost,
    raw,
    wrk: { p50: c50!, p90: c90!, p99: c99!, p999: c999!, max: raw.max },
    wrkMain: { p50: m.summary.latencyUs.percentiles['50']! / 1000, p99: m.summary.latencyUs.percentiles['99']! / 1000, max: m.summary.latencyUs.max / 1000 },
    longestStall: Math.max(0, ...stalls.map((s) => s.gap)),
    restartStalls: restarts.map((r) => Math.max(0, ...stalls.filter((s) => s.to > r.startedAt && s.from < r.endedAt + FIRST_MS).map((s) => s.gap))),
    restarts,
  };
  if (restarts.some((r) => r.job?.handoff)) {
    out.clientGaps = restarts.flatMap((r) => {
      const h = r.job?.handoff;
      if (!h?.oldPid || !h.newPid) return [];
      let lastOld = -Infinity;
      let firstNew = Infinity;
      for (const rec of [m.records, p.records]) {
        for (let i = 0; i < rec.length; i++) {
          if (rec.latency[i]! < 0) continue;
          const e = rec.start[i]! + rec.latency[i]!;
          if (rec.pid[i] === h.oldPid) lastOld = Math.max(lastOld, e);
          else if (rec.pid[i] === h.newPid) firstNew = Math.min(firstNew, e);
        }
      }
      return Number.isFinite(lastOld) && Number.isFinite(firstNew) ? [firstNew - lastOld] : [];
    });
  }
  return out;
}

/**
 * Gaps between consecutive answers on each probe connection (one connection per wrk
 * thread), and from its last answer to the end of the run (a connection that got none
 * again before the end waited all that time).
 */
function probeStalls(r: Records, runEnd: number): { conn: number; from: number; to: number; gap: number }[] {
  const ends = new Map<number, number[]>();
  const starts = new Map<number, number>();
  for (let i = 0; i < r.length; i++) {
    if (r.latency[i]! < 0) continue;
    const c = r.conn[i]!;
    let l = ends.get(c);
    if (!l) ends.set(c, (l = []));
    l.push(r.start[i]! + r.latency[i]!);
    starts.set(c, Math.min(starts.get(c) ?? Infinity, r.start[i]!));
  }
  const out: { conn: number; from: number; to: number; gap: number }[] = [];
  for (const [c, l] of ends) {
    l.sort((a, b) => a - b);
    let prev = starts.get(c)!;
    for (const e of l) {
      out.push({ conn: c, from: prev, to: e, gap: e - prev });
      prev = e;
    }
    if (runEnd > prev) out.push({ conn: c, from: prev, to: runEnd, gap: runEnd - prev });
  }
  return out;
}

interface Windows {
  /** [phase, from, to] in epoch ms. */
  spans: [Phase, number, number][];
  newPid: number;
  /** When the successor started accepting (epoch ms). */
  accepts: number;
}

/** The phases of one committed handoff, from the supervisor's phase lines and the successor's kv.opened. */
function windowsOf(job: JobRecord, events: LogEvent[]): Windows | undefined {
  const h = job.handoff;
  if (!h || h.outcome !== 'committed' || !h.newPid) return undefined;
  const mine = events.filter((e) => e.handoffId === h.handoffId);
  const at = (p: string) => mine.find((e) => e.event === 'handoff.phase' && e.phase === p)?.time;
  const start = Date.parse(job.startedAt ?? job.createdAt);
  const draining = at('draining');
  const sealing = at('sealing');
  const begin = at('begin');
  const opened = events.find((e) => e.pid === h.newPid && e.event === 'kv.opened');
  const accepts = opened ? Number(opened.openedAt ?? opened.time) : at('await_ready');
  if (draining === undefined || sealing === undefined || begin === undefined || accepts === undefined) return undefined;
  return {
    newPid: h.newPid,
    accepts,
    spans: [
      ['boot', start, draining],
      ['drain', draining, sealing],
      ['seal', sealing, begin],
      ['lock + open', begin, accepts],
      ['first second', accepts, accepts + FIRST_MS],
    ],
  };
}

/**
 * Every request of the upgrading run slower than `threshold` (the steady run's p99):
 * the phase it overlapped most (requests that overlap no handoff: "outside handoffs"),
 * and whether a GC pause of the process that answered it fell inside it.
 */
function attribute(run: RunResult, events: LogEvent[], threshold: number): Attribution | undefined {
  const recs = recordsOf.get(run);
  if (!recs) return undefined;
  const windows = run.restarts.map((r) => r.job && windowsOf(r.job, events)).filter((w): w is Windows => w !== undefined);
  const gcs = new Map<number, [number, number][]>();
  const appPids = new Set<number>();
  for (const r of run.restarts) {
    if (r.job?.handoff?.oldPid) appPids.add(r.job.handoff.oldPid);
    if (r.job?.handoff?.newPid) appPids.add(r.job.handoff.newPid);
  }
  const gcAll: number[] = [];
  for (const e of events) {
    if (e.event !== 'bench.gc') continue;
    const list = gcs.get(e.pid) ?? [];
    for (const [s, d] of e.gcs as [number, number, number][]) {
      list.push([s, s + d]);
      if (appPids.has(e.pid)) gcAll.push(d);
    }
    gcs.set(e.pid, list);
  }
  const byPhase = Object.fromEntries(PHASES.map((p) => [p, { lat: [] as number[], puts: 0, withGc: 0, gcMs: 0 }])) as Record<Phase, { lat: number[]; puts: number; withGc: number; gcMs: number }>;
  let slow = 0;
  let withGc = 0;
  for (const r of recs) {
    for (let i = 0; i < r.length; i++) {
      const lat = r.latency[i]!;
      if (!(lat > threshold)) continue;
      slow++;
      const s = r.start[i]!;
      const e = s + lat;
      let best: Phase = 'outside handoffs';
      let bestOverlap = 0;
      for (const w of windows) {
        for (const [name, from, to] of w.spans) {
          const ov = Math.min(e, to) - Math.max(s, from);
          if (ov > bestOverlap) {
            bestOverlap = ov;
            best = name;
          }
        }
      }
      let gcOverlap = 0;
      for (const [gs, ge] of gcs.get(r.pid[i]!) ?? []) gcOverlap += Math.max(0, Math.min(e, ge) - Math.max(s, gs));
      const b = byPhase[best];
      b.lat.push(lat);
      b.puts += r.put[i]!;
      if (gcOverlap > 0) {
        b.withGc++;
        b.gcMs += gcOverlap;
        withGc++;
      }
    }
  }
  const phaseMs = Object.fromEntries(PHASES.map((p) => [p, NaN])) as Record<Phase, number>;
  for (const p of PHASES) {
    const d = windows.map((w) => w.spans.find(([n]) => n === p)).filter((x) => x !== undefined).map(([, a, b]) => b - a);
    if (d.length) phaseMs[p] = d.reduce((a, b) => a + b, 0) / d.length;
  }
  const handoffs = windows.map((w) => {
    const from = w.spans[0]![1];
    const to = w.spans[w.spans.length - 1]![2];
    const lat: number[] = [];
    for (const r of recs) for (let i = 0; i < r.length; i++) if (r.latency[i]! >= 0 && r.start[i]! >= from && r.start[i]! < to) lat.push(r.latency[i]!);
    const s = summarize(lat);
    return { phases: Object.fromEntries(w.spans.map(([n, a, b]) => [n, b - a])), requests: s.n, p50: s.p50, p99: s.p99, max: s.max, slow: lat.filter((v) => v > threshold).length };
  });
  const before: number[] = [];
  const after: number[] = [];
  for (const w of windows) {
    const from = w.spans[0]![1];
    for (const r of recs) {
      for (let i = 0; i < r.length; i++) {
        if (r.latency[i]! < 0 || r.pid[i] !== w.newPid || r.start[i]! >= w.accepts || r.start[i]! < from) continue;
        before.push(w.accepts - r.start[i]!);
        after.push(r.start[i]! + r.latency[i]! - w.accepts);
      }
    }
  }
  const b = summarize(before);
  const a = summarize(after);
  const gcSum = summarize(gcAll);
  return {
    backlog: { requests: b.n, before: { p50: b.p50, p90: b.p90, max: b.max }, after: { p50: a.p50, p90: a.p90, max: a.max } },
    handoffs,
    thresholdMs: threshold,
    slow,
    withGc,
    byPhase: Object.fromEntries(
      PHASES.map((p) => {
        const s = summarize(byPhase[p].lat);
        return [p, { count: s.n, puts: byPhase[p].puts, p50: s.p50, max: s.max, withGc: byPhase[p].withGc, gcMs: byPhase[p].gcMs }];
      }),
    ) as Attribution['byPhase'],
    gc: { count: gcAll.length, totalMs: gcAll.reduce((a, b) => a + b, 0), maxMs: gcSum.max },
    phaseMs,
  };
}

function logAttribution(ctx: BenchContext, a: Attribution): void {
  ctx.log(`    slow (> ${ms(a.thresholdMs)} ms): ${a.slow}; ${PHASES.map((p) => `${p} ${a.byPhase[p].count}`).join(', ')}; with a GC pause of the answering process: ${a.withGc}`);
}

const load = (l: number[]) => l[0]!.toFixed(1);

function render(results: RunResult[], o: { seconds: number; upgrades: number; rounds: number; version: string }): Section {
  const steadyOf = (r: RunResult) => results.find((x) => x.variant === r.variant && x.round === r.round && x.mode === 'steady');
  const ratio = (r: RunResult, k: 'raw' | 'wrk') => {
    const s = steadyOf(r);
    return r.mode === 'upgrading' && s ? `${(r[k].p99 / s[k].p99).toFixed(1)}×` : '';
  };
  const errorsText = (r: RunResult) => (r.errorCount ? `${int(r.errorCount)} (${Object.entries(r.errors).map(([k, v]) => `${k} ${int(v)}`).join(', ')})` : '0');
  const stallCell = (r: RunResult) => (r.mode === 'upgrading' && r.restartStalls.length ? `${ms(r.longestStall)} (per restart p50 ${ms(summarize(r.restartStalls).p50)})` : ms(r.longestStall));
  const rows = results.map((r) => [
    r.label + (o.rounds > 1 ? ` (round ${r.round})` : ''),
    r.mode === 'upgrading' ? `${r.restarts.filter((x) => x.ok).length} upgrades` : 'steady',
    int(r.requests),
    errorsText(r),
    int(r.lost),
    `${ms(r.raw.p50)} / **${ms(r.raw.p99)}** / ${ms(r.raw.max)}`,
    ratio(r, 'raw'),
    `${ms(r.wrk.p50)} / ${ms(r.wrk.p99)} / ${ms(r.wrk.max)}`,
    ratio(r, 'wrk'),
    stallCell(r),
    `${load(r.loadBefore)} → ${load(r.loadAfter)}`,
  ]);
  const head = ['variant', 'run', 'requests', 'errors', 'lost', 'p50 / p99 / max ms', 'p99 vs steady', 'wrk-corrected p50 / p99 / max ms', 'wrk p99 vs steady', 'longest per-connection stall ms', 'load avg (1 min) before → after'];
  const attrib = results.filter((r) => r.attribution);
  const attribTables = attrib.map((r) => {
    const a = r.attribution!;
    const rowsA = PHASES.map((p) => {
      const b = a.byPhase[p];
      return [PHASE_TEXT[p], Number.isFinite(a.phaseMs[p]) ? ms(a.phaseMs[p]) : '—', int(b.count), a.slow ? `${Math.round((100 * b.count) / a.slow)} %` : 'n/a', b.count ? int(b.puts) : '—', b.count ? `${ms(b.p50)} / ${ms(b.max)}` : '—', b.count ? `${b.withGc} (${ms(b.gcMs)} ms)` : '—'];
    });
    const gaps = r.clientGaps?.length ? summarize(r.clientGaps) : undefined;
    return [
      `**${r.label}${o.rounds > 1 ? `, round ${r.round}` : ''}**: ${a.slow} of ${int(r.requests)} requests of the upgrading run took longer than the steady run's p99 (${ms(a.thresholdMs)} ms); load average ${load(r.loadBefore)} → ${load(r.loadAfter)}.` +
        (gaps ? ` Last answer from the old process → first from the new one (any connection): p50 ${ms(gaps.p50)}, max ${ms(gaps.max)} ms.` : ''),
      '',
      table(['phase the slow request overlapped most', 'phase length ms (mean)', 'slow requests', 'share', 'of which PUTs', 'their latency p50 / max ms', 'with a GC pause of the answering process (pause time inside them, summed)'], rowsA),
      '',
      `Requests that waited for the successor (sent before it accepted, answered by it; ${int(a.backlog.requests)} over the handoffs): before it accepted p50 ${ms(a.backlog.before.p50)}, p90 ${ms(a.backlog.before.p90)}, max ${ms(a.backlog.before.max)} ms; after it accepted p50 ${ms(a.backlog.after.p50)}, p90 ${ms(a.backlog.after.p90)}, max ${ms(a.backlog.after.max)} ms.`,
      '',
      `GC pauses ≥ 1 ms in the app processes during the run: ${a.gc.count}, ${ms(a.gc.totalMs)} ms in all, longest ${ms(a.gc.maxMs)} ms.`,
    ].join('\n');
  });
  const notes = results.flatMap((r) => r.restarts.filter((x) => !x.ok).map((x) => `- ${r.label} (${r.mode}, round ${r.round}): ${x.note ?? 'restart failed'}`));
  const by = (v: string, m: string) => results.filter((r) => r.variant === v && r.mode === m);
  const med = (rs: RunResult[], f: (r: RunResult) => number) => {
    const v = rs.map(f).sort((x, y) => x - y);
    return v.length ? (v[(v.length - 1) >> 1]! + v[v.length >> 1]!) / 2 : NaN;
  };
  const headFor = (v: string, name: string) => {
    const s = by(v, 'steady');
    const u = by(v, 'upgrading');
    if (!s.length || !u.length) return undefined;
    const p99s = med(s, (r) => r.raw.p99);
    const p99u = med(u, (r) => r.raw.p99);
    const errors = med(u, (r) => r.errorCount + r.lost);
    const stall = med(u, (r) => r.longestStall);
    // Where most requests failed, the answered ones' latency says little: the failures and the stall do.
    if (errors > med(u, (r) => r.requests)) return `${name} ${int(errors)} errors (nothing listening), longest per-connection stall ${ms(stall)} ms`;
    return `${name} p99 ${ms(p99s)} → ${ms(p99u)} ms (${(p99u / p99s).toFixed(1)}×), max ${ms(med(u, (r) => r.raw.max))} ms, longest per-connection stall ${ms(stall)} ms, ${int(errors)} errors`;
  };
  const loads = results.map((r) => r.loadBefore[0]!).concat(results.map((r) => r.loadAfter[0]!));
  const headline =
    `**Tail latency during upgrades** (wrk, ${CONNS} keep-alive connections, PUT + GET /healthz on fixtures/kv, ${o.seconds} s steady vs ${o.seconds} s with ${o.upgrades} upgrades): ` +
    [headFor('baton', 'baton'), headFor('pm2', 'PM2 reload'), headFor('naive', 'naive restart')].filter(Boolean).join('; ') +
    `${o.rounds > 1 ? ` (medians of ${o.rounds} rounds)` : ''}; load average ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}.`;
  const markdown = [
    `wrk ${o.version}, ${CONNS} keep-alive connections: ${MAIN.conns} on ${MAIN.threads} threads and ${PROBE.conns} more on a thread each (their per-connection stalls are timed), every connection alternating \`PUT /kv/<new key>\` (32 B, fsynced before the answer) and \`GET /healthz\`; per service a ${WARMUP_S} s warm-up, then ${o.seconds} s without upgrades and ${o.seconds} s with ${o.upgrades} (1 s in, then every ${(((o.seconds - 3) * 1000) / Math.max(1, o.upgrades) / 1000).toFixed(1)} s)${o.rounds > 1 ? `, ${o.rounds} rounds, the services alternating` : ''}. baton: fixtures/kv (4 shards) under \`baton run\`, upgrades through the admin API. PM2 7 \`reload\`, cluster mode, 1 instance, of the same HTTP front end and store (bench/apps/kv-pm2: kv's warm-up, then \`listen\` and PM2's \`wait_ready\`; kv's keep-alive-safe drain and a seal on SIGINT; a data dir per process, since PM2 carries no state across; PM2's defaults otherwise: \`listen_timeout\` 3 s, \`kill_timeout\` 1.6 s). Naive: fixtures/kv stand-alone, SIGTERM (it exits at once), then started again on the same data.`,
    '',
    '- **p50 / p99 / max**: each request as measured (request written → answer read), all connections. **wrk-corrected**: the same with wrk 4\'s correction for coordinated omission (what `wrk --latency` prints: a request that waited adds the ones its connection would have sent meanwhile), computed over all connections exactly as wrk does (checked against wrk\'s own figures for its 60-connection process, in the JSON).',
    '- **errors**: wrk\'s (connect, read, write, timeout, non-2xx); **lost**: requests never answered that wrk did not count as errors either (the server closed the connection under them), beyond the one per connection in flight when wrk stops.',
    `- **longest per-connection stall**: the longest time one of the ${PROBE.conns} timed connections went without an answer (for the upgrading run also the p50 over the restarts of the longest one overlapping each).`,
    '- The load average is the machine\'s (2 CPUs shared with other work, which the bench does not stop).',
    '',
    table(head, rows),
    ...(attrib.length
      ? [
          '',
          "**Where baton's slow requests come from.** Each request of the upgrading run slower than the steady run's p99 is attributed to the handoff phase it overlapped most, from the supervisor's phase lines and the successor's `kv.opened` (when it starts accepting); a GC pause of the process that answered it (main thread, ≥ 1 ms, bench/lib/gc-trace.ts) is counted when it falls inside the request. A handoff that takes longer than the gap to the next one (a busy machine) has the next spawn inside its successor's first second: a request is counted once, in the phase it overlapped most.",
          '',
          ...attribTables.flatMap((t) => [t, '']),
        ]
      : []),
    ...(notes.length ? ['', 'Restarts that did not complete:', ...notes] : []),
  ].join('\n');
  return { id: 'latency', title: 'Tail latency during upgrades', markdown, headline, data: results };
}
