import { randomUUID } from 'node:crypto';
import { loadStateList, writeFileAtomic } from '../os/atomic-file.js';
import { errorMessage } from '../os/errors.js';
import type { Logger } from '../os/log.js';
import type { HandoffResult } from '../supervisor/results.js';

/**
 * Jobs: everything the supervisor does on request or by itself that has a start, an
 * end and an outcome: handoffs (cold starts, upgrades, restarts) and maintenance runs
 * (tasks run inside the incumbent), in one history.
 *
 * Lifecycle: PENDING → RUNNING → SUCCEEDED | FAILED | CANCELLED, or SKIPPED (refused
 * before it ran: another job holds the lease, outside a window, stopping).
 */
/** `supervisor`: baton replacing itself (`baton upgrade --self`), the app untouched. */
export type JobKind = 'handoff' | 'maintenance' | 'supervisor';
export type JobState = 'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED' | 'SKIPPED';
/** Why the job exists. */
export type JobTrigger = 'cold-start' | 'admin' | 'signal' | 'restart' | 'schedule' | 'rollback';

export const TERMINAL_STATES: readonly JobState[] = ['SUCCEEDED', 'FAILED', 'CANCELLED', 'SKIPPED'];

/**
 * Who asked (admin API): what the client said about itself (pid/uid/user: not verified,
 * see ARCHITECTURE.md), and what the server established: how the request authenticated
 * ("socket-peer", "token:<role>") and the role it had.
 */
export interface Requester {
  pid?: number | undefined;
  uid?: number | undefined;
  user?: string | undefined;
  verified: false;
  auth?: string | undefined;
  role?: 'read' | 'write' | 'admin' | undefined;
}

export interface JobRecord {
  id: string;
  kind: JobKind;
  state: JobState;
  trigger: JobTrigger;
  requestedBy?: Requester | undefined;
  /** ISO times. */
  createdAt: string;
  startedAt?: string | undefined;
  endedAt?: string | undefined;
  durationMs?: number | undefined;
  /** FAILED/SKIPPED/CANCELLED: why; SUCCEEDED: a note (e.g. promotion). */
  reason?: string | undefined;
  code?: string | undefined;
  /** kind 'handoff': the engine's result. */
  handoff?: HandoffSummary | undefined;
  /** kind 'maintenance': the task, its progress (live while RUNNING) and its result. */
  maintenance?: MaintenanceSummary | undefined;
  /** kind 'supervisor': which supervisor handed over to which, and the app it kept. */
  supervisor?: SupervisorSummary | undefined;
}

export interface SupervisorSummary {
  oldPid: number;
  newPid: number;
  /** The new supervisor's version. */
  version: string;
  /** The app it re-adopted (unchanged pid), if one served. */
  appPid?: number | undefined;
  generation?: number | undefined;
}

export interface MaintenanceSummary {
  task: string;
  urgency: 'low' | 'normal' | 'high' | 'critical';
  /** Why it was requested (free text). */
  requestReason?: string | undefined;
  params?: Record<string, unknown> | undefined;
  /** Schedule that started it (trigger 'schedule'). */
  schedule?: string | undefined;
  /** Newest progress snapshot from the app. */
  progress?: { done: number; total: number; counters: Record<string, number>; at: string } | undefined;
  /** The task's result summary. */
  result?: unknown;
  /** How long the task ran in the app. */
  appDurationMs?: number | undefined;
  pid?: number | undefined;
  generation?: number | undefined;
}

export interface HandoffSummary {
  handoffId: string;
  outcome: 'committed' | 'aborted';
  oldPid: number | undefined;
  newPid: number | undefined;
  generation: number;
  promoted?: boolean | undefined;
  phases: { phase: string; ms: number }[];
  restoredBy?: HandoffResult['restoredBy'];
  /** The build it started (committed handoffs). */
  build?: HandoffResult['build'];
  /** It went back to an earlier build, and why. */
  rollback?: HandoffResult['rollback'];
  /** The failed successor's last stderr lines. */
  successorStderr?: string | undefined;
}

export interface Retention {
  maxRecords: number;
  maxAgeS: number;
}

interface FileFormat {
  version: 1;
  jobs: JobRecord[];
}

/**
 * The history: one JSON file (`jobs.json`) rewritten atomically (temp + fsync +
 * rename + dir fsync) on every change, so a crash leaves the previous or the next
 * version. Writes are serialized. Retention prunes finished jobs by count and age on
 * every write. A job left RUNNING by a crashed supervisor is marked FAILED on load.
 */
export class JobStore {
  private jobs: JobRecord[] = [];
  private writing: Promise<void> = Promise.resolve();

  constructor(
    readonly filePath: string,
    private readonly retention: Retention,
    private readonly log?: Logger,
    /** Injectable clock (tests): epoch ms. */
    private readonly now: () => number = Date.now,
  ) {}

  /** `continuing`: the id of a job a supervisor before us started and we finish (a self-upgrade's). */
  async load(opts: { continuing?: string } = {}): Promise<void> {
    // Never refuse to start over the history: a bad file is kept aside and a new one begun.
    const jobs = await loadStateList<JobRecord>(
      this.filePath,
      'jobs',
      (j) => typeof j.id === 'string' && typeof j.state === 'string',
      (reason) => this.log?.error({ event: 'jobs.history_corrupt', path: this.filePath, err: reason }, 'job history unreadable; starting a new one'),
      { dropped: (count, reason) => this.log?.error({ event: 'jobs.records_dropped', path: this.filePath, count, reason }, `dropped ${count} job record(s) from ${this.filePath}: ${reason}`) },
    );
    if (jobs === undefined) return;
    this.jobs = jobs;
    let changed = false;
    for (const j of this.jobs) {
      if (!TERMINAL_STATES.includes(j.state) && j.id !== opts.continuing) {
        Object.assign(j, { state: 'FAILED', endedAt: new Date().toISOString(), code: 'E_SUPERVISOR_RESTARTED', reason: 'the supervisor exited while this job was running' });
        changed = true;
      }
    }
    if (changed) await this.persist();
  }

  create(kind: JobKind, trigger: JobTrigger, requestedBy?: Requester): JobRecord {
    const job: JobRecord = { id: randomUUID(), kind, state: 'PENDING', trigger, createdAt: new Date().toISOString(), ...(requestedBy && { requestedBy }) };
    this.jobs.push(job);
    return job;
  }

  async start(job: JobRecord): Promise<void> {
    job.state = 'RUNNING';
    job.startedAt = new Date().toISOString();
    await this.persist();
  }

  /** Ends a job (any terminal state) and persists it. */
  async finish(job: JobRecord, state: JobState, fields: Partial<JobRecord> = {}): Promise<JobRecord> {
    Object.assign(job, fields);
    job.state = state;
    job.endedAt = new Date().toISOString();
    if (job.startedAt) job.durationMs = Date.parse(job.endedAt) - Date.parse(job.startedAt);
    await this.persist();
    return job;
  }

  /** A handoff result as the job's outcome. */
  async finishHandoff(job: JobRecord, r: HandoffResult): Promise<JobRecord> {
    return this.finish(job, r.outcome === 'committed' ? 'SUCCEEDED' : 'FAILED', {
      ...(r.reason !== undefined && { reason: r.reason }),
      ...(r.code !== undefined && { code: r.code }),
      handoff: summarize(r),
    });
  }

  /** Newest first. */
  list(limit = 20, kind?: JobKind): JobRecord[] {
    const jobs = kind ? this.jobs.filter((j) => j.kind === kind) : this.jobs;
    return jobs.slice(-limit).reverse();
  }

  /** By id, or by a unique id prefix (at least 4 characters). */
  get(id: string): JobRecord | undefined {
    const exact = this.jobs.find((j) => j.id === id);
    if (exact || id.length < 4) return exact;
    const matches = this.jobs.filter((j) => j.id.startsWith(id));
    return matches.length === 1 ? matches[0] : undefined;
  }

  lastOf(kind: JobKind): JobRecord | undefined {
    for (let i = this.jobs.length - 1; i >= 0; i--) if (this.jobs[i]!.kind === kind && TERMINAL_STATES.includes(this.jobs[i]!.state)) return this.jobs[i];
    return undefined;
  }

  running(): JobRecord | undefined {
    return this.jobs.find((j) => j.state === 'RUNNING');
  }

  /** Writes are serialized; a failed write is logged and does not stop the supervisor. */
  persist(): Promise<void> {
    this.prune();
    const text = `${JSON.stringify({ version: 1, jobs: this.jobs } satisfies FileFormat)}\n`;
    this.writing = this.writing.then(() =>
      writeFileAtomic(this.filePath, text).catch((err: unknown) => {
        this.log?.error({ event: 'jobs.write_failed', path: this.filePath, err: errorMessage(err) }, 'could not write the job history');
      }),
    );
    return this.writing;
  }

  private prune(): void {
    const minTime = this.now() - this.retention.maxAgeS * 1000;
    const keep = this.jobs.filter((j) => !TERMINAL_STATES.includes(j.state) || Date.parse(j.endedAt ?? j.createdAt) >= minTime);
    const finished = keep.filter((j) => TERMINAL_STATES.includes(j.state));
    const drop = new Set(finished.slice(0, Math.max(0, finished.length - this.retention.maxRecords)));
    this.jobs = keep.filter((j) => !drop.has(j));
  }
}

export function summarize(r: HandoffResult): HandoffSummary {
  return {
    handoffId: r.id,
    outcome: r.outcome,
    oldPid: r.oldPid,
    newPid: r.newPid,
    generation: r.generation,
    ...(r.promoted && { promoted: true }),
    phases: r.phases,
    ...(r.restoredBy && { restoredBy: r.restoredBy }),
    ...(r.build && { build: r.build }),
    ...(r.rollback && { rollback: r.rollback }),
    ...(r.successorStderr && { successorStderr: r.successorStderr }),
  };
}
