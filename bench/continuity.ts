/**
 * Supervisor continuity (issue 22): what clients see when `baton` itself is restarted or
 * replaced, before and after baton could do it without the app. Four ways, each on a
 * fresh `baton run` of fixtures/kv under the same load (32 keep-alive KvLoad connections
 * with writes, plus the 5 ms new-connection prober), N events each, after a control row
 * where nothing happens (the gaps and latencies the machine gives anyway):
 *   - supervisor crash, before: SIGKILL `baton run`, run it again at once with
 *     BATON_PYTHON=/nonexistent: it cannot take the listeners back, so it stops the
 *     orphaned app gracefully, binds anew and cold-starts (daemon/takeover.ts's fallback);
 *   - supervisor crash, after: the same with the python3 helper: the listeners are taken
 *     back from the orphan (os/listener-reclaim.ts) and the app is re-adopted;
 *   - replacing the supervisor, before: `baton stop` (POST /v1/stop, what the CLI sends),
 *     then `baton run` again: how a new baton or a changed config was applied until now;
 *   - replacing the supervisor, after: `baton upgrade --self`.
 * Per event: failed requests by class, the prober's refused/reset probes and its longest
 * no-answer gap, whether the app pid changed, the time until the (new) supervisor
 * answers `GET /v1/status` with the app, the longest time nobody answered it, and the
 * self-upgrade's own duration from its job record. Every acknowledged write of the
 * variant is read back at the end; after every event the processes left are checked
 * (exactly the supervisor and its app).
 *
 *   npm run bench -- --only continuity [--quick]
 *   BENCH_CONTINUITY_VARIANTS=crash-after BENCH_CONTINUITY_EVENTS=10 BENCH_CONTINUITY_LOGS=/tmp \
 *     npm run bench -- --only continuity --no-write     # one row, 10 events, its log kept in /tmp
 */
import { copyFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { adminRequest } from '../src/daemon/admin.js';
import { BatonDaemon } from './lib/daemon.js';
import { failureClass, KvLoad } from './lib/kv-load.js';
import { ProberProcess, type ProbeReport } from './lib/prober.js';
import { KV_APP, Scope, sleep, taggedPids, waitFor } from './lib/scope.js';
import { int, ms, summarize, table } from './lib/stats.js';
import type { BenchContext, Section } from './run.js';

const CONNS = 32;
const PROBE_EVERY_MS = 5;
/** How often the admin socket is asked for the status (each answer is also an audit line). */
const STATUS_EVERY_MS = 20;

interface Variant {
  id: string;
  label: string;
  /** What is done, for the table. */
  how: string;
  event(d: BatonDaemon, rec: EventResult): Promise<void>;
}

interface EventResult {
  /** Failed requests during this event's window, by kind (KvLoad's kinds). */
  failures: Record<string, number>;
  requests: number;
  probe?: ProbeReport;
  appBefore: number;
  appAfter?: number;
  supervisorBefore: number;
  supervisorAfter?: number;
  /** Event start (the SIGKILL, the stop request, the upgrade command) → first status answer from the new supervisor with its app. */
  backMs?: number;
  /** Longest time in the window without any status answer. */
  adminGapMs?: number;
  /** The self-upgrade's job record: durationMs, and the command's wall time. */
  jobMs?: number;
  commandMs?: number;
  /** Processes of this run other than the supervisor and its app, after the event. */
  extras: string[];
}

interface VariantResult {
  id: string;
  label: string;
  how: string;
  events: EventResult[];
  requests: number;
  failures: Record<string, number>;
  maxLatencyMs: number;
  verified?: number;
  lost?: number;
  /** From the supervisors' logs: taking the listeners back (crash, after), ms each. */
  reclaimMs: number[];
  /** From the supervisors' logs: graceful takeovers of an orphan (crash, before). */
  takeovers: number;
  notes: string[];
}

const VARIANTS: Variant[] = [
  {
    // What the load, the prober and the status poll see on this machine when nothing happens.
    id: 'control',
    label: 'no event (control)',
    how: 'nothing: 2 s of the same load',
    async event() {
      await sleep(2_000);
    },
  },
  {
    id: 'crash-before',
    label: 'supervisor crash, before (graceful takeover)',
    how: 'SIGKILL `baton run`, run it again with `BATON_PYTHON=/nonexistent`',
    async event(d) {
      await d.kill();
      await d.start({ BATON_PYTHON: '/nonexistent' });
    },
  },
  {
    id: 'crash-after',
    label: 'supervisor crash, after (listeners taken back)',
    how: 'SIGKILL `baton run`, run it again',
    async event(d) {
      await d.kill();
      await d.start();
    },
  },
  {
    id: 'replace-before',
    label: 'replacing the supervisor, before (stop + run)',
    how: '`baton stop`, then `baton run` again',
    async event(d) {
      await d.stop();
      await d.start();
    },
  },
  {
    id: 'replace-after',
    label: 'replacing the supervisor, after (`upgrade --self`)',
    how: '`baton upgrade --self`',
    async event(d, rec) {
      const t0 = performance.now();
      const job = await d.upgradeSelf();
      rec.commandMs = performance.now() - t0;
      rec.jobMs = job.durationMs;
      if (job.state !== 'SUCCEEDED') throw new Error(`baton upgrade --self: ${job.state} ${job.code ?? ''} ${job.reason ?? ''}`);
    },
  },
];

/** Polls `GET /v1/status` on the admin socket; keeps when each answer came and from whom. */
class StatusWatch {
  readonly answers: { at: number; supervisor: number; app?: number }[] = [];
  private running = true;
  private readonly loop: Promise<void>;

  constructor(socket: string) {
    this.loop = (async () => {
      while (this.running) {
        try {
          const r = await adminRequest(socket, 'GET', '/v1/status', undefined, { timeoutMs: 2_000 });
          const b = r.body as { supervisor?: { pid: number }; app?: { pid: number } | null };
          if (r.status === 200 && b.supervisor) this.answers.push({ at: performance.now(), supervisor: b.supervisor.pid, ...(b.app && { app: b.app.pid }) });
        } catch {
          // nobody answers: that is what is measured
        }
        await sleep(STATUS_EVERY_MS);
      }
    })();
  }

  /** The first answer at or after `since` from `supervisor` with an app. */
  firstFrom(supervisor: number, since: number): { at: number; app?: number } | undefined {
    return this.answers.find((a) => a.at >= since && a.supervisor === supervisor && a.app !== undefined);
  }

  longestGap(): number {
    let gap = 0;
    for (let i = 1; i < this.answers.length; i++) gap = Math.max(gap, this.answers[i]!.at - this.answers[i - 1]!.at);
    return gap;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }
}

function delta(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (v - (before[k] ?? 0) > 0) out[k] = v - (before[k] ?? 0);
  return out;
}

/** Failed requests by the classes of the table: refused, reset, timeout, 5xx, other. */
export function byClass(failures: Record<string, number>): { refused: number; reset: number; timeout: number; '5xx': number; other: number } {
  const out = { refused: 0, reset: 0, timeout: 0, '5xx': 0, other: 0 };
  for (const [kind, n] of Object.entries(failures)) {
    const c = failureClass(kind);
    if (c === 'refused' || c === 'reset' || c === 'timeout') out[c] += n;
    else if (/_5\d\d$/.test(kind)) out['5xx'] += n;
    else out.other += n;
  }
  return out;
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).slice(0, 4).join(' ');
  } catch {
    return '?';
  }
}

async function runEvent(ctx: BenchContext, scope: Scope, d: BatonDaemon, load: KvLoad, v: Variant): Promise<EventResult> {
  const settleMs = ctx.quick ? 500 : 1_000;
  const appBefore = await d.appPid();
  const rec: EventResult = { failures: {}, requests: 0, appBefore, supervisorBefore: d.pid, extras: [] };
  const failures0 = { ...load.failures };
  const requests0 = load.requests;
  const prober = new ProberProcess(scope, d.port, PROBE_EVERY_MS);
  const watch = new StatusWatch(d.socket);
  try {
    await waitFor(() => prober.answered().then(() => true), 'the prober to get its first answer', 30_000);
    await waitFor(() => watch.firstFrom(d.pid, 0), 'a first status answer', 30_000);
    await sleep(settleMs);
    const t0 = performance.now();
    await v.event(d, rec);
    rec.supervisorAfter = d.pid;
    const back = await waitFor(() => watch.firstFrom(d.pid, t0), `the supervisor (pid ${d.pid}) to answer its status`, 30_000, 5);
    rec.backMs = back.at - t0;
    rec.appAfter = back.app;
    await sleep(settleMs);
  } finally {
    await watch.stop();
    rec.probe = await prober.stop().catch(() => undefined);
    rec.adminGapMs = watch.longestGap();
    rec.failures = delta(load.failures, failures0);
    rec.requests = load.requests - requests0;
  }
  // Left: the supervisor and its app, nothing else (an old supervisor, a second app, a helper).
  const want = new Set([d.pid, rec.appAfter]);
  const extras = await waitFor(
    async () => {
      const extra = (await taggedPids(scope.tag)).filter((p) => !want.has(p));
      return extra.length === 0 ? [] : undefined;
    },
    'only the supervisor and its app to be left',
    5_000,
    50,
  ).catch(async () => (await taggedPids(scope.tag)).filter((p) => !want.has(p)));
  rec.extras = extras.map((p) => `${p} (${cmdline(p)})`);
  return rec;
}

async function runVariant(ctx: BenchContext, v: Variant, n: number): Promise<VariantResult> {
  const scope = new Scope(`continuity/${v.id}`);
  const out: VariantResult = { id: v.id, label: v.label, how: v.how, events: [], requests: 0, failures: {}, maxLatencyMs: NaN, reclaimMs: [], takeovers: 0, notes: [] };
  let d: BatonDaemon | undefined;
  try {
    d = new BatonDaemon(scope, [process.execPath, KV_APP]);
    await d.start();
    const load = new KvLoad(d.port, { conns: CONNS });
    try {
      await sleep(ctx.quick ? 500 : 1_000);
      for (let i = 0; i < n; i++) {
        const rec = await runEvent(ctx, scope, d, load, v);
        out.events.push(rec);
        const c = byClass(rec.failures);
        ctx.log(
          `  ${v.id} #${i + 1}: failed ${JSON.stringify(rec.failures)} (refused ${c.refused}, reset ${c.reset}), prober ${JSON.stringify(rec.probe?.failed ?? {})} of ${rec.probe?.probes ?? 0}, refused window ${ms(rec.probe?.longestRefusedMs)} ms, gap ${ms(rec.probe?.longestNoAnswerMs)} ms, ` +
            `app ${rec.appBefore} → ${rec.appAfter}, supervisor ${rec.supervisorBefore} → ${rec.supervisorAfter}, back in ${ms(rec.backMs)} ms, admin gap ${ms(rec.adminGapMs)} ms` +
            `${rec.jobMs !== undefined ? `, job ${ms(rec.jobMs)} ms` : ''}${rec.extras.length ? `, LEFT: ${rec.extras.join(', ')}` : ''}`,
        );
      }
    } finally {
      await load.stop();
      out.requests = load.requests;
      out.failures = load.failures;
      out.maxLatencyMs = load.latencyPercentile(100);
    }
    const inWindows = sum(failedPerEvent(out.events));
    const all = Object.values(out.failures).reduce((a, b) => a + b, 0);
    if (all !== inWindows) out.notes.push(`${all - inWindows} failed requests outside the events' windows: ${JSON.stringify(delta(out.failures, sumKinds(out.events)))}`);
    const verdict = await load.verify();
    out.verified = verdict.checked;
    out.lost = verdict.lost.length + verdict.resurrected.length;
    if (out.lost) out.notes.push(`lost: ${[...verdict.lost, ...verdict.resurrected].slice(0, 5).join(', ')}`);
    for (const e of d.events()) {
      if (e.event === 'daemon.listeners_reclaimed' && typeof e.durationMs === 'number') out.reclaimMs.push(e.durationMs);
      if (e.event === 'daemon.takeover') out.takeovers++;
    }
    const surprises = d.events().filter((e) => (v.id === 'crash-after' && (e.event === 'daemon.reclaim_failed' || e.event === 'daemon.takeover')) || e.event === 'self_upgrade.aborted');
    for (const e of surprises) out.notes.push(`log: ${JSON.stringify(e).slice(0, 300)}`);
  } catch (err) {
    out.notes.push(`did not complete: ${(err as Error).message}`);
    ctx.log(`  ${v.id}: FAILED: ${(err as Error).message}`);
  } finally {
    // BENCH_CONTINUITY_LOGS=DIR keeps each row's supervisor and app log (DIR/continuity-ID.log).
    const keep = process.env.BENCH_CONTINUITY_LOGS;
    if (d && keep) {
      try {
        copyFileSync(d.logFile, path.join(keep, `continuity-${v.id}.log`));
      } catch (err) {
        ctx.log(`  ${v.id}: cannot keep the log in ${keep}: ${(err as Error).message}`);
      }
    }
    await scope.close();
    if (scope.leftovers.length) out.notes.push(`had to kill leftover pids ${scope.leftovers.join(', ')} at the end`);
  }
  return out;
}

export async function continuityBench(ctx: BenchContext): Promise<Section> {
  const n = Number(process.env.BENCH_CONTINUITY_EVENTS) || (ctx.quick ? 1 : 5);
  const only = process.env.BENCH_CONTINUITY_VARIANTS?.split(',');
  const results: VariantResult[] = [];
  for (const v of VARIANTS) {
    if (only && !only.includes(v.id)) continue;
    results.push(await runVariant(ctx, v, n));
  }
  return { id: 'continuity', title: 'Supervisor continuity: restarting and replacing baton itself', markdown: render(results, n, ctx), headline: headline(results, n), data: results };
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

function sumKinds(events: EventResult[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const e of events) for (const [k, v] of Object.entries(e.failures)) out[k] = (out[k] ?? 0) + v;
  return out;
}

const failedPerEvent = (events: EventResult[]): number[] => events.map((e) => sum(Object.values(e.failures)));

function totals(r: VariantResult): { failed: ReturnType<typeof byClass>; probeRefused: number; probeReset: number; probeOther: number; probes: number; appChanged: number } {
  const failed = byClass({});
  for (const k of Object.keys(failed) as (keyof typeof failed)[]) failed[k] = sum(r.events.map((e) => byClass(e.failures)[k]));
  const probe = (kind: string) => sum(r.events.map((e) => e.probe?.failed[kind] ?? 0));
  const probeAll = sum(r.events.map((e) => Object.values(e.probe?.failed ?? {}).reduce((a, b) => a + b, 0)));
  return {
    failed,
    probeRefused: probe('ECONNREFUSED'),
    probeReset: probe('ECONNRESET'),
    probeOther: probeAll - probe('ECONNREFUSED') - probe('ECONNRESET'),
    probes: sum(r.events.map((e) => e.probe?.probes ?? 0)),
    appChanged: r.events.filter((e) => e.appAfter !== undefined && e.appAfter !== e.appBefore).length,
  };
}

/** "p50 (max)" of the values, or n/a. */
function spread(xs: (number | undefined)[]): string {
  const v = xs.filter((x): x is number => x !== undefined && Number.isFinite(x));
  if (!v.length) return 'n/a';
  const s = summarize(v);
  return v.length === 1 ? ms(s.max) : `${ms(s.p50)} (${ms(s.max)})`;
}

function headline(results: VariantResult[], n: number): string {
  const cell = (id: string) => {
    const r = results.find((x) => x.id === id);
    if (!r || r.events.length === 0) return 'n/a';
    const t = totals(r);
    const failed = sum(Object.values(t.failed));
    return `${int(failed)} failed requests (${int(t.failed.refused)} refused, ${int(t.failed.reset)} reset), ${int(t.probeRefused + t.probeReset)} refused/reset probes, app restarted ${t.appChanged} of ${r.events.length}`;
  };
  return (
    `**Supervisor continuity** (${n} events each, ${CONNS} keep-alive connections with writes + a new connection every ${PROBE_EVERY_MS} ms): ` +
    `\`baton run\` SIGKILLed and run again — before (graceful takeover) ${cell('crash-before')}; **after (listeners taken back) ${cell('crash-after')}**. ` +
    `Replacing baton — before (stop + run) ${cell('replace-before')}; **after (\`baton upgrade --self\`) ${cell('replace-after')}**.`
  );
}

function render(results: VariantResult[], n: number, ctx: BenchContext): string {
  const clients = results.map((r) => {
    const t = totals(r);
    const failed = sum(Object.values(t.failed));
    return [
      r.label,
      r.events.length,
      int(r.requests),
      `**${int(failed)}**`,
      int(t.failed.refused),
      int(t.failed.reset),
      int(t.failed.timeout),
      int(t.failed['5xx']),
      int(t.failed.other),
      `**${int(t.probeRefused)}** / **${int(t.probeReset)}** / ${int(t.probeOther)} of ${int(t.probes)}`,
      spread(r.events.map((e) => e.probe?.longestRefusedMs)),
      spread(r.events.map((e) => e.probe?.longestNoAnswerMs)),
      ms(r.maxLatencyMs),
    ];
  });
  const supervisor = results.map((r) => {
    const t = totals(r);
    const left = r.events.filter((e) => e.extras.length).length;
    return [
      r.label,
      r.how,
      r.events.length ? `${t.appChanged} of ${r.events.length}` : 'n/a',
      r.verified !== undefined ? `${int(r.verified)} checked, **${r.lost} lost**` : 'n/a',
      spread(r.events.map((e) => e.backMs)),
      spread(r.events.map((e) => e.adminGapMs)),
      r.id === 'replace-after'
        ? `job ${spread(r.events.map((e) => e.jobMs))}; command ${spread(r.events.map((e) => e.commandMs))}`
        : [r.reclaimMs.length ? `listeners taken back ×${r.reclaimMs.length}: ${spread(r.reclaimMs)}` : '', r.takeovers ? `graceful takeover ×${r.takeovers}` : ''].filter(Boolean).join('; ') || '—',
      left ? `**${left} of ${r.events.length}**` : '0',
    ];
  });
  const notes = results.flatMap((r) => [
    ...r.notes.map((x) => `- ${r.label}: ${x}`),
    ...r.events.flatMap((e, i) => (e.extras.length ? [`- ${r.label}, event ${i + 1}: left running: ${e.extras.join(', ')}`] : [])),
  ]);
  return [
    `fixtures/kv under ${CONNS} keep-alive connections doing GET/PUT/DELETE back to back (no retries; a refused connect fails in ~0.1 ms and the loop goes on, so a refused window counts many times), plus the prober: a new connection every ${PROBE_EVERY_MS} ms in a process of its own. A fresh \`baton run\` per row, ${n} event${n === 1 ? '' : 's'} per row${ctx.quick ? ' (--quick)' : ''}; each event has ${ctx.quick ? '0.5' : '1'} s of load before and after it, and the counts are for those windows. The crashed supervisor is run again as soon as it is gone (no restart delay).`,
    '',
    '**What clients saw**: failed requests of the load by class, totals over the events; the prober\'s refused / reset / other failed probes of all its probes, its longest run of refused or reset probes (**refused window**) and its longest time without any answer (**no-answer gap**: nothing listening, or connections waiting in a backlog nobody accepts from), per event.',
    '',
    table(['variant', 'events', 'requests', 'failed', 'refused', 'reset', 'timeout', '5xx', 'other', 'prober refused / reset / other', 'refused window ms p50 (max)', 'no-answer gap ms p50 (max)', 'max latency ms'], clients),
    '',
    '**What the supervisor did**: whether the app process was replaced; every acknowledged write of the row read back at the end; **supervisor back**: from the event (SIGKILL, stop request, `baton upgrade --self` started) to the first `GET /v1/status` on the admin socket answered by the new supervisor with its app (control row: by the same one, i.e. the status poll\'s own delay); **admin gap**: the longest time no status request was answered (asked every 20 ms); the self-upgrade\'s duration from its job record (`durationMs`) and the `baton upgrade --self` command\'s wall time; for a crash, what the restarted supervisor logged: taking the listeners back (`daemon.listeners_reclaimed`, its `durationMs`: mostly the python3 helper\'s start) or the graceful takeover (`daemon.takeover`); **left running**: events after which a process other than the supervisor and its app was still there after 5 s.',
    '',
    table(['variant', 'how', 'app pid changed', 'acknowledged writes', 'supervisor back ms p50 (max)', 'admin gap ms p50 (max)', 'self-upgrade / reclaim ms p50 (max)', 'left running'], supervisor),
    ...(notes.length ? ['', 'Notes:', ...notes] : []),
  ].join('\n');
}
