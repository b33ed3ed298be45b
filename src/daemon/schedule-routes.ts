import { errorReply, type AdminReply, type AdminRequest } from './admin.js';
import type { Logger } from '../os/log.js';
import { ScheduleError } from './schedule-error.js';
import type { RunSummary, ScheduleRunLog } from './schedule-runs.js';
import type { Scheduler } from './scheduler.js';
import type { Schedule, ScheduleStore } from './schedules.js';

/** What the schedule routes need from the Daemon. */
export interface ScheduleRoutesHost {
  readonly log: Logger;
  readonly schedules: ScheduleStore;
  readonly scheduleRuns: ScheduleRunLog;
  /** The Scheduler, once generation 1 serves. */
  scheduler(): Scheduler | undefined;
  stopping(): boolean;
}

/** The admin API's schedule routes (GET/POST/PUT/PATCH/DELETE /v1/schedules...): the store validates, the Scheduler runs. */
export class ScheduleRoutes {
  constructor(private readonly host: ScheduleRoutesHost) {}

  /** A schedule as the API shows it: its record, next fire (ISO, null when disabled), whether it runs, its last run. */
  private scheduleView(s: Schedule): Schedule & { nextFireAt: string | null; running: boolean; lastRun: RunSummary | null } {
    const scheduler = this.host.scheduler();
    const next = scheduler?.nextFireAt(s.name);
    return { ...s, nextFireAt: next !== undefined ? new Date(next).toISOString() : null, running: scheduler?.isRunning(s.name) ?? false, lastRun: this.host.scheduleRuns.get(s.name) ?? null };
  }

  async schedulesRoute(): Promise<AdminReply> {
    return { status: 200, body: { schedules: this.host.schedules.list().map((s) => this.scheduleView(s)) } };
  }

  async scheduleRoute(req: AdminRequest): Promise<AdminReply> {
    const s = this.host.schedules.get(req.params.name ?? '');
    if (!s) return errorReply(404, 'E_NO_SUCH_SCHEDULE', `no schedule named ${JSON.stringify(req.params.name)}`);
    return { status: 200, body: { schedule: this.scheduleView(s) } };
  }

  /** Create / replace / patch / delete / enable / disable: the store validates and persists; errors name the field. */
  async scheduleChange(req: AdminRequest, op: 'create' | 'replace' | 'patch' | 'delete' | 'enable' | 'disable'): Promise<AdminReply> {
    const name = req.params.name ?? '';
    try {
      if ((op === 'delete' || op === 'enable' || op === 'disable') && Object.keys(req.body).length > 0) {
        return errorReply(400, 'E_BAD_REQUEST', `${Object.keys(req.body)[0]}: unknown field; ${op} takes no body`);
      }
      const s =
        op === 'create' ? await this.host.schedules.create(req.body)
        : op === 'replace' ? await this.host.schedules.replace(name, req.body)
        : op === 'patch' ? await this.host.schedules.patch(name, req.body)
        : op === 'delete' ? await this.host.schedules.delete(name)
        : await this.host.schedules.setEnabled(name, op === 'enable');
      this.host.log.info({ event: `schedule.${op === 'create' ? 'created' : op === 'delete' ? 'deleted' : 'updated'}`, schedule: s.name, op, enabled: s.enabled, cron: s.cron }, `schedule ${s.name}: ${op}`);
      const body = op === 'delete' ? { deleted: s.name } : { schedule: this.scheduleView(s) };
      return { status: op === 'create' ? 201 : 200, body, audit: { schedule: s.name, op } };
    } catch (err) {
      if (!(err instanceof ScheduleError)) throw err;
      const status = err.code === 'E_NO_SUCH_SCHEDULE' ? 404 : err.code === 'E_SCHEDULE_EXISTS' ? 409 : 400;
      return { ...errorReply(status, err.code, err.message), audit: { schedule: name || undefined, op, code: err.code } };
    }
  }

  /** POST /v1/schedules/:name/run: one fire now, with the same window, halt and overlap rules; waits for the run. */
  async runScheduleRoute(req: AdminRequest): Promise<AdminReply> {
    const name = req.params.name ?? '';
    if (Object.keys(req.body).length > 0) return errorReply(400, 'E_BAD_REQUEST', `${Object.keys(req.body)[0]}: unknown field; run takes no body`);
    if (!this.host.schedules.get(name)) return errorReply(404, 'E_NO_SUCH_SCHEDULE', `no schedule named ${JSON.stringify(name)}`);
    const scheduler = this.host.scheduler();
    if (!scheduler || this.host.stopping()) return errorReply(503, 'E_STOPPING', 'the supervisor is stopping');
    const run = await scheduler.runNow(name);
    return { status: 200, body: { run }, audit: { schedule: name, outcome: run.outcome, jobs: run.jobs.map((j) => `${j.task}:${j.state}`) } };
  }
}
