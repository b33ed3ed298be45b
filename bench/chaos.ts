/**
 * Chaos runner (issue 7): random schedules against fixtures/kv under keep-alive load,
 * with baton's invariants checked after every step and every acknowledged write read
 * back at the end.
 *
 *   npm run chaos -- --iterations 500 --seed 42
 *
 * One seeded PRNG (mulberry32) draws the whole schedule up front — action, role,
 * crash point, phase, delays, stop durations — so `--seed S --iterations N` replays the
 * same schedule (process timing is not deterministic; the schedule is). The schedule of
 * N iterations is a prefix of the schedule of any longer run with the same seed, so a
 * violation at step K replays with `--seed S --iterations K`.
 *
 * The world: a TCP listener on 127.0.0.1 bound here (held outside the supervisor, as
 * systemd holds socket-activated listeners), a Supervisor in its own process
 * (fixtures/supervisor-host.ts, the listener inherited at fd 3) running fixtures/kv.
 * A supervisor that dies (SIGKILL or one of its crash points) is restarted on the same
 * state dir and listener and recovers from its journal, like test/recovery.test.ts.
 *
 * Actions: a plain handoff; a crash point in any role (incumbent: armed at its start,
 * then hit by the next handoff; successor: HandoffSpec.successorCrashPoint; supervisor:
 * the host's "arm" command); SIGKILL or SIGSTOP (for a random time, then SIGCONT) of a
 * random role at a random phase; two upgrade requests at once (the second must be
 * refused with E_HANDOFF_IN_PROGRESS); a successor that fails to start or is unhealthy;
 * a random delay.
 *
 * Crash points are dealt from a seeded shuffled deck of all of them (schedule.ts), so a
 * run of about 100 steps draws every point; the summary has a coverage table (point →
 * times dealt, times its marker was seen), and a run of 200+ steps fails if a point
 * was never reached.
 *
 * Judged as the run goes (collected, the run goes on; bench/chaos/checks.ts, audit.ts):
 * every failed request (reset, hang-up, timeout, 5xx) is a violation unless the process
 * that held its connection (kv names itself in `x-baton-pid`) is one this run killed
 * (SIGKILL, a crash point) or stopped (SIGSTOP, when that explains it); a connection
 * that never answered is put down to a kill only within 3 s after it. Every handoff
 * result is checked against the processes and the lock the moment it arrives: a commit
 * to a process that is dead (and not killed by this run after the handoff ended, nor at
 * a crash point past its own Committed) or does not hold the lock is a false commit; an
 * abort whose incumbent is gone with nothing restored (no cold start that serves) is a
 * false abort — E_SUCCESSOR_LOST with a serving `restoredBy` is true.
 *
 * After every step: within a bound, exactly one live process holds the data-dir lock,
 * it answers /healthz on the listener, it is the only app process left, and the
 * supervisor knows it as its incumbent and is idle; the load saw no wrong answer (an
 * acknowledged value missing or stale, a deleted key readable) and was never left
 * without any answer for longer than 15 s (plus the SIGSTOP's length for a stop step).
 * At the end: a last handoff commits, every acknowledged write reads back (deleted keys
 * 404), the supervisor stops, no process is left. A broken invariant ends the run; exit
 * 1 on any violation, with the seed and the step to replay the first; the temp dir
 * (with the supervisor's log) is kept.
 *
 * --skip / --only leave actions out / focus on some (by label prefix, e.g.
 * kill:supervisor); the known engine bugs each one hits are in RELIABILITY.md.
 *
 * Layout: this file is the entry (options, the run loop, the summary); bench/chaos/ has
 * the schedule (schedule.ts), the load (load.ts), the world and the supervisor host
 * (world.ts), what each step does (steps.ts), the judgements (checks.ts, applied after
 * each step by audit.ts) and small helpers (util.ts).
 */
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { audit, newAuditStats, WINDOW_MS, type ChaosViolation } from './chaos/audit.js';
import { ChaosLoad } from './chaos/load.js';
import { label, makeSchedule } from './chaos/schedule.js';
import { runStep } from './chaos/steps.js';
import { signal, tagged, Violation } from './chaos/util.js';
import { describeOutcome, OUTAGE_BOUND_MS, World, type Options } from './chaos/world.js';

export { label, makeSchedule, type Step } from './chaos/schedule.js';

/** A run at least this long must reach every crash point (each is dealt about every 100 steps). */
const COVERAGE_MIN_STEPS = 200;

function parseOptions(argv: string[]): Options & { printSchedule: boolean } {
  const { values } = parseArgs({
    args: argv,
    options: {
      iterations: { type: 'string', default: '30' },
      seed: { type: 'string' },
      conns: { type: 'string', default: '6' },
      'think-ms': { type: 'string', default: '10' },
      skip: { type: 'string', default: '' },
      only: { type: 'string', default: '' },
      keep: { type: 'boolean', default: false },
      summary: { type: 'string' },
      'print-schedule': { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(`npm run chaos -- [--iterations N] [--seed S] [--conns C] [--think-ms MS] [--skip LABEL-PREFIX,...] [--keep] [--summary FILE] [--print-schedule]

Random schedules against fixtures/kv under load; invariants after every step.
  --iterations N     steps (default 30)
  --seed S           PRNG seed (default: random, printed); the same seed and N replay the same schedule
  --conns C          keep-alive load connections (default 6); --think-ms pause between a loop's requests (default 10)
  --skip P,...       draw again any step whose label starts with P (e.g. kill:supervisor:idle); pass it again to replay
  --only P,...       draw again any step whose label does not start with one of P (focus on one action)
  --keep             keep the temp dir (always kept after a violation)
  --summary FILE     write the summary as JSON
  --print-schedule   print the schedule and exit`);
    process.exit(0);
  }
  const int = (name: string, v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) {
      console.error(`chaos: --${name}: expected a non-negative integer (got ${JSON.stringify(v)})`);
      process.exit(2);
    }
    return n;
  };
  return {
    iterations: int('iterations', values.iterations),
    seed: values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : int('seed', values.seed),
    conns: int('conns', values.conns),
    thinkMs: int('think-ms', values['think-ms']),
    skip: values.skip.split(',').filter(Boolean),
    only: values.only.split(',').filter(Boolean),
    keep: values.keep,
    summaryFile: values.summary,
    printSchedule: values['print-schedule'],
    quiet: values.quiet,
  };
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const schedule = makeSchedule(opts.seed, opts.iterations, opts.skip, opts.only);
  const skipArg = `${opts.skip.length ? ` --skip ${opts.skip.join(',')}` : ''}${opts.only.length ? ` --only ${opts.only.join(',')}` : ''}`;
  if (opts.printSchedule) {
    schedule.forEach((s, i) => console.log(`${String(i + 1).padStart(4)} ${label(s)}`));
    return;
  }
  console.log(`chaos: seed ${opts.seed}, ${opts.iterations} iterations${skipArg}, ${opts.conns} load connections`);
  const t0 = Date.now();
  const w = new World();
  let load: ChaosLoad | undefined;
  let interrupted = false;
  process.once('SIGINT', () => {
    interrupted = true;
    console.log('\nchaos: interrupted; cleaning up');
    void tagged(w.tag).then((ps) => {
      for (const p of ps) signal(p.pid, 'SIGKILL');
      rmSync(w.dir, { recursive: true, force: true });
      process.exit(130);
    });
  });

  const histogram: Record<string, number> = {};
  const outcomes: Record<string, number> = {};
  const stepMs: number[] = [];
  let maxGap = { ms: 0, step: 0 };
  /** Collected violations (the run goes on) and the fatal one that ended it, if any. */
  const violations: ChaosViolation[] = [];
  let fatal: ChaosViolation | undefined;
  const stats = newAuditStats();
  const end = schedule.length + 1;
  const labelOf = (step: number): string => (step === 0 ? 'start' : step >= end ? 'end of run' : label(schedule[step - 1]!));
  let verified: { checked: number; deleted: number; bad: string[] } | undefined;
  let leftovers: number[] = [];
  let current = 0;
  try {
    w.beginStep(0);
    await w.startHost();
    await w.settled();
    load = new ChaosLoad(w.port, opts.conns, opts.thinkMs, opts.seed);
    violations.push(...(await audit(w, load, labelOf, stats)));
    for (current = 1; current <= schedule.length && !interrupted; current++) {
      const step = schedule[current - 1]!;
      const name = label(step);
      const kindKey = step.kind === 'crash' ? `crash:${step.role}` : step.kind === 'kill' || step.kind === 'stop' ? `${step.kind}:${step.role}` : step.kind;
      histogram[kindKey] = (histogram[kindKey] ?? 0) + 1;
      w.beginStep(current);
      const s0 = w.stepStartedAt;
      const outcome = await runStep(w, step);
      const actMs = Date.now() - s0;
      const holder = await w.settled();
      if (load.wrong.length > 0) throw new Violation(`wrong answers under load: ${load.wrong.slice(0, 5).join('; ')}`);
      // Availability: nobody answering for longer than a stop of a process, the liveness
      // timeout and a restart can explain is an outage (e.g. a handoff stuck with nobody serving).
      const gap = load.takeGap();
      const allowed = OUTAGE_BOUND_MS + (step.kind === 'stop' ? step.stopMs : 0);
      if (gap > allowed) throw new Violation(`the service answered no request for ${gap} ms (allowed ${allowed} ms for this step)`);
      if (gap > maxGap.ms) maxGap = { ms: gap, step: current };
      const found = await audit(w, load, labelOf, stats);
      violations.push(...found);
      const ms = Date.now() - s0;
      stepMs.push(ms);
      const key = outcome.replace(/\b\d{3,}\b/g, 'N').replace(/ for N ms/, '');
      outcomes[key] = (outcomes[key] ?? 0) + 1;
      if (!opts.quiet) {
        const failed = stats.lastFailures ? ` | ${stats.lastFailures} failed requests` : '';
        const flagged = found.length ? ` | VIOLATION ${found.map((v) => `${v.kind}${(v.count ?? 1) > 1 ? ` ×${v.count}` : ''}`).join(', ')}` : '';
        console.log(`[${String(current).padStart(4)}/${schedule.length}] ${name.padEnd(46)} ${outcome} | ok pid ${holder}, longest gap ${gap} ms | ${actMs}+${ms - actMs} ms${failed}${flagged}`);
        for (const v of found) console.log(`         ${v.kind}: ${v.message}${(v.count ?? 1) > 1 ? ` (${v.count} requests)` : ''}`);
      }
    }
    current = end;
    w.beginStep(end);
    // A last handoff must commit (as the crash matrix requires after every crash).
    let final = 'not committed';
    for (let attempt = 1; attempt <= 3 && final !== 'committed'; attempt++) final = describeOutcome(await w.handoff());
    if (final !== 'committed') throw new Violation(`the final handoff did not commit (${final})`);
    await w.settled();
    await load.stop();
    if (load.wrong.length > 0) throw new Violation(`wrong answers under load: ${load.wrong.slice(0, 5).join('; ')}`);
    verified = await load.verify();
    if (verified.bad.length > 0) throw new Violation(`${verified.bad.length} acknowledged writes do not read back: ${verified.bad.slice(0, 5).join('; ')}`);
    violations.push(...(await audit(w, load, labelOf, stats)));
    // Coverage: a run long enough deals every point several times; each must have been reached.
    if (schedule.length >= COVERAGE_MIN_STEPS) {
      const missing = w.coverage.missing(opts.skip.length === 0 && opts.only.length === 0);
      if (missing.length > 0) violations.push({ kind: 'coverage', step: end, label: labelOf(end), message: `crash points never reached in ${schedule.length} steps: ${missing.join(', ')}` });
    }
  } catch (err) {
    if (!(err instanceof Violation)) throw err;
    fatal = { kind: 'invariant', step: current, label: labelOf(current), message: err.message };
    // What the run saw up to here still counts (a false commit often comes before the broken world).
    violations.push(...(await audit(w, load, labelOf, stats).catch(() => [])));
  } finally {
    await load?.stop();
    leftovers = await w.teardown(opts.keep || fatal !== undefined || violations.length > 0).catch(() => []);
  }
  if (!fatal && leftovers.length > 0) fatal = { kind: 'invariant', step: end, label: 'teardown', message: `processes left behind: ${leftovers.join(', ')}` };
  if (fatal) violations.push(fatal);

  const durationMs = Date.now() - t0;
  const failuresByKind = load?.failures ?? {};
  const byKind: Record<string, number> = {};
  for (const v of violations) byKind[v.kind] = (byKind[v.kind] ?? 0) + (v.count ?? 1);
  const summary = {
    seed: opts.seed,
    iterations: opts.iterations,
    skip: opts.skip,
    only: opts.only,
    completed: fatal ? Math.max(Math.min(fatal.step, end) - 1, 0) : opts.iterations,
    durationMs,
    meanStepMs: Math.round(stepMs.reduce((a, b) => a + b, 0) / Math.max(stepMs.length, 1)),
    maxStepMs: Math.max(0, ...stepMs),
    /** Longest stretch in which the load got no answer, and the step it was in. */
    longestGapMs: maxGap.ms,
    longestGapStep: maxGap.step,
    actions: histogram,
    outcomes,
    supervisorStarts: w.hostStarts,
    load: { requests: load?.requests ?? 0, ackedWrites: load?.acked ?? 0, uncertainKeys: load?.uncertain.size ?? 0, failures: failuresByKind },
    /** Failed requests put down to a kill/stop of this run (by the connection's pid, or by time for one that never answered); the rest are violations. */
    attribution: stats,
    handoffResultsJudged: stats.results,
    coverage: w.coverage.toJSON(),
    verified: verified && { checked: verified.checked, deleted: verified.deleted, bad: verified.bad.length },
    /** Violations by kind (failed requests counted one by one). */
    violationsByKind: byKind,
    violations,
  };
  console.log('');
  console.log(`chaos summary: seed ${opts.seed}, ${summary.completed}/${opts.iterations} iterations in ${(durationMs / 1000).toFixed(1)} s (mean step ${summary.meanStepMs} ms, max ${summary.maxStepMs} ms), ${w.hostStarts} supervisor starts`);
  console.log(`  actions:  ${Object.entries(histogram).sort().map(([k, n]) => `${k}=${n}`).join(' ')}`);
  console.log(`  gaps:     the load got no answer for at most ${maxGap.ms} ms (step ${maxGap.step})`);
  console.log(`  load:     ${summary.load.requests} requests, ${summary.load.ackedWrites} acknowledged writes, ${summary.load.uncertainKeys} keys uncertain; failures ${JSON.stringify(failuresByKind)}`);
  console.log(
    `  failures: ${stats.failures} failed requests: ${stats.attributedByPid} on connections of a process this run killed or stopped, ${stats.attributedByWindow} on fresh connections within ${WINDOW_MS} ms of a kill, ${stats.failures - stats.attributedByPid - stats.attributedByWindow} unexplained (violations)`,
  );
  console.log(`  results:  ${stats.results} handoff results judged against the processes and the lock when they arrived${stats.unjudged.length ? `; ${stats.unjudged.length} could not be judged:` : ''}`);
  for (const u of stats.unjudged) console.log(`    ${u}`);
  if (verified) console.log(`  verified: ${verified.checked} keys read back (${verified.deleted} deleted → 404), ${verified.bad.length} wrong`);
  console.log(`  coverage: crash point → times dealt by the schedule, times its marker was seen`);
  for (const line of w.coverage.table()) console.log(`    ${line}`);
  if (opts.summaryFile) writeFileSync(opts.summaryFile, `${JSON.stringify(summary, null, 2)}\n`);
  if (violations.length > 0) {
    console.log(`  VIOLATIONS: ${Object.entries(byKind).sort().map(([k, n]) => `${k}=${n}`).join(' ')}`);
    for (const v of violations.slice(0, 60)) {
      console.log(`    step ${v.step} (${v.label}) ${v.kind}${(v.count ?? 1) > 1 ? ` ×${v.count}` : ''}: ${v.message}`);
    }
    if (violations.length > 60) console.log(`    … ${violations.length - 60} more in the summary file`);
    const first = Math.min(...violations.map((v) => v.step));
    console.log(`  replay:   npm run chaos -- --seed ${opts.seed} --iterations ${first >= 1 && first < end ? first : opts.iterations}${skipArg}`);
    console.log(`  kept:     ${w.dir} (supervisor.log has the supervisor's and the apps' warnings)`);
    process.exit(1);
  }
  console.log('  violations: 0');
}

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  main().catch((err: unknown) => {
    console.error(`chaos: ${(err as Error).stack ?? String(err)}`);
    process.exit(2);
  });
}
