import { errorMessage } from '../os/errors.js';
import type { Logger } from '../os/log.js';
import type { Supervisor } from '../supervisor/supervisor.js';
import type { HealthReport, HealthStatus } from './health.js';
import type { JobRecord, JobTrigger, Requester } from './jobs.js';

/** What the health watch needs from the Daemon. */
export interface HealthWatchHost {
  readonly log: Logger;
  /** Seconds between checks (healthIntervalS; 0 = off). */
  readonly intervalS: number;
  /** The build in its bake window, if any. */
  baking(): Supervisor['baking'];
  health(): Promise<HealthReport>;
  /** A handoff runs or waits for the lease, a restart is scheduled, or the daemon stops. */
  handoffUnderWay(): boolean;
  /** When the current handoff phase started (moves on every phase). */
  phaseStartedAt(): number;
  rollback(trigger: JobTrigger, who: Requester | undefined, reason: string): Promise<JobRecord>;
}

/** The periodic health check: `health.changed` when a status changes, and the bake-window rollback. */
export class HealthWatch {
  /** Periodic health check (healthIntervalS): the timer, the check in flight, the last result. */
  private healthTimer: NodeJS.Timeout | undefined;
  private healthCheck: Promise<void> | undefined;
  private lastHealth: { status: HealthStatus; probes: Map<string, { status: HealthStatus; message: string; source: string }> } | undefined;

  constructor(private readonly host: HealthWatchHost) {}

  /**
   * Every healthIntervalS (0 = off): a health check that logs `health.changed` when the
   * aggregate or any probe's status changes (messages alone do not count: they carry
   * counters), and refreshes the probe gauges. No check starts while a handoff runs or
   * waits for the lease, a restart is scheduled or we stop: the app cannot be asked then
   * and /healthz fails on purpose while it drains. A check already in flight holds the
   * incumbent's connection for one probe round trip (the app answers within 10 ms), so it
   * never holds up an upgrade for longer than that; its result is dropped if one started.
   */
  start(): void {
    const everyS = this.host.intervalS;
    if (!(everyS > 0)) return;
    this.healthTimer = setInterval(() => {
      if (this.healthCheck || this.host.handoffUnderWay()) return;
      this.healthCheck = this.checkHealth().finally(() => (this.healthCheck = undefined));
    }, everyS * 1000);
    this.healthTimer.unref();
  }

  /** A new build that is CRITICAL inside its bake window is rolled back (one check is enough: CRITICAL means it cannot serve). */
  private rollbackIfCriticalWhileBaking(report: Pick<HealthReport, 'status' | 'probes'>): void {
    const baking = this.host.baking();
    if (report.status !== 'CRITICAL' || !baking) return;
    const critical = report.probes.filter((p) => p.status === 'CRITICAL').map((p) => `${p.name}: ${p.message}`);
    const afterS = ((Date.now() - Date.parse(baking.committedAt)) / 1000).toFixed(1);
    void this.host.rollback('rollback', undefined, `health CRITICAL ${afterS} s after generation ${baking.generation} committed, inside its bake window (${critical.join('; ') || 'no detail'})`);
  }

  private async checkHealth(): Promise<void> {
    const phaseMark = this.host.phaseStartedAt(); // moves on every handoff phase
    const report: Pick<HealthReport, 'status' | 'probes'> = await this.host.health().catch((err: unknown) => ({
      status: 'UNKNOWN' as const,
      probes: [{ name: 'health', source: 'supervisor' as const, status: 'UNKNOWN' as const, message: `health check failed: ${errorMessage(err)}` }],
    }));
    if (this.host.handoffUnderWay() || this.host.phaseStartedAt() !== phaseMark) return; // a handoff came in meanwhile: this result may be its drain
    const probes = new Map(report.probes.map((p) => [p.name, { status: p.status, message: p.message, source: p.source }]));
    this.rollbackIfCriticalWhileBaking(report);
    const prev = this.lastHealth;
    this.lastHealth = { status: report.status, probes };
    const changed: { name: string; source: string; previous: HealthStatus | null; status: HealthStatus | null; message: string }[] = [];
    for (const [name, p] of probes) {
      const before = prev?.probes.get(name);
      if (before?.status !== p.status) changed.push({ name, source: p.source, previous: before?.status ?? null, status: p.status, message: p.message });
    }
    for (const [name, p] of prev?.probes ?? []) {
      if (!probes.has(name)) changed.push({ name, source: p.source, previous: p.status, status: null, message: `no longer reported (was: ${p.message})` });
    }
    this.host.log.debug({ event: 'health.checked', status: report.status }, `health ${report.status}`);
    if (prev && prev.status === report.status && changed.length === 0) return;
    const what = changed.map((c) => `${c.name} ${c.status ?? 'gone'}${c.message ? ` (${c.message})` : ''}`).join('; ');
    this.host.log[report.status === 'OK' ? 'info' : 'warn'](
      { event: 'health.changed', previous: prev?.status ?? null, status: report.status, changed },
      `health ${prev?.status ?? 'first check'} -> ${report.status}${what ? `: ${what}` : ''}`,
    );
  }

  /** Stops the timer; resolves once a check in flight ended. */
  async close(): Promise<void> {
    if (this.healthTimer) clearInterval(this.healthTimer);
    await this.healthCheck;
  }
}
