/**
 * The restart policy at work: an incumbent that exits outside a handoff is replaced by a
 * fresh generation, with backoff, until too many restarts in the window make a crash loop.
 */
import { errorMessage } from '../os/errors.js';
import type { Logger } from '../os/log.js';
import type { AppProcess } from './generation.js';
import { DEFAULT_RESTART, type RestartPolicy } from './options.js';
import type { HandoffResult } from './results.js';

/** What the restarts need from the Supervisor that owns them. */
export interface RestartHost {
  readonly log: Logger;
  /** The configured policy (over DEFAULT_RESTART), read at every check. */
  policy(): Partial<RestartPolicy> | undefined;
  /** The Supervisor's events ('incumbent-exit', 'restart-scheduled', 'restarted', 'crash-loop'). */
  emit(event: string, ...args: unknown[]): boolean;
  /** The serving incumbent, if any. */
  incumbent(): AppProcess | undefined;
  /** Sets the Supervisor's incumbent: none once it died; the last failed start, to be checked again. */
  setIncumbent(app: AppProcess | undefined): void;
  handoffRunning(): boolean;
  stopping(): boolean;
  /** A cold start: a handoff from nobody (of the build that served, or the last known-good one). */
  performHandoff(): Promise<HandoffResult>;
  /** A crash loop: switch to the last known-good build if the crashing one is not it (true: go on restarting). */
  fallback(): boolean;
}

/** Watches the incumbent and restarts it under the restart policy. */
export class Restarter {
  /** When the restarts within the window happened. */
  private restarts: number[] = [];
  private restartTimer: NodeJS.Timeout | undefined;
  /** The last spawned process that failed to become the incumbent (for the restart policy). */
  lastFailed: AppProcess | undefined;

  constructor(private readonly host: RestartHost) {}

  /** A restart of a crashed incumbent is scheduled. */
  get scheduled(): boolean {
    return this.restartTimer !== undefined;
  }

  /** Stopping: a scheduled restart never fires. */
  cancel(): void {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
  }

  /** Notices an incumbent that exits outside a handoff (also one that died while a handoff was finishing). */
  watch(app: AppProcess): void {
    void app.exited.then(() => this.checkIncumbent());
  }

  /**
   * Nobody serves and no handoff runs: report it and start a fresh generation, with
   * exponential backoff (restart.baseMs doubling up to restart.maxMs). More than
   * restart.maxRestarts restarts within restart.windowMs is a crash loop: give up
   * and emit 'crash-loop' (the daemon exits with a clear message).
   */
  checkIncumbent(): void {
    const app = this.host.incumbent();
    if (!app || app.alive || this.host.handoffRunning() || this.host.stopping() || this.restartTimer) return;
    this.host.log.error({ event: 'app.exited', pid: app.pid, generation: app.generation, ...app.exit }, 'incumbent exited');
    // What it left behind (a server's workers, orphaned) would go on accepting on the shared
    // listeners beside the next generation: no process outlives its generation.
    app.sweepGroup();
    this.host.setIncumbent(undefined);
    this.host.emit('incumbent-exit', app, app.exit);
    const policy = { ...DEFAULT_RESTART, ...this.host.policy() };
    if (!policy.enabled) return;
    const now = Date.now();
    this.restarts = this.restarts.filter((t) => now - t < policy.windowMs);
    if (this.restarts.length >= policy.maxRestarts && this.host.fallback()) {
      this.host.log.error(
        { event: 'app.crash_loop_fallback', restarts: this.restarts.length, windowMs: policy.windowMs },
        `app crashed ${this.restarts.length} times in ${policy.windowMs} ms; going back to the last known-good build`,
      );
      this.restarts = [];
    }
    if (this.restarts.length >= policy.maxRestarts) {
      this.host.log.fatal(
        { event: 'app.crash_loop', restarts: this.restarts.length, windowMs: policy.windowMs },
        `app crashed ${this.restarts.length} times in ${policy.windowMs} ms; giving up`,
      );
      this.host.emit('crash-loop', this.restarts.length);
      return;
    }
    const delay = Math.min(policy.baseMs * 2 ** this.restarts.length, policy.maxMs);
    this.restarts.push(now);
    this.host.log.warn({ event: 'app.restart_scheduled', delayMs: delay, attempt: this.restarts.length }, `restarting in ${delay} ms`);
    this.host.emit('restart-scheduled', delay, this.restarts.length);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.host.stopping() || this.host.handoffRunning() || this.host.incumbent()?.alive) return;
      void this.host.performHandoff().then(
        (r) => {
          this.host.emit('restarted', r);
          if (r.outcome !== 'committed') this.retryLater();
        },
        (err: unknown) => {
          this.host.log.error({ event: 'app.restart_failed', err: errorMessage(err) }, 'restart failed');
          this.retryLater();
        },
      );
    }, delay);
  }

  /** A start outside the policy's own timer failed (e.g. the cold start after an abort): retry under the policy. */
  retryLater(): void {
    // A failed cold start leaves no incumbent: schedule the next attempt through the same policy.
    this.host.setIncumbent(this.host.incumbent() ?? this.lastFailed);
    setImmediate(() => this.checkIncumbent());
  }
}
