import { errorReply, type AdminContext, type AdminHandler, type AdminReply, type AdminRequest } from './admin.js';
import type { RunConfig } from './config.js';
import { errorMessage } from '../os/errors.js';
import { MAX_PARAMS_BYTES, MAX_PARAMS_DEPTH, safeJson, valueDepth } from '../os/json-limits.js';
import type { HeldListener } from '../os/listeners.js';
import { lockHolder } from '../os/lock.js';
import { URGENCIES, type Urgency } from '../supervisor/lease.js';
import type { ShutdownReason } from '../supervisor/options.js';
import type { Supervisor } from '../supervisor/supervisor.js';
import { isUpgradeField, UPGRADE_FIELDS, type HandoffJobs, type UpgradeRequest } from './handoff-jobs.js';
import { probeHealth, type HealthReport } from './health.js';
import type { JobStore } from './jobs.js';
import { MAX_LIFECYCLE_RECORDS, type LifecycleLog } from './lifecycle.js';
import type { MaintenanceJobs } from './maintenance-jobs.js';
import { ScheduleRoutes, type ScheduleRoutesHost } from './schedule-routes.js';
import type { SelfUpgrade } from './self-upgrade.js';
import { adminSocketPath, adminTokensDir } from './state-dir.js';

/** What the admin routes need from the Daemon (its parts exist once the admin server is made). */
export interface AdminRoutesHost extends ScheduleRoutesHost {
  readonly cfg: RunConfig;
  /** When this `baton run` started (epoch ms). */
  readonly startedAt: number;
  readonly sup: Supervisor;
  readonly jobs: JobStore;
  readonly lifecycle: LifecycleLog;
  readonly handoffs: HandoffJobs;
  readonly maintenance: MaintenanceJobs;
  readonly selfUpgrade: SelfUpgrade;
  listeners(): readonly HeldListener[];
  /** "tcp://HOST:PORT" of the admin TCP listener, if one is bound. */
  adminTcpAddress(): string | undefined;
  /** When the current handoff phase started. */
  phaseStartedAt(): number;
  health(): Promise<HealthReport>;
  stop(timeoutMs: number, reason: ShutdownReason): Promise<void>;
}

/** The admin API's routes: status, history, upgrade, rollback, jobs, health, stop, lifecycle, and the schedules (schedule-routes.ts). */
export class AdminRoutes {
  private readonly schedules: ScheduleRoutes;

  constructor(private readonly host: AdminRoutesHost) {
    this.schedules = new ScheduleRoutes(host);
  }

  /** "METHOD /path" → handler, for AdminServer (a ":name" segment matches any one segment). */
  table(): Record<string, AdminHandler> {
    return {
      'GET /v1/status': () => this.status(),
      'GET /v1/history': (req) => this.history(req),
      'POST /v1/upgrade': (req, ctx) => this.upgradeRoute(req, ctx),
      'POST /v1/rollback': (req, ctx) => this.rollbackRoute(req, ctx),
      'POST /v1/supervisor/upgrade': (req, ctx) => this.selfUpgradeRoute(req, ctx),
      'POST /v1/stop': (req, ctx) => this.stopRoute(req, ctx),
      'GET /v1/jobs': (req) => this.jobsRoute(req),
      'POST /v1/jobs': (req, ctx) => this.runJobRoute(req, ctx),
      'GET /v1/jobs/:id': (req) => this.jobRoute(req),
      'POST /v1/jobs/:id/cancel': (req) => this.cancelJobRoute(req),
      'GET /v1/health': () => this.healthRoute(),
      'GET /v1/schedules': () => this.schedules.schedulesRoute(),
      'POST /v1/schedules': (req) => this.schedules.scheduleChange(req, 'create'),
      'GET /v1/schedules/:name': (req) => this.schedules.scheduleRoute(req),
      'PUT /v1/schedules/:name': (req) => this.schedules.scheduleChange(req, 'replace'),
      'PATCH /v1/schedules/:name': (req) => this.schedules.scheduleChange(req, 'patch'),
      'DELETE /v1/schedules/:name': (req) => this.schedules.scheduleChange(req, 'delete'),
      'POST /v1/schedules/:name/enable': (req) => this.schedules.scheduleChange(req, 'enable'),
      'POST /v1/schedules/:name/disable': (req) => this.schedules.scheduleChange(req, 'disable'),
      'POST /v1/schedules/:name/run': (req) => this.schedules.runScheduleRoute(req),
      'GET /v1/lifecycle': (req) => this.lifecycleRoute(req),
    };
  }

  private async status(): Promise<AdminReply> {
    const inc = this.host.sup.incumbent;
    const holder = await lockHolder(this.host.cfg.dataDir).catch(() => undefined);
    const health = inc?.alive ? await probeHealth(this.host.listeners()) : { status: 'UNKNOWN', detail: 'no app running' };
    const body = {
      name: this.host.cfg.name,
      supervisor: { pid: process.pid, startedAt: new Date(this.host.startedAt).toISOString(), uptimeS: Math.round((Date.now() - this.host.startedAt) / 1000), stateDir: this.host.cfg.stateDir, dataDir: this.host.cfg.dataDir },
      app: inc ? { pid: inc.pid, alive: inc.alive, generation: this.host.sup.generation } : null,
      mode: this.host.sup.socketActivation ? 'socket-activation' : 'protocol',
      /** Something serves: an app process of ours is alive. When false the service is down. */
      serving: Boolean(inc?.alive),
      restartScheduled: this.host.sup.restartScheduled,
      builds: { current: this.host.sup.builds.current() ?? null, lastGood: this.host.sup.builds.lastGood() ?? null },
      health,
      phase: this.host.sup.phase,
      phaseElapsedMs: this.host.sup.phase === 'idle' ? undefined : Date.now() - this.host.phaseStartedAt(),
      stopping: this.host.stopping(),
      listeners: this.host.listeners().map((l) => ({ name: l.name, address: l.address })),
      lock: holder ? { pid: holder.owner.pid, alive: holder.alive, since: holder.owner.acquiredAt } : null,
      runningJob: this.host.jobs.running() ?? null,
      lastHandoff: this.host.jobs.lastOf('handoff') ?? null,
      lastMaintenance: this.host.jobs.lastOf('maintenance') ?? null,
      admin: { socket: adminSocketPath(this.host.cfg.stateDir), tcp: this.host.adminTcpAddress() ?? null, tokens: adminTokensDir(this.host.cfg.stateDir) },
      /** How the previous `baton run` on this state dir ended (lifecycle.json). */
      previousShutdown: this.host.lifecycle.previousShutdown ?? null,
      report: await this.host.health().then(
        (r) => ({ status: r.status, probes: r.probes }),
        (err: unknown) => ({ status: 'UNKNOWN', probes: [{ name: 'health', status: 'UNKNOWN', message: errorMessage(err) }] }),
      ),
    };
    return { status: 200, body };
  }

  private async history(req: AdminRequest): Promise<AdminReply> {
    const raw = req.query.get('limit') ?? '20';
    const limit = Number(raw);
    if (!/^\d+$/.test(raw) || limit < 1 || limit > 10_000) return errorReply(400, 'E_BAD_REQUEST', `limit: expected an integer in 1..10000 (got ${JSON.stringify(raw)})`);
    return { status: 200, body: { jobs: this.host.jobs.list(limit) } };
  }

  private async upgradeRoute(req: AdminRequest, ctx: AdminContext): Promise<AdminReply> {
    const spec: UpgradeRequest = {};
    for (const [k, v] of Object.entries(req.body)) {
      if (!isUpgradeField(k)) return errorReply(400, 'E_BAD_REQUEST', `"${k}": unknown field; known: ${UPGRADE_FIELDS.join(', ')}`);
      const min = k === 'leaseWaitS' ? 0 : Number.MIN_VALUE;
      if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > 86_400) return errorReply(400, 'E_BAD_REQUEST', `"${k}": expected a number of seconds in ${k === 'leaseWaitS' ? '[0' : '(0'}, 86400] (got ${JSON.stringify(v)})`);
      spec[k] = v;
    }
    const job = await this.host.handoffs.upgrade('admin', req.who, spec, { onEvent: (line) => ctx.stream(line) });
    const status = job.state === 'SKIPPED' ? (job.code === 'E_HANDOFF_IN_PROGRESS' || job.code === 'E_LEASE_HELD' ? 409 : 503) : 200;
    return { status, body: { type: 'result', job }, audit: { job: job.id, state: job.state, code: job.code } };
  }

  private async rollbackRoute(req: AdminRequest, ctx: AdminContext): Promise<AdminReply> {
    const reason = req.body.reason;
    const unknown = unknownField(req.body, ['reason']);
    if (unknown) return unknown;
    if (reason !== undefined && (typeof reason !== 'string' || reason.length > 500)) return errorReply(400, 'E_BAD_REQUEST', '"reason": expected a string of at most 500 characters');
    const job = await this.host.handoffs.rollback('admin', req.who, (reason as string | undefined) ?? 'requested by an operator', { onEvent: (line) => ctx.stream(line) });
    const status = job.state === 'SKIPPED' ? (job.code === 'E_HANDOFF_IN_PROGRESS' || job.code === 'E_LEASE_HELD' ? 409 : job.code === 'E_NO_ROLLBACK_TARGET' ? 422 : 503) : 200;
    return { status, body: { type: 'result', job }, audit: { job: job.id, state: job.state, code: job.code } };
  }

  private async selfUpgradeRoute(req: AdminRequest, ctx: AdminContext): Promise<AdminReply> {
    const unknown = unknownField(req.body, []);
    if (unknown) return unknown;
    const job = await this.host.selfUpgrade.run('admin', req.who, { onEvent: (line) => ctx.stream(line) });
    const status = job.state === 'SKIPPED' ? 409 : 200;
    return { status, body: { type: 'result', job }, audit: { job: job.id, state: job.state, code: job.code } };
  }

  private async jobsRoute(req: AdminRequest): Promise<AdminReply> {
    const raw = req.query.get('limit') ?? '20';
    const limit = Number(raw);
    if (!/^\d+$/.test(raw) || limit < 1 || limit > 10_000) return errorReply(400, 'E_BAD_REQUEST', `limit: expected an integer in 1..10000 (got ${JSON.stringify(raw)})`);
    const kind = req.query.get('kind') ?? undefined;
    if (kind !== undefined && kind !== 'handoff' && kind !== 'maintenance' && kind !== 'supervisor') return errorReply(400, 'E_BAD_REQUEST', `kind: expected handoff, maintenance or supervisor (got ${JSON.stringify(kind)})`);
    return { status: 200, body: { jobs: this.host.jobs.list(limit, kind) } };
  }

  private async jobRoute(req: AdminRequest): Promise<AdminReply> {
    const job = this.host.jobs.get(req.params.id ?? '');
    if (!job) return errorReply(404, 'E_NO_SUCH_JOB', `no job ${JSON.stringify(req.params.id)} in the history`);
    return { status: 200, body: { job } };
  }

  /** POST /v1/jobs {task, urgency?, reason?, params?}: runs now; NDJSON progress lines, then {"type":"result","job"}. */
  private async runJobRoute(req: AdminRequest, ctx: AdminContext): Promise<AdminReply> {
    const known = ['task', 'urgency', 'reason', 'params'];
    for (const k of Object.keys(req.body)) if (!known.includes(k)) return errorReply(400, 'E_BAD_REQUEST', `"${k}": unknown field; known: ${known.join(', ')}`);
    const { task, urgency = 'normal', reason, params } = req.body as { task?: unknown; urgency?: unknown; reason?: unknown; params?: unknown };
    if (typeof task !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(task)) return errorReply(400, 'E_BAD_REQUEST', `"task": expected a task name (1-64 of [A-Za-z0-9._-]) (got ${JSON.stringify(task)})`);
    if (typeof urgency !== 'string' || !URGENCIES.includes(urgency as Urgency)) return errorReply(400, 'E_BAD_REQUEST', `"urgency": expected one of ${URGENCIES.join(', ')} (got ${JSON.stringify(urgency)})`);
    if (reason !== undefined && (typeof reason !== 'string' || reason.length > 1024)) return errorReply(400, 'E_BAD_REQUEST', '"reason": expected a string of at most 1024 characters');
    if (params !== undefined && (typeof params !== 'object' || params === null || Array.isArray(params))) return errorReply(400, 'E_BAD_REQUEST', '"params": expected a JSON object');
    // Bounded: params are kept in jobs.json and sent to the app; a deep value there would fail every later read of the history.
    if (params !== undefined && valueDepth(params, MAX_PARAMS_DEPTH) > MAX_PARAMS_DEPTH) return errorReply(400, 'E_BAD_REQUEST', `"params": nested deeper than ${MAX_PARAMS_DEPTH} levels`);
    if (params !== undefined && Buffer.byteLength(safeJson(params) ?? '') > MAX_PARAMS_BYTES) return errorReply(400, 'E_BAD_REQUEST', `"params": at most ${MAX_PARAMS_BYTES} bytes of JSON`);
    const job = await this.host.maintenance.run('admin', req.who, { task, urgency: urgency as Urgency, reason: reason as string | undefined, params: params as Record<string, unknown> | undefined }, { onEvent: (line) => ctx.stream(line) });
    const status = job.state === 'SKIPPED' ? (job.code === 'E_LEASE_HELD' ? 409 : 503) : 200;
    return { status, body: { type: 'result', job }, audit: { job: job.id, task, state: job.state, code: job.code } };
  }

  private async cancelJobRoute(req: AdminRequest): Promise<AdminReply> {
    const job = this.host.jobs.get(req.params.id ?? '');
    if (!job) return errorReply(404, 'E_NO_SUCH_JOB', `no job ${JSON.stringify(req.params.id)} in the history`);
    if (job.kind !== 'maintenance') return errorReply(409, 'E_NOT_CANCELLABLE', `job ${job.id} is a handoff; handoffs are not cancelled (they abort on their own deadline)`);
    const unknown = unknownField(req.body, ['reason']);
    if (unknown) return unknown;
    if (req.body.reason !== undefined && typeof req.body.reason !== 'string') return errorReply(400, 'E_BAD_REQUEST', `"reason": expected a string (got ${JSON.stringify(req.body.reason).slice(0, 80)})`);
    if (job.state !== 'RUNNING' && job.state !== 'PENDING') return errorReply(409, 'E_NOT_RUNNING', `job ${job.id} is already ${job.state}`);
    const reason = typeof req.body.reason === 'string' ? req.body.reason.slice(0, 1024) : 'cancelled over the admin API';
    if (!this.host.sup.cancelJob(job.id, reason)) return errorReply(409, 'E_NOT_RUNNING', `job ${job.id} is not running in the app`);
    return { status: 202, body: { cancelling: true, job }, audit: { job: job.id, cancel: true } };
  }

  /** GET /v1/lifecycle?limit=N: this run's id, lifecycle records newest first, the previous run's shutdown. */
  private async lifecycleRoute(req: AdminRequest): Promise<AdminReply> {
    const raw = req.query.get('limit') ?? String(MAX_LIFECYCLE_RECORDS);
    const limit = Number(raw);
    if (!/^\d+$/.test(raw) || limit < 1 || limit > MAX_LIFECYCLE_RECORDS) return errorReply(400, 'E_BAD_REQUEST', `limit: expected an integer in 1..${MAX_LIFECYCLE_RECORDS} (got ${JSON.stringify(raw)})`);
    return { status: 200, body: { runId: this.host.lifecycle.runId, previousShutdown: this.host.lifecycle.previousShutdown ?? null, records: this.host.lifecycle.list(limit) } };
  }

  private async healthRoute(): Promise<AdminReply> {
    return { status: 200, body: await this.host.health() };
  }

  private async stopRoute(req: AdminRequest, ctx: AdminContext): Promise<AdminReply> {
    const t = req.body.timeoutS;
    const unknown = unknownField(req.body, ['timeoutS']);
    if (unknown) return unknown;
    if (t !== undefined && (typeof t !== 'number' || !Number.isFinite(t) || t <= 0 || t > 3600)) return errorReply(400, 'E_BAD_REQUEST', `"timeoutS": expected a number of seconds in (0, 3600] (got ${JSON.stringify(t)})`);
    const timeoutS = (t as number | undefined) ?? this.host.cfg.stopTimeoutS;
    this.host.log.info({ event: 'shutdown.requested', reason: 'admin', timeoutS }, 'stop requested over the admin socket');
    if (!this.host.stopping()) await this.host.lifecycle.record('shutdown.requested', { reason: 'admin', timeoutS });
    // Socket activation: no drain or seal to ask for, only the server's stop signal.
    const activation = this.host.cfg.activation;
    ctx.stream({ type: 'stopping', timeoutS, ...(activation && { stopSignal: activation.stopSignal ?? 'SIGTERM' }) });
    await this.host.stop(timeoutS * 1000, 'admin');
    return { status: 200, body: { type: 'result', stopped: true }, audit: 'stopped' };
  }
}

/** A 400 naming the first body field a route does not know, or undefined when there is none. */
function unknownField(body: Record<string, unknown>, known: readonly string[]): AdminReply | undefined {
  const field = Object.keys(body).find((k) => !known.includes(k));
  if (field === undefined) return undefined;
  return errorReply(400, 'E_BAD_REQUEST', `${JSON.stringify(field.slice(0, 64))}: unknown field; known: ${known.join(', ')}`);
}
