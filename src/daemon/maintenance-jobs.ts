import type { Logger } from '../os/log.js';
import type { JobProgressSnapshot, JobResult, Urgency } from '../supervisor/lease.js';
import type { Supervisor } from '../supervisor/supervisor.js';
import type { UpgradeEvents } from './handoff-jobs.js';
import type { JobRecord, JobStore, JobTrigger, Requester } from './jobs.js';
import type { SupervisorMetrics } from './metrics.js';
import type { ScheduleTask } from './schedules.js';

/** One maintenance run asked for (POST /v1/jobs, a schedule). */
export interface MaintenanceRequest {
  task: string;
  urgency: Urgency;
  reason?: string | undefined;
  params?: Record<string, unknown> | undefined;
  schedule?: string | undefined;
}

/** What the maintenance jobs need from the Daemon. */
export interface MaintenanceJobsHost {
  readonly log: Logger;
  sup(): Supervisor;
  jobs(): JobStore;
  metrics(): SupervisorMetrics | undefined;
  /** The daemon is stopping. */
  stopping(): boolean;
  /** An upgrade or rollback runs (it holds the lease, or is about to). */
  upgrading(): boolean;
}

/** Maintenance runs as jobs in the incumbent, under the lease policy; scheduled tasks that do not run. */
export class MaintenanceJobs {
  constructor(private readonly host: MaintenanceJobsHost) {}

  /**
   * One maintenance run (a job of kind 'maintenance'), inside the incumbent. Lease policy
   * (ARCHITECTURE.md "One lease"): SKIPPED at once when a handoff runs or waits, a
   * restart is scheduled, another job runs, or the supervisor stops.
   */
  async run(
    trigger: JobTrigger,
    who: Requester | undefined,
    req: MaintenanceRequest,
    ev: UpgradeEvents = {},
  ): Promise<JobRecord> {
    const job = this.host.jobs().create('maintenance', trigger, who);
    job.maintenance = {
      task: req.task,
      urgency: req.urgency,
      ...(req.reason && { requestReason: req.reason }),
      ...(req.params && Object.keys(req.params).length > 0 && { params: req.params }),
      ...(req.schedule && { schedule: req.schedule }),
    };
    // No line before the job starts: a refusal is then a plain 409/503 reply, not a 200 stream.
    if (this.host.stopping()) return this.skipJob(job, 'E_STOPPING', 'the supervisor is stopping');
    if (this.host.upgrading()) return this.skipJob(job, 'E_LEASE_HELD', `lease held by ${this.host.sup().leaseHolder() ?? 'a handoff (an upgrade is starting)'}`);
    let started: Promise<void> = Promise.resolve();
    const onStart = (r: { id: string; pid: number; generation: number }): void => {
      if (r.id !== job.id) return;
      Object.assign(job.maintenance!, { pid: r.pid, generation: r.generation });
      started = this.host.jobs().start(job);
      ev.onEvent?.({ type: 'started', jobId: job.id, task: req.task, pid: r.pid, generation: r.generation });
    };
    const onProgress = (id: string, p: JobProgressSnapshot): void => {
      if (id !== job.id) return;
      job.maintenance!.progress = { done: p.done, total: p.total, counters: p.counters, at: new Date(p.at).toISOString() };
      ev.onEvent?.({ type: 'progress', done: p.done, total: p.total, counters: p.counters });
    };
    this.host.sup().on('job-start', onStart).on('job-progress', onProgress);
    let r: JobResult;
    try {
      r = await this.host.sup().runJob({ id: job.id, task: req.task, urgency: req.urgency, ...(req.reason !== undefined && { reason: req.reason }), ...(req.params && { params: req.params }) });
    } finally {
      this.host.sup().off('job-start', onStart).off('job-progress', onProgress);
    }
    await started;
    if (r.outcome === 'skipped') return this.skipJob(job, r.code ?? 'E_LEASE_HELD', r.reason ?? 'skipped');
    Object.assign(job.maintenance!, { result: r.result, ...(r.appDurationMs !== undefined && { appDurationMs: r.appDurationMs }) });
    const state = r.outcome === 'succeeded' ? 'SUCCEEDED' : r.outcome === 'cancelled' ? 'CANCELLED' : 'FAILED';
    return this.host.jobs().finish(job, state, { ...(r.code !== undefined && { code: r.code }), ...(r.reason !== undefined && { reason: r.reason }) });
  }

  private async skipJob(job: JobRecord, code: string, reason: string): Promise<JobRecord> {
    this.host.log.warn({ event: 'daemon.job_skipped', jobId: job.id, task: job.maintenance?.task, code, reason }, `maintenance ${job.maintenance?.task} skipped: ${reason}`);
    job.startedAt = undefined;
    this.host.metrics()?.jobSkipped(job.maintenance?.task ?? '-', code);
    return this.host.jobs().finish(job, 'SKIPPED', { code, reason });
  }

  /** A scheduled task that does not run (outside the window, overlap, halted): a SKIPPED job in the history. */
  skipScheduledTask(t: ScheduleTask, schedule: string, code: string, reason: string): Promise<JobRecord> {
    const job = this.host.jobs().create('maintenance', 'schedule');
    job.maintenance = { task: t.task, urgency: t.urgency ?? 'normal', ...(t.params && { params: t.params }), schedule };
    return this.skipJob(job, code, reason);
  }
}
