import { errorMessage } from '../os/errors.js';
import type { Logger } from '../os/log.js';
import { nextFire } from './cron.js';
import { ScheduleError } from './schedule-error.js';
import type { JobRecord } from './jobs.js';
import { ScheduleRunLog, type RunSummary } from './schedule-runs.js';
import { inWindow, windowText, type Schedule, type ScheduleStore, type ScheduleTask } from './schedules.js';

export interface SchedulerOptions {
  store: ScheduleStore;
  /** Runs one task now (the daemon: runMaintenance with trigger 'schedule'). */
  runTask: (task: ScheduleTask, schedule: string) => Promise<JobRecord>;
  /** Records a task that was not run (SKIPPED job): outside the window, overlap, halted. */
  skipTask: (task: ScheduleTask, schedule: string, code: string, reason: string) => Promise<JobRecord>;
  /** Where last runs are kept (the daemon: `<stateDir>/schedule-runs.json`); default: in memory. */
  runs?: ScheduleRunLog | undefined;
  log?: Logger | undefined;
  now?: () => number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
}

/** Longest single timer: re-evaluate at least hourly (setTimeout caps at ~24.8 days; clocks jump). */
const MAX_TIMER_MS = 3_600_000;

/**
 * Fires schedules at their cron times. One timer, armed for the earliest next fire of
 * any enabled schedule. Next fires are computed from "now" at start, on every change
 * and after each fire, so fires missed while the supervisor was down or the timer was
 * late are not replayed (at most one fire per schedule per wake-up).
 */
export class Scheduler {
  private readonly next = new Map<string, number>();
  private readonly running = new Map<string, Promise<RunSummary>>();
  private readonly runs: ScheduleRunLog;
  private timer: unknown;
  private started = false;
  private readonly now: () => number;
  private readonly setTimer: (fn: () => void, ms: number) => unknown;
  private readonly clearTimer: (handle: unknown) => void;

  constructor(private readonly opts: SchedulerOptions) {
    this.now = opts.now ?? Date.now;
    this.runs = opts.runs ?? new ScheduleRunLog();
    this.setTimer =
      opts.setTimer ??
      ((fn, ms) => {
        const t = setTimeout(fn, ms);
        t.unref();
        return t;
      });
    this.clearTimer = opts.clearTimer ?? ((h) => clearTimeout(h as NodeJS.Timeout));
    opts.store.onChange((name) => this.changed(name));
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    const now = this.now();
    for (const s of this.opts.store.list()) if (s.enabled) this.next.set(s.name, nextFire(s.cron, now));
    this.arm();
  }

  /** No more fires; a run in progress goes on (its tasks see the supervisor stopping). */
  stop(): void {
    this.started = false;
    if (this.timer !== undefined) this.clearTimer(this.timer);
    this.timer = undefined;
  }

  /** Resolves once no run is in progress. */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()]);
  }

  /** Next fire (epoch ms) of an enabled schedule, else undefined. */
  nextFireAt(name: string): number | undefined {
    if (this.started) return this.next.get(name);
    const s = this.opts.store.get(name);
    return s?.enabled ? nextFire(s.cron, this.now()) : undefined;
  }

  lastRun(name: string): RunSummary | undefined {
    return this.runs.get(name);
  }

  isRunning(name: string): boolean {
    return this.running.has(name);
  }

  /** Fires one schedule now (window, halt and overlap rules as for a timed fire). */
  runNow(name: string): Promise<RunSummary> {
    const s = this.opts.store.get(name);
    if (!s) return Promise.reject(new ScheduleError('E_NO_SUCH_SCHEDULE', `no schedule named ${JSON.stringify(name)}`, { field: 'name' }));
    return this.fire(s, 'admin');
  }

  private changed(name: string): void {
    const s = this.opts.store.get(name);
    if (!this.started) return;
    if (s?.enabled) this.next.set(name, nextFire(s.cron, this.now()));
    else this.next.delete(name);
    if (!s) void this.runs.forget(name);
    this.arm();
  }

  private arm(): void {
    if (this.timer !== undefined) this.clearTimer(this.timer);
    this.timer = undefined;
    if (!this.started || this.next.size === 0) return;
    const soonest = Math.min(...this.next.values());
    const delay = Math.min(Math.max(0, soonest - this.now()), MAX_TIMER_MS);
    this.timer = this.setTimer(() => this.tick(), delay);
  }

  private tick(): void {
    this.timer = undefined;
    if (!this.started) return;
    const now = this.now();
    for (const [name, at] of [...this.next]) {
      if (at > now) continue;
      const s = this.opts.store.get(name);
      if (!s?.enabled) {
        this.next.delete(name);
        continue;
      }
      this.next.set(name, nextFire(s.cron, now));
      void this.fire(s, 'schedule').catch((err: unknown) =>
        this.opts.log?.error({ event: 'schedule.error', schedule: name, err: errorMessage(err) }, `schedule ${name}: ${errorMessage(err)}`),
      );
    }
    this.arm();
  }

  private async fire(s: Schedule, trigger: RunSummary['trigger']): Promise<RunSummary> {
    const log = this.opts.log;
    const startedAt = new Date(this.now()).toISOString();
    const first = s.tasks[0]!;
    const skipAll = async (code: string, reason: string): Promise<RunSummary> => {
      log?.warn({ event: 'schedule.skipped', schedule: s.name, trigger, code, reason }, `schedule ${s.name} skipped: ${reason}`);
      const job = await this.opts.skipTask(first, s.name, code, reason);
      return { schedule: s.name, trigger, startedAt, endedAt: new Date(this.now()).toISOString(), outcome: 'SKIPPED', reason, jobs: [{ id: job.id, task: first.task, state: job.state }] };
    };
    const previous = this.running.get(s.name);
    if (previous) {
      const cur = this.runs.get(s.name);
      // Not recorded as the last run: the one still running is.
      return skipAll('E_SCHEDULE_RUNNING', `the previous run of schedule ${s.name}${cur ? ` (started ${cur.startedAt})` : ''} is still running`);
    }
    if (s.window && !inWindow(s.window, this.now())) {
      const run = await skipAll('E_OUTSIDE_WINDOW', `outside window ${windowText(s.window)} UTC`);
      await this.runs.record(run);
      return run;
    }
    const run: RunSummary = { schedule: s.name, trigger, startedAt, outcome: 'RUNNING', jobs: [] };
    const p = this.runTasks(s, run).finally(() => this.running.delete(s.name));
    this.running.set(s.name, p);
    return p;
  }

  private async runTasks(s: Schedule, run: RunSummary): Promise<RunSummary> {
    const log = this.opts.log;
    log?.info({ event: 'schedule.fire', schedule: s.name, trigger: run.trigger, tasks: s.tasks.map((t) => t.task) }, `schedule ${s.name}: running ${s.tasks.map((t) => t.task).join(', ')}`);
    await this.runs.record(run); // RUNNING, and after each task: a restart then shows how far it got
    let failed = false;
    for (const [i, t] of s.tasks.entries()) {
      let job: JobRecord;
      try {
        job = await this.opts.runTask(t, s.name);
      } catch (err) {
        // The callback should not throw; if it does, treat the task as failed (and still record it).
        log?.error({ event: 'schedule.error', schedule: s.name, task: t.task, err: errorMessage(err) }, `schedule ${s.name}: task ${t.task}: ${errorMessage(err)}`);
        job = await this.opts.skipTask(t, s.name, 'E_INTERNAL', `could not run: ${errorMessage(err)}`);
      }
      run.jobs.push({ id: job.id, task: t.task, state: job.state });
      await this.runs.record(run);
      if (job.state === 'SUCCEEDED') continue;
      failed = true;
      if (!s.haltOnFailure) continue;
      const rest = s.tasks.slice(i + 1);
      const reason = `halted: ${t.task} ${job.state}`;
      log?.warn({ event: 'schedule.halted', schedule: s.name, task: t.task, state: job.state, jobId: job.id, skipped: rest.map((x) => x.task) }, `schedule ${s.name} ${reason}${rest.length ? `; skipping ${rest.map((x) => x.task).join(', ')}` : ''}`);
      for (const r of rest) {
        const skipped = await this.opts.skipTask(r, s.name, 'E_HALTED', reason);
        run.jobs.push({ id: skipped.id, task: r.task, state: skipped.state });
      }
      run.outcome = 'HALTED';
      run.reason = reason;
      break;
    }
    if (run.outcome === 'RUNNING') run.outcome = failed ? 'FAILED' : 'SUCCEEDED';
    run.endedAt = new Date(this.now()).toISOString();
    await this.runs.record(run);
    log?.info({ event: 'schedule.done', schedule: s.name, outcome: run.outcome, jobs: run.jobs }, `schedule ${s.name} ${run.outcome}`);
    return run;
  }
}
