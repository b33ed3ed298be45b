import { BatonError, HandoffError, errorMessage } from '../os/errors.js';
import type { Logger } from '../os/log.js';
import type { HeapCompactor } from '../supervisor/memory.js';
import type { HandoffSpec } from '../supervisor/options.js';
import type { HandoffResult } from '../supervisor/results.js';
import type { Supervisor } from '../supervisor/supervisor.js';
import type { JobRecord, JobStore, JobTrigger, Requester } from './jobs.js';
import type { SystemdNotifier } from './systemd.js';

/** What an upgrade request may set (POST /v1/upgrade body, baton upgrade flags), in seconds. */
export const UPGRADE_FIELDS = ['deadlineS', 'drainGraceS', 'readyTimeoutS', 'leaseWaitS'] as const;
export type UpgradeRequest = { [K in (typeof UPGRADE_FIELDS)[number]]?: number };
export function isUpgradeField(k: string): k is (typeof UPGRADE_FIELDS)[number] {
  return (UPGRADE_FIELDS as readonly string[]).includes(k);
}

export interface UpgradeEvents {
  onEvent?: (line: Record<string, unknown>) => void;
}

/** What the handoff jobs need from the Daemon. */
export interface HandoffJobsHost {
  readonly log: Logger;
  /** A full GC shortly after each handoff. */
  readonly compactor: HeapCompactor;
  sup(): Supervisor;
  jobs(): JobStore;
  notifier(): SystemdNotifier | undefined;
  /** The daemon is stopping: no new handoff starts. */
  stopping(): boolean;
}

/** systemd's STATUS while no handoff runs. */
export function servingStatus(sup: Supervisor): string {
  const inc = sup.incumbent;
  return inc ? `serving generation ${sup.generation} (pid ${inc.pid})` : 'no app running';
}

export function handoffSpec(req: UpgradeRequest): HandoffSpec {
  return {
    ...(req.leaseWaitS !== undefined && { leaseWaitMs: req.leaseWaitS * 1000 }),
    ...(req.readyTimeoutS !== undefined && { readyMs: req.readyTimeoutS * 1000 }),
    ...(req.deadlineS !== undefined && { deadlineMs: req.deadlineS * 1000 }),
    ...(req.drainGraceS !== undefined && { drainGraceMs: req.drainGraceS * 1000 }),
  };
}

/** Handoffs as jobs: upgrades (admin, SIGHUP), rollbacks (admin, the bake window) and restarts after a crash, in the job history. */
export class HandoffJobs {
  /** The upgrade or rollback that runs now (one at a time). */
  upgrading: Promise<unknown> | undefined;
  /** STATUS=upgrading: PHASE lines only for upgrades (not cold starts and restarts). */
  notifyPhases = false;

  constructor(private readonly host: HandoffJobsHost) {}

  /**
   * One upgrade (a handoff job). Refused at once — a SKIPPED job — when another
   * handoff runs (E_HANDOFF_IN_PROGRESS) or the supervisor is stopping (E_STOPPING).
   */
  async upgrade(trigger: JobTrigger, who: Requester | undefined, req: UpgradeRequest, ev: UpgradeEvents = {}): Promise<JobRecord> {
    return this.handoffJob(trigger, who, () => this.host.sup().performHandoff(handoffSpec(req)), ev);
  }

  /**
   * Goes back to the last known-good build (Supervisor.rollback): `baton rollback`
   * (trigger admin), or by itself when the new build goes CRITICAL inside its bake
   * window (trigger rollback). A handoff job whose `handoff.rollback` says from what to
   * what and why; SKIPPED (E_NO_ROLLBACK_TARGET) when there is nothing to go back to.
   */
  async rollback(trigger: JobTrigger, who: Requester | undefined, reason: string, ev: UpgradeEvents = {}): Promise<JobRecord> {
    this.host.log.warn({ event: 'daemon.rollback', trigger, reason }, `rolling back: ${reason}`);
    return this.handoffJob(trigger, who, () => this.host.sup().rollback({ reason, automatic: trigger === 'rollback' }), ev);
  }

  /** One handoff job (upgrade or rollback): refusals, progress events, systemd status, the record. */
  private async handoffJob(trigger: JobTrigger, who: Requester | undefined, start: () => Promise<HandoffResult>, ev: UpgradeEvents): Promise<JobRecord> {
    const job = this.host.jobs().create('handoff', trigger, who);
    // performHandoff enters its first phase synchronously, so `phase` tells whether one runs.
    if (this.host.stopping()) return this.refused(job, new HandoffError('E_STOPPING', 'the supervisor is stopping'));
    if (this.upgrading || this.host.sup().phase !== 'idle') {
      return this.refused(job, new HandoffError('E_HANDOFF_IN_PROGRESS', `a handoff is already running (phase ${this.host.sup().phase})`));
    }
    const onPhase = (phase: string): void => ev.onEvent?.({ type: 'phase', phase, elapsedMs: Date.now() - Date.parse(job.createdAt) });
    const onDrained = (m: { openConnsRemaining: number }): void => ev.onEvent?.({ type: 'drained', openConnsRemaining: m.openConnsRemaining });
    const onSeal = (done: number, total: number): void => ev.onEvent?.({ type: 'seal', done, total });
    const onLeaseWait = (jobId: string, waitMs: number): void => ev.onEvent?.({ type: 'lease-wait', jobId, waitMs });
    ev.onEvent?.({ type: 'accepted', jobId: job.id });
    void this.host.notifier()?.reloading('upgrading');
    const stopExtending = this.host.notifier()?.startExtending(); // EXTEND_TIMEOUT_USEC while it runs
    this.host.sup().on('phase', onPhase).on('drained', onDrained).on('sealProgress', onSeal).on('lease-wait', onLeaseWait);
    this.notifyPhases = true;
    const result = start();
    result.catch(() => undefined); // awaited below
    const started = this.host.jobs().start(job);
    const run = (async () => {
      try {
        await started;
        const r = await result;
        this.host.log.info({ event: 'daemon.upgrade_done', jobId: job.id, outcome: r.outcome, reason: r.reason }, `upgrade ${r.outcome}${r.reason ? `: ${r.reason}` : ''}`);
        return await this.host.jobs().finishHandoff(job, r);
      } catch (err) {
        if (err instanceof HandoffError && ['E_HANDOFF_IN_PROGRESS', 'E_LEASE_HELD', 'E_NO_ROLLBACK_TARGET'].includes(err.code)) return this.refused(job, err);
        return this.host.jobs().finish(job, 'FAILED', { code: err instanceof BatonError ? err.code : 'E_INTERNAL', reason: errorMessage(err) });
      } finally {
        stopExtending?.();
        this.notifyPhases = false;
        this.host.sup().off('phase', onPhase).off('drained', onDrained).off('sealProgress', onSeal).off('lease-wait', onLeaseWait);
        void this.host.notifier()?.ready(servingStatus(this.host.sup()));
        this.host.compactor.afterHandoff();
      }
    })();
    this.upgrading = run;
    try {
      return await run;
    } finally {
      if (this.upgrading === run) this.upgrading = undefined;
    }
  }

  private async refused(job: JobRecord, err: unknown): Promise<JobRecord> {
    const code = err instanceof BatonError ? err.code : 'E_INTERNAL';
    this.host.log.warn({ event: 'daemon.handoff_refused', trigger: job.trigger, code, reason: errorMessage(err) }, `${job.trigger === 'admin' || job.trigger === 'signal' ? 'handoff' : job.trigger} refused: ${errorMessage(err)}`);
    job.startedAt = undefined;
    return this.host.jobs().finish(job, 'SKIPPED', { code, reason: errorMessage(err) });
  }

  async recordRestart(r: HandoffResult): Promise<void> {
    // A restart that went back to the last known-good build (the new one crashed in its bake window) is a rollback.
    const job = this.host.jobs().create('handoff', r.rollback ? 'rollback' : 'restart');
    job.startedAt = new Date(r.startedAt).toISOString();
    await this.host.jobs().finishHandoff(job, r);
    void this.host.notifier()?.status(servingStatus(this.host.sup()));
  }
}
