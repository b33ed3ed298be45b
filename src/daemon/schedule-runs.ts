import { loadStateList, writeFileAtomic } from '../os/atomic-file.js';
import { errorMessage } from '../os/errors.js';
import type { JobState } from './jobs.js';
import type { Logger } from '../os/log.js';

/** One fire of a schedule and what became of its tasks (the API's `lastRun`). */
export interface RunSummary {
  schedule: string;
  /** 'schedule' (timer) or 'admin' (run now). */
  trigger: 'schedule' | 'admin';
  startedAt: string;
  endedAt?: string | undefined;
  /**
   * RUNNING while it runs; SUCCEEDED (every task), FAILED (some task did not succeed,
   * or the supervisor exited during the run), HALTED (a task did not succeed and the
   * rest were skipped), SKIPPED (nothing ran: outside the window, or the previous run
   * still runs).
   */
  outcome: 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'HALTED' | 'SKIPPED';
  reason?: string | undefined;
  jobs: { id: string; task: string; state: JobState }[];
}

/** The reason a run left RUNNING by an earlier supervisor is given when it is loaded. */
export const INTERRUPTED_RUN_REASON = 'interrupted: the supervisor exited during this run';

interface FileFormat {
  version: 1;
  runs: RunSummary[];
}

/**
 * The last run of each schedule, so `schedules get` still answers after a restart
 * (`<stateDir>/schedule-runs.json`, rewritten atomically when a run starts, after each
 * of its tasks and when it ends). Without a file path it lives in memory only (unit
 * tests). Like the job history, and unlike schedules.json, the file is never a reason
 * not to start: an unreadable one is kept aside (`.corrupt-<ms>`) and a failed write is
 * logged; the job history holds every task either way.
 */
export class ScheduleRunLog {
  private readonly runs = new Map<string, RunSummary>();
  private writing: Promise<void> = Promise.resolve();

  constructor(
    readonly filePath?: string,
    private readonly log?: Logger,
  ) {}

  /**
   * Reads the file. Runs of schedules that `exists` no longer knows are dropped; a run
   * still RUNNING was cut off by the previous supervisor's exit and becomes FAILED
   * (without an end time: it is not known).
   */
  async load(exists: (schedule: string) => boolean): Promise<void> {
    if (!this.filePath) return;
    const runs = await loadStateList<RunSummary>(
      this.filePath,
      'runs',
      (r) => typeof r.schedule === 'string' && typeof r.outcome === 'string' && typeof r.startedAt === 'string' && Array.isArray(r.jobs),
      (reason) => this.log?.error({ event: 'schedules.runs_corrupt', path: this.filePath, err: reason }, 'schedule runs unreadable; starting without last runs'),
    );
    if (runs === undefined) return;
    let changed = false;
    for (const run of runs) {
      if (!exists(run.schedule)) {
        changed = true;
        continue;
      }
      if (run.outcome === 'RUNNING') {
        // No endedAt: when it stopped is not known (the job history has when its task did).
        Object.assign(run, { outcome: 'FAILED', reason: INTERRUPTED_RUN_REASON });
        this.log?.warn({ event: 'schedule.interrupted', schedule: run.schedule, startedAt: run.startedAt, jobs: run.jobs }, `schedule ${run.schedule}: the run started ${run.startedAt} was cut off by the supervisor's exit`);
        changed = true;
      }
      this.runs.set(run.schedule, run);
    }
    if (changed) await this.persist();
  }

  get(schedule: string): RunSummary | undefined {
    return this.runs.get(schedule);
  }

  /** Records `run` as its schedule's last run (or its progress: call again after changing it). Never rejects. */
  record(run: RunSummary): Promise<void> {
    this.runs.set(run.schedule, run);
    return this.persist();
  }

  /** The schedule was deleted. Never rejects. */
  forget(schedule: string): Promise<void> {
    if (!this.runs.delete(schedule)) return this.writing;
    return this.persist();
  }

  /** Resolves once every write asked for so far is done. */
  flushed(): Promise<void> {
    return this.writing;
  }

  private persist(): Promise<void> {
    const filePath = this.filePath;
    if (!filePath) return this.writing;
    // Serialized now, so a later change cannot slip into an earlier write.
    const text = `${JSON.stringify({ version: 1, runs: [...this.runs.values()] } satisfies FileFormat)}\n`;
    this.writing = this.writing.then(() =>
      writeFileAtomic(filePath, text).catch((err: unknown) => {
        this.log?.error({ event: 'schedules.runs_write_failed', path: filePath, err: errorMessage(err) }, 'could not write the schedule runs');
      }),
    );
    return this.writing;
  }
}
