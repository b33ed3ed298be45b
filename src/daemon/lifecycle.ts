import { randomUUID } from 'node:crypto';
import { loadStateList, writeFileAtomic } from '../os/atomic-file.js';
import { errorMessage } from '../os/errors.js';
import type { Logger } from '../os/log.js';

/**
 * Supervisor lifecycle records (issue 8: "the supervisor records shutdown completed
 * (duration)"): start-up completed (duration, components), shutdown requested (reason,
 * signal, timeout) and shutdown completed (duration, exit code), one list per state dir
 * in `lifecycle.json`, rewritten atomically (temp + fsync + rename) on every record and
 * bounded to the newest MAX_RECORDS. Each `baton run` has a run id, so the previous
 * run's shutdown can be told apart from this one's: a run with a "shutdown.requested"
 * and no "shutdown.completed" did not finish its shutdown (killed, crashed).
 */
export const MAX_LIFECYCLE_RECORDS = 50;

export type LifecycleEvent = 'startup.completed' | 'shutdown.requested' | 'shutdown.completed';

export interface LifecycleRecord {
  event: LifecycleEvent;
  /** ISO time. */
  at: string;
  /** One per `baton run` process. */
  runId: string;
  pid: number;
  durationMs?: number | undefined;
  components?: string[] | undefined;
  /** shutdown.requested: "signal", "admin", "crash-loop". */
  reason?: string | undefined;
  signal?: string | undefined;
  timeoutS?: number | undefined;
  /** shutdown.completed: the exit code of `baton run`. */
  exitCode?: number | undefined;
}

/** What the previous run's records say about how it ended. */
export interface PreviousShutdown {
  runId: string;
  pid: number;
  /** It recorded "shutdown.completed". */
  completed: boolean;
  startedAt?: string | undefined;
  requestedAt?: string | undefined;
  reason?: string | undefined;
  signal?: string | undefined;
  timeoutS?: number | undefined;
  completedAt?: string | undefined;
  durationMs?: number | undefined;
  exitCode?: number | undefined;
}

interface FileFormat {
  version: 1;
  records: LifecycleRecord[];
}

export class LifecycleLog {
  readonly runId = randomUUID();
  private records: LifecycleRecord[] = [];
  private writing: Promise<void> = Promise.resolve();
  private previous: PreviousShutdown | undefined;

  constructor(
    readonly filePath: string,
    private readonly log: Logger,
  ) {}

  /** Reads the file (a missing one is empty; an unreadable one is kept aside, never a reason not to start). */
  async load(): Promise<void> {
    const records = await loadStateList<LifecycleRecord>(
      this.filePath,
      'records',
      (r) => typeof r.event === 'string' && typeof r.runId === 'string',
      (reason) => this.log.error({ event: 'lifecycle.corrupt', path: this.filePath, err: reason }, 'lifecycle records unreadable; starting a new list'),
      { dropped: (count, reason) => this.log.error({ event: 'lifecycle.records_dropped', path: this.filePath, count, reason }, `dropped ${count} lifecycle record(s): ${reason}`) },
    );
    if (records === undefined) return;
    this.records = records;
    this.previous = summarizeRun(this.records);
  }

  /** How the run before this one ended (undefined: no earlier run recorded). */
  get previousShutdown(): PreviousShutdown | undefined {
    return this.previous;
  }

  /** Appends a record of this run and persists the list; a failed write is logged, never thrown. */
  record(event: LifecycleEvent, fields: Omit<LifecycleRecord, 'event' | 'at' | 'runId' | 'pid'> = {}): Promise<void> {
    this.records.push({ event, at: new Date().toISOString(), runId: this.runId, pid: process.pid, ...fields });
    if (this.records.length > MAX_LIFECYCLE_RECORDS) this.records = this.records.slice(-MAX_LIFECYCLE_RECORDS);
    const text = `${JSON.stringify({ version: 1, records: this.records } satisfies FileFormat)}\n`;
    this.writing = this.writing.then(() =>
      writeFileAtomic(this.filePath, text).catch((err: unknown) => {
        this.log.error({ event: 'lifecycle.write_failed', path: this.filePath, err: errorMessage(err) }, 'could not write the lifecycle records');
      }),
    );
    return this.writing;
  }

  /** Newest first. */
  list(limit = MAX_LIFECYCLE_RECORDS): LifecycleRecord[] {
    return this.records.slice(-limit).reverse();
  }
}

/** The newest run in `records`, summarized. */
function summarizeRun(records: readonly LifecycleRecord[]): PreviousShutdown | undefined {
  const last = records[records.length - 1];
  if (!last) return undefined;
  const run = records.filter((r) => r.runId === last.runId);
  const started = run.find((r) => r.event === 'startup.completed');
  const requested = run.find((r) => r.event === 'shutdown.requested');
  const completed = run.find((r) => r.event === 'shutdown.completed');
  return {
    runId: last.runId,
    pid: last.pid,
    completed: completed !== undefined,
    ...(started && { startedAt: started.at }),
    ...(requested && { requestedAt: requested.at, reason: requested.reason, signal: requested.signal, timeoutS: requested.timeoutS }),
    ...(completed && { completedAt: completed.at, durationMs: completed.durationMs, exitCode: completed.exitCode }),
  };
}
