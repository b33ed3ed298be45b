import { rm } from 'node:fs/promises';
import path from 'node:path';
import { AdminServer, errorReply, type AdminContext, type AdminReply, type AdminRequest } from './admin.js';
import { AdminTokens } from './admin-auth.js';
import { adminSocketLive } from './admin-client.js';
import type { RunConfig } from './config.js';
import { BatonError, ConfigError, errorMessage } from '../os/errors.js';
import { MAX_PARAMS_BYTES, MAX_PARAMS_DEPTH, safeJson, valueDepth } from '../os/json-limits.js';
import { JobStore } from './jobs.js';
import { adoptSystemdListeners, type HeldListener } from '../os/listeners.js';
import { LifecycleLog, MAX_LIFECYCLE_RECORDS } from './lifecycle.js';
import { lockHolder } from '../os/lock.js';
import { HeapCompactor } from '../supervisor/memory.js';
import { createLogger, type Logger } from '../os/log.js';
import { Supervisor } from '../supervisor/supervisor.js';
import { URGENCIES, type Urgency } from '../supervisor/lease.js';
import type { ShutdownReason } from '../supervisor/options.js';
import type { HandoffResult } from '../supervisor/results.js';
import { type SupervisorPhase } from '../supervisor/phases.js';
import type { SupervisorMetrics } from './metrics.js';
import { SystemdNotifier } from './systemd.js';
import { ScheduleRunLog, type RunSummary } from './schedule-runs.js';
import { ScheduleError } from './schedule-error.js';
import { ScheduleStore, type Schedule } from './schedules.js';
import { Scheduler } from './scheduler.js';
import { adminSocketPath, adminTokensDir, prepareStateDir } from './state-dir.js';
import { installFaultPolicy } from './fault-policy.js';
import { bindOrTakeOver } from './takeover.js';
import { aggregateHealth, probeHealth, type HealthReport } from './health.js';
import { HealthWatch } from './health-watch.js';
import { handoffSpec, HandoffJobs, isUpgradeField, servingStatus, UPGRADE_FIELDS, type UpgradeRequest } from './handoff-jobs.js';
import { MaintenanceJobs } from './maintenance-jobs.js';

/**
 * `baton run`: the long-lived supervisor process. Order at start: (config was
 * validated by the caller) state dir → no other supervisor on it → listeners (bound,
 * or adopted from systemd) → journal recovery → cold start → admin socket → READY.
 * Then it serves the admin API and signals (SIGHUP upgrade, SIGTERM/SIGINT stop) until
 * stopped (exit 0) or the app crash-loops (exit 4).
 */

export const EXIT = { ok: 0, error: 1, crashLoop: 4 } as const;

/** The state dir's paths and the fault policy, for the CLI and the tests that import them from here. */
export { adminSocketPath, adminTokensDir, prepareStateDir } from './state-dir.js';
export { installFaultPolicy } from './fault-policy.js';

export class Daemon {
  private readonly log: Logger;
  private readonly startedAt = Date.now();
  private sup!: Supervisor;
  private listeners: HeldListener[] = [];
  private jobs!: JobStore;
  /** Schedules (schedules.ts): the store (source of truth) and the timer that fires them. */
  private schedules!: ScheduleStore;
  private scheduleRuns!: ScheduleRunLog;
  private scheduler: Scheduler | undefined;
  private lifecycle!: LifecycleLog;
  private admin: AdminServer | undefined;
  private notifier: SystemdNotifier | undefined;
  private metrics: SupervisorMetrics | undefined;
  private stopPromise: Promise<void> | undefined;
  private exitCode: number = EXIT.ok;
  private finished!: (code: number) => void;
  /** Resolves with the process exit code. */
  readonly done: Promise<number>;
  private phaseStartedAt = Date.now();
  /** Upgrades, rollbacks and restarts as jobs (handoff-jobs.ts); maintenance runs (maintenance-jobs.ts). */
  private readonly handoffs: HandoffJobs;
  private readonly maintenance: MaintenanceJobs;
  /** The periodic health check (health-watch.ts). */
  private readonly healthWatch: HealthWatch;
  /** A full GC shortly after each handoff (src/memory.ts). */
  private readonly compactor: HeapCompactor;
  /** Uninstalls the process-level fault policy (installFaultPolicy). */
  private removeFaultPolicy: (() => void) | undefined;

  constructor(
    private readonly cfg: RunConfig,
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {
    this.log = createLogger('baton', { service: cfg.name });
    this.compactor = new HeapCompactor(this.log);
    this.handoffs = new HandoffJobs({
      log: this.log,
      compactor: this.compactor,
      sup: () => this.sup,
      jobs: () => this.jobs,
      notifier: () => this.notifier,
      stopping: () => Boolean(this.stopPromise),
    });
    this.maintenance = new MaintenanceJobs({
      log: this.log,
      sup: () => this.sup,
      jobs: () => this.jobs,
      metrics: () => this.metrics,
      stopping: () => Boolean(this.stopPromise),
      upgrading: () => Boolean(this.handoffs.upgrading),
    });
    this.healthWatch = new HealthWatch({
      log: this.log,
      intervalS: cfg.healthIntervalS,
      baking: () => this.sup.baking,
      health: () => this.health(),
      handoffUnderWay: () => this.handoffUnderWay(),
      phaseStartedAt: () => this.phaseStartedAt,
      rollback: (trigger, who, reason) => this.handoffs.rollback(trigger, who, reason),
    });
    this.done = new Promise((r) => (this.finished = r));
  }

  /** Starts everything; resolves once serving (or rejects with a start-up error, after cleaning up). */
  async start(): Promise<void> {
    const t0 = Date.now();
    const cfg = this.cfg;
    this.removeFaultPolicy ??= installFaultPolicy(this.log, {
      onStorm: () => {
        this.exitCode = EXIT.error;
        if (this.sup) void this.stop(this.cfg.stopTimeoutS * 1000, 'error');
        else setImmediate(() => this.finished(EXIT.error));
      },
    });
    await prepareStateDir(cfg.stateDir, this.log);
    const sockPath = adminSocketPath(cfg.stateDir);
    if (await adminSocketLive(sockPath)) {
      throw new BatonError('E_ALREADY_RUNNING', `another baton supervisor is running on state dir ${cfg.stateDir} (${sockPath} answers); use another --state-dir or --name`);
    }
    // From here on the state dir is ours: whatever fails the start, the app is stopped (a
    // failed start never leaves it running unsupervised) and what we bound is closed.
    try {
      await this.startUp(t0, sockPath);
    } catch (err) {
      await this.abortStart(err);
      throw err;
    }
  }

  /** A start that failed after the state dir was taken: stop the app if one runs, close everything, remove the control socket. */
  private async abortStart(err: unknown): Promise<void> {
    this.scheduler?.stop();
    if (this.sup?.incumbent?.alive) {
      const pid = this.sup.incumbent.pid;
      this.log.error({ event: 'daemon.start_failed', err: errorMessage(err), appPid: pid }, `start-up failed after the app started (pid ${pid}): stopping it`);
      await this.sup.stop(Math.min(this.cfg.stopTimeoutS, 10) * 1000).catch((e: unknown) => this.log.error({ event: 'daemon.start_failed_stop', err: errorMessage(e) }, 'could not stop the app'));
    }
    await this.cleanup();
  }

  private async startUp(t0: number, sockPath: string): Promise<void> {
    const cfg = this.cfg;
    // Before anything is started: an invalid schedules.json fails the start (exit 1) with
    // the file and field, instead of a supervisor that silently runs no maintenance.
    this.schedules = new ScheduleStore(path.join(cfg.stateDir, 'schedules.json'), this.log);
    await this.schedules.load();
    if (cfg.schedules) await this.schedules.seed(cfg.schedules); // only into a state dir without schedules.json
    this.scheduleRuns = new ScheduleRunLog(path.join(cfg.stateDir, 'schedule-runs.json'), this.log);
    await this.scheduleRuns.load((name) => this.schedules.get(name) !== undefined);
    this.notifier = SystemdNotifier.fromEnv(this.env, this.log);
    this.lifecycle = new LifecycleLog(path.join(cfg.stateDir, 'lifecycle.json'), this.log);
    await this.lifecycle.load();
    const tokens = await AdminTokens.ensure(adminTokensDir(cfg.stateDir), this.log);

    const adopted = adoptSystemdListeners(this.env);
    if (adopted) {
      if (cfg.listen.length) this.log.warn({ event: 'daemon.listen_ignored', listen: cfg.listenText }, 'systemd passed listening sockets (LISTEN_FDS); ignoring --listen/"listen"');
      this.listeners = adopted;
    } else if (cfg.listen.length) {
      this.listeners = await bindOrTakeOver(cfg, this.log);
    }
    this.log.info({ event: 'daemon.listeners', listeners: this.listeners.map((l) => `${l.name}=${l.address}`), systemd: Boolean(adopted) }, 'listeners held');

    this.jobs = new JobStore(path.join(cfg.stateDir, 'jobs.json'), cfg.history, this.log);
    await this.jobs.load();

    const appEnv = { ...this.env };
    for (const k of ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID']) delete appEnv[k];
    this.sup = new Supervisor({
      command: () => cfg.command, // re-evaluated per spawn; PATH lookup and symlinks resolve at exec time
      listeners: this.listeners,
      dataDir: cfg.dataDir,
      stateDir: cfg.stateDir,
      env: appEnv,
      log: this.log,
      timeouts: {
        ...(cfg.handoff.deadlineS !== undefined && { deadlineMs: cfg.handoff.deadlineS * 1000 }),
        ...(cfg.handoff.drainGraceS !== undefined && { drainGraceMs: cfg.handoff.drainGraceS * 1000 }),
        ...(cfg.handoff.helloTimeoutS !== undefined && { helloMs: cfg.handoff.helloTimeoutS * 1000 }),
        ...(cfg.handoff.readyTimeoutS !== undefined && { readyMs: cfg.handoff.readyTimeoutS * 1000 }),
        ...(cfg.handoff.bakeS !== undefined && { bakeMs: cfg.handoff.bakeS * 1000 }),
      },
      ...(cfg.handoff.listenerSpares !== undefined && { listenerSpares: cfg.handoff.listenerSpares }),
      ...(cfg.handoff.listenerCopies !== undefined && { listenerCopies: cfg.handoff.listenerCopies }),
      restart: {
        ...(cfg.restart.maxRestarts !== undefined && { maxRestarts: cfg.restart.maxRestarts }),
        ...(cfg.restart.windowS !== undefined && { windowMs: cfg.restart.windowS * 1000 }),
      },
    });
    this.sup.on('phase', (phase: SupervisorPhase) => {
      this.phaseStartedAt = Date.now();
      if (this.handoffs.notifyPhases) void this.notifier?.status(`upgrading: ${phase}`);
    });
    this.sup.on('crash-loop', (n: number) => void this.crashLoop(n));
    this.sup.on('incumbent-exit', (app: { pid: number }, exit: { code?: number; signal?: string } | undefined) => {
      this.log.error({ event: 'daemon.app_exited', pid: app.pid, ...exit }, `app (pid ${app.pid}) exited outside a handoff; restarting`);
      void this.notifier?.status(`app exited (pid ${app.pid}); restarting`);
    });
    this.sup.on('restarted', (r: HandoffResult) => void this.handoffs.recordRestart(r));

    // The admin API object exists before the app starts so its TCP listener (adminListen)
    // is bound now: a taken port fails the start with nothing running. It answers 503
    // until the Unix socket opens below, once generation 1 serves.
    this.admin = new AdminServer({
      socketPath: sockPath,
      auditPath: path.join(cfg.stateDir, 'audit.log'),
      log: this.log,
      tokens,
      tcp: cfg.adminListen,
      routes: {
        'GET /v1/status': () => this.status(),
        'GET /v1/history': (req) => this.history(req),
        'POST /v1/upgrade': (req, ctx) => this.upgradeRoute(req, ctx),
        'POST /v1/rollback': (req, ctx) => this.rollbackRoute(req, ctx),
        'POST /v1/stop': (req, ctx) => this.stopRoute(req, ctx),
        'GET /v1/jobs': (req) => this.jobsRoute(req),
        'POST /v1/jobs': (req, ctx) => this.runJobRoute(req, ctx),
        'GET /v1/jobs/:id': (req) => this.jobRoute(req),
        'POST /v1/jobs/:id/cancel': (req) => this.cancelJobRoute(req),
        'GET /v1/health': () => this.healthRoute(),
        'GET /v1/schedules': () => this.schedulesRoute(),
        'POST /v1/schedules': (req) => this.scheduleChange(req, 'create'),
        'GET /v1/schedules/:name': (req) => this.scheduleRoute(req),
        'PUT /v1/schedules/:name': (req) => this.scheduleChange(req, 'replace'),
        'PATCH /v1/schedules/:name': (req) => this.scheduleChange(req, 'patch'),
        'DELETE /v1/schedules/:name': (req) => this.scheduleChange(req, 'delete'),
        'POST /v1/schedules/:name/enable': (req) => this.scheduleChange(req, 'enable'),
        'POST /v1/schedules/:name/disable': (req) => this.scheduleChange(req, 'disable'),
        'POST /v1/schedules/:name/run': (req) => this.runScheduleRoute(req),
        'GET /v1/lifecycle': (req) => this.lifecycleRoute(req),
      },
    });
    // The admin socket is bound before the app starts (it answers 503 E_STARTING until
    // generation 1 serves): a socket that cannot be bound fails the start with nothing running.
    try {
      await this.admin.listen({ ready: false });
    } catch (err) {
      throw new ConfigError('E_BIND_FAILED', `cannot bind the admin socket ${sockPath}: ${errorMessage(err)}`, { field: 'stateDir' });
    }
    try {
      await this.admin.listenTcp();
    } catch (err) {
      throw new ConfigError('E_BIND_FAILED', `"adminListen": cannot listen on ${cfg.adminListen?.host}:${cfg.adminListen?.port}: ${errorMessage(err)}`, { field: 'adminListen' });
    }

    if (cfg.metrics) {
      // Bound before the app starts, so a taken port fails the start with nothing running.
      // Loaded only when asked for: prom-client costs ≈ 2–3 MiB of RSS (BENCHMARKS.md, memory).
      const { SupervisorMetrics } = await import('./metrics.js');
      this.metrics = new SupervisorMetrics(this.sup, { service: cfg.name });
      try {
        await this.metrics.serve(cfg.metrics.host, cfg.metrics.port, this.log);
      } catch (err) {
        throw new ConfigError('E_BIND_FAILED', `"metrics": cannot listen on ${cfg.metrics.host}:${cfg.metrics.port}: ${errorMessage(err)}`, { field: 'metrics' });
      }
    }

    const recovered = await this.sup.recover();
    if (recovered?.survivor) {
      this.log.warn({ event: 'daemon.adopted', ...recovered }, `adopted generation ${recovered.survivor.generation} (pid ${recovered.survivor.pid}) after a supervisor restart`);
    } else {
      const job = this.jobs.create('handoff', 'cold-start');
      await this.jobs.start(job);
      const result = await this.sup.start(handoffSpec({}));
      await this.jobs.finishHandoff(job, result);
      if (result.outcome !== 'committed') {
        throw new BatonError('E_START_FAILED', `generation 1 did not start: ${result.reason ?? 'unknown reason'}`);
      }
    }

    this.admin.ready();

    process.on('SIGHUP', () => {
      this.log.info({ event: 'daemon.signal', signal: 'SIGHUP' }, 'SIGHUP: upgrading');
      void this.handoffs.upgrade('signal', undefined, {});
    });
    for (const sig of ['SIGTERM', 'SIGINT'] as const) {
      process.on(sig, () => {
        this.log.info({ event: 'shutdown.requested', reason: 'signal', signal: sig, timeoutS: this.cfg.stopTimeoutS }, `${sig}: stopping`);
        if (!this.stopPromise) void this.lifecycle.record('shutdown.requested', { reason: 'signal', signal: sig, timeoutS: this.cfg.stopTimeoutS });
        void this.stop(this.cfg.stopTimeoutS * 1000, 'signal');
      });
    }
    const inc = this.sup.incumbent;
    await this.notifier?.ready(servingStatus(this.sup), process.pid);
    this.notifier?.startWatchdog();
    const components = ['listeners', 'journal', 'app', 'admin', ...(this.admin.tcpAddress ? ['admin-tcp'] : [])];
    const startupMs = Date.now() - t0;
    await this.lifecycle.record('startup.completed', { durationMs: startupMs, components });
    this.log.info(
      { event: 'startup.completed', durationMs: startupMs, components, appPid: inc?.pid, generation: this.sup.generation, admin: sockPath, adminTcp: this.admin.tcpAddress },
      `serving generation ${this.sup.generation} (pid ${inc?.pid}); admin socket ${sockPath}`,
    );
    // Lifecycle notice to the app (StartupCompleted), off the start-up path.
    void this.sup.notifyStartup(Date.now() - t0, components);
    this.startScheduler();
    this.healthWatch.start();
  }


  private handoffUnderWay(): boolean {
    return Boolean(this.stopPromise || this.handoffs.upgrading) || this.sup.busy || this.sup.phase !== 'idle';
  }

  /** Aggregated health: the supervisor's own checks, the app's probes, the supervisor's view. */
  private health(): Promise<HealthReport> {
    return aggregateHealth({ sup: this.sup, listeners: this.listeners, jobs: this.jobs, metrics: this.metrics, dataDir: this.cfg.dataDir });
  }

  // ---- admin routes --------------------------------------------------------------

  private async status(): Promise<AdminReply> {
    const inc = this.sup.incumbent;
    const holder = await lockHolder(this.cfg.dataDir).catch(() => undefined);
    const health = inc?.alive ? await probeHealth(this.listeners) : { status: 'UNKNOWN', detail: 'no app running' };
    const body = {
      name: this.cfg.name,
      supervisor: { pid: process.pid, startedAt: new Date(this.startedAt).toISOString(), uptimeS: Math.round((Date.now() - this.startedAt) / 1000), stateDir: this.cfg.stateDir, dataDir: this.cfg.dataDir },
      app: inc ? { pid: inc.pid, alive: inc.alive, generation: this.sup.generation } : null,
      /** Something serves: an app process of ours is alive. When false the service is down. */
      serving: Boolean(inc?.alive),
      restartScheduled: this.sup.restartScheduled,
      builds: { current: this.sup.builds.current() ?? null, lastGood: this.sup.builds.lastGood() ?? null },
      health,
      phase: this.sup.phase,
      phaseElapsedMs: this.sup.phase === 'idle' ? undefined : Date.now() - this.phaseStartedAt,
      stopping: Boolean(this.stopPromise),
      listeners: this.listeners.map((l) => ({ name: l.name, address: l.address })),
      lock: holder ? { pid: holder.owner.pid, alive: holder.alive, since: holder.owner.acquiredAt } : null,
      runningJob: this.jobs.running() ?? null,
      lastHandoff: this.jobs.lastOf('handoff') ?? null,
      lastMaintenance: this.jobs.lastOf('maintenance') ?? null,
      admin: { socket: adminSocketPath(this.cfg.stateDir), tcp: this.admin?.tcpAddress ?? null, tokens: adminTokensDir(this.cfg.stateDir) },
      /** How the previous `baton run` on this state dir ended (lifecycle.json). */
      previousShutdown: this.lifecycle.previousShutdown ?? null,
      report: await this.health().then(
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
    return { status: 200, body: { jobs: this.jobs.list(limit) } };
  }

  private async upgradeRoute(req: AdminRequest, ctx: AdminContext): Promise<AdminReply> {
    const spec: UpgradeRequest = {};
    for (const [k, v] of Object.entries(req.body)) {
      if (!isUpgradeField(k)) return errorReply(400, 'E_BAD_REQUEST', `"${k}": unknown field; known: ${UPGRADE_FIELDS.join(', ')}`);
      const min = k === 'leaseWaitS' ? 0 : Number.MIN_VALUE;
      if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > 86_400) return errorReply(400, 'E_BAD_REQUEST', `"${k}": expected a number of seconds in ${k === 'leaseWaitS' ? '[0' : '(0'}, 86400] (got ${JSON.stringify(v)})`);
      spec[k] = v;
    }
    const job = await this.handoffs.upgrade('admin', req.who, spec, { onEvent: (line) => ctx.stream(line) });
    const status = job.state === 'SKIPPED' ? (job.code === 'E_HANDOFF_IN_PROGRESS' || job.code === 'E_LEASE_HELD' ? 409 : 503) : 200;
    return { status, body: { type: 'result', job }, audit: { job: job.id, state: job.state, code: job.code } };
  }

  private async rollbackRoute(req: AdminRequest, ctx: AdminContext): Promise<AdminReply> {
    const reason = req.body.reason;
    if (Object.keys(req.body).some((k) => k !== 'reason')) return errorReply(400, 'E_BAD_REQUEST', `"${Object.keys(req.body).find((k) => k !== 'reason')}": unknown field; known: reason`);
    if (reason !== undefined && (typeof reason !== 'string' || reason.length > 500)) return errorReply(400, 'E_BAD_REQUEST', '"reason": expected a string of at most 500 characters');
    const job = await this.handoffs.rollback('admin', req.who, (reason as string | undefined) ?? 'requested by an operator', { onEvent: (line) => ctx.stream(line) });
    const status = job.state === 'SKIPPED' ? (job.code === 'E_HANDOFF_IN_PROGRESS' || job.code === 'E_LEASE_HELD' ? 409 : job.code === 'E_NO_ROLLBACK_TARGET' ? 422 : 503) : 200;
    return { status, body: { type: 'result', job }, audit: { job: job.id, state: job.state, code: job.code } };
  }

  private async jobsRoute(req: AdminRequest): Promise<AdminReply> {
    const raw = req.query.get('limit') ?? '20';
    const limit = Number(raw);
    if (!/^\d+$/.test(raw) || limit < 1 || limit > 10_000) return errorReply(400, 'E_BAD_REQUEST', `limit: expected an integer in 1..10000 (got ${JSON.stringify(raw)})`);
    const kind = req.query.get('kind') ?? undefined;
    if (kind !== undefined && kind !== 'handoff' && kind !== 'maintenance') return errorReply(400, 'E_BAD_REQUEST', `kind: expected handoff or maintenance (got ${JSON.stringify(kind)})`);
    return { status: 200, body: { jobs: this.jobs.list(limit, kind) } };
  }

  private async jobRoute(req: AdminRequest): Promise<AdminReply> {
    const job = this.jobs.get(req.params.id ?? '');
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
    const job = await this.maintenance.run('admin', req.who, { task, urgency: urgency as Urgency, reason: reason as string | undefined, params: params as Record<string, unknown> | undefined }, { onEvent: (line) => ctx.stream(line) });
    const status = job.state === 'SKIPPED' ? (job.code === 'E_LEASE_HELD' ? 409 : 503) : 200;
    return { status, body: { type: 'result', job }, audit: { job: job.id, task, state: job.state, code: job.code } };
  }

  private async cancelJobRoute(req: AdminRequest): Promise<AdminReply> {
    const job = this.jobs.get(req.params.id ?? '');
    if (!job) return errorReply(404, 'E_NO_SUCH_JOB', `no job ${JSON.stringify(req.params.id)} in the history`);
    if (job.kind !== 'maintenance') return errorReply(409, 'E_NOT_CANCELLABLE', `job ${job.id} is a handoff; handoffs are not cancelled (they abort on their own deadline)`);
    if (job.state !== 'RUNNING' && job.state !== 'PENDING') return errorReply(409, 'E_NOT_RUNNING', `job ${job.id} is already ${job.state}`);
    const reason = typeof req.body.reason === 'string' ? req.body.reason.slice(0, 1024) : 'cancelled over the admin API';
    if (!this.sup.cancelJob(job.id, reason)) return errorReply(409, 'E_NOT_RUNNING', `job ${job.id} is not running in the app`);
    return { status: 202, body: { cancelling: true, job }, audit: { job: job.id, cancel: true } };
  }

  /** GET /v1/lifecycle?limit=N: this run's id, lifecycle records newest first, the previous run's shutdown. */
  private async lifecycleRoute(req: AdminRequest): Promise<AdminReply> {
    const raw = req.query.get('limit') ?? String(MAX_LIFECYCLE_RECORDS);
    const limit = Number(raw);
    if (!/^\d+$/.test(raw) || limit < 1 || limit > MAX_LIFECYCLE_RECORDS) return errorReply(400, 'E_BAD_REQUEST', `limit: expected an integer in 1..${MAX_LIFECYCLE_RECORDS} (got ${JSON.stringify(raw)})`);
    return { status: 200, body: { runId: this.lifecycle.runId, previousShutdown: this.lifecycle.previousShutdown ?? null, records: this.lifecycle.list(limit) } };
  }

  // ---- schedules -------------------------------------------------------------------

  /** Generation 1 serves: schedules fire from now on (fires missed while down are not replayed). */
  private startScheduler(): void {
    if (this.stopPromise) return;
    this.scheduler = new Scheduler({
      store: this.schedules,
      runs: this.scheduleRuns,
      log: this.log,
      runTask: (t, name) => this.maintenance.run('schedule', undefined, { task: t.task, urgency: t.urgency ?? 'normal', reason: `schedule ${name}`, params: t.params, schedule: name }),
      skipTask: (t, name, code, reason) => this.maintenance.skipScheduledTask(t, name, code, reason),
    });
    this.scheduler.start();
  }

  /** A schedule as the API shows it: its record, next fire (ISO, null when disabled), whether it runs, its last run. */
  private scheduleView(s: Schedule): Schedule & { nextFireAt: string | null; running: boolean; lastRun: RunSummary | null } {
    const next = this.scheduler?.nextFireAt(s.name);
    return { ...s, nextFireAt: next !== undefined ? new Date(next).toISOString() : null, running: this.scheduler?.isRunning(s.name) ?? false, lastRun: this.scheduleRuns.get(s.name) ?? null };
  }

  private async schedulesRoute(): Promise<AdminReply> {
    return { status: 200, body: { schedules: this.schedules.list().map((s) => this.scheduleView(s)) } };
  }

  private async scheduleRoute(req: AdminRequest): Promise<AdminReply> {
    const s = this.schedules.get(req.params.name ?? '');
    if (!s) return errorReply(404, 'E_NO_SUCH_SCHEDULE', `no schedule named ${JSON.stringify(req.params.name)}`);
    return { status: 200, body: { schedule: this.scheduleView(s) } };
  }

  /** Create / replace / patch / delete / enable / disable: the store validates and persists; errors name the field. */
  private async scheduleChange(req: AdminRequest, op: 'create' | 'replace' | 'patch' | 'delete' | 'enable' | 'disable'): Promise<AdminReply> {
    const name = req.params.name ?? '';
    try {
      if ((op === 'delete' || op === 'enable' || op === 'disable') && Object.keys(req.body).length > 0) {
        return errorReply(400, 'E_BAD_REQUEST', `${Object.keys(req.body)[0]}: unknown field; ${op} takes no body`);
      }
      const s =
        op === 'create' ? await this.schedules.create(req.body)
        : op === 'replace' ? await this.schedules.replace(name, req.body)
        : op === 'patch' ? await this.schedules.patch(name, req.body)
        : op === 'delete' ? await this.schedules.delete(name)
        : await this.schedules.setEnabled(name, op === 'enable');
      this.log.info({ event: `schedule.${op === 'create' ? 'created' : op === 'delete' ? 'deleted' : 'updated'}`, schedule: s.name, op, enabled: s.enabled, cron: s.cron }, `schedule ${s.name}: ${op}`);
      const body = op === 'delete' ? { deleted: s.name } : { schedule: this.scheduleView(s) };
      return { status: op === 'create' ? 201 : 200, body, audit: { schedule: s.name, op } };
    } catch (err) {
      if (!(err instanceof ScheduleError)) throw err;
      const status = err.code === 'E_NO_SUCH_SCHEDULE' ? 404 : err.code === 'E_SCHEDULE_EXISTS' ? 409 : 400;
      return { ...errorReply(status, err.code, err.message), audit: { schedule: name || undefined, op, code: err.code } };
    }
  }

  /** POST /v1/schedules/:name/run: one fire now, with the same window, halt and overlap rules; waits for the run. */
  private async runScheduleRoute(req: AdminRequest): Promise<AdminReply> {
    const name = req.params.name ?? '';
    if (Object.keys(req.body).length > 0) return errorReply(400, 'E_BAD_REQUEST', `${Object.keys(req.body)[0]}: unknown field; run takes no body`);
    if (!this.schedules.get(name)) return errorReply(404, 'E_NO_SUCH_SCHEDULE', `no schedule named ${JSON.stringify(name)}`);
    if (!this.scheduler || this.stopPromise) return errorReply(503, 'E_STOPPING', 'the supervisor is stopping');
    const run = await this.scheduler.runNow(name);
    return { status: 200, body: { run }, audit: { schedule: name, outcome: run.outcome, jobs: run.jobs.map((j) => `${j.task}:${j.state}`) } };
  }

  private async healthRoute(): Promise<AdminReply> {
    return { status: 200, body: await this.health() };
  }

  private async stopRoute(req: AdminRequest, ctx: AdminContext): Promise<AdminReply> {
    const t = req.body.timeoutS;
    if (Object.keys(req.body).some((k) => k !== 'timeoutS')) return errorReply(400, 'E_BAD_REQUEST', 'unknown field; known: timeoutS');
    if (t !== undefined && (typeof t !== 'number' || !Number.isFinite(t) || t <= 0 || t > 3600)) return errorReply(400, 'E_BAD_REQUEST', `"timeoutS": expected a number of seconds in (0, 3600] (got ${JSON.stringify(t)})`);
    const timeoutS = (t as number | undefined) ?? this.cfg.stopTimeoutS;
    this.log.info({ event: 'shutdown.requested', reason: 'admin', timeoutS }, 'stop requested over the admin socket');
    if (!this.stopPromise) await this.lifecycle.record('shutdown.requested', { reason: 'admin', timeoutS });
    ctx.stream({ type: 'stopping', timeoutS });
    await this.stop(timeoutS * 1000, 'admin');
    return { status: 200, body: { type: 'result', stopped: true }, audit: 'stopped' };
  }

  // ---- shutdown ------------------------------------------------------------------

  /** Graceful stop: waits for a running upgrade, stops the app (drain, seal, exit), closes everything. */
  stop(timeoutMs: number, reason: ShutdownReason): Promise<void> {
    this.stopPromise ??= (async () => {
      const t0 = Date.now();
      void this.notifier?.stopping('stopping');
      this.scheduler?.stop(); // no new fires; a run in progress sees E_STOPPING for its next task
      if (this.handoffs.upgrading) {
        this.log.info({ event: 'shutdown.wait_upgrade' }, 'waiting for the running upgrade to end before stopping');
        await this.handoffs.upgrading.catch(() => undefined);
      }
      await this.sup.stop(timeoutMs, reason);
      await this.scheduler?.idle();
      await this.scheduleRuns.flushed();
      this.log.info({ event: 'shutdown.completed', durationMs: Date.now() - t0 }, 'stopped');
      await this.lifecycle.record('shutdown.completed', { durationMs: Date.now() - t0, exitCode: this.exitCode });
      // The admin reply to POST /v1/stop is written before the socket closes.
      setImmediate(() => void this.cleanup().then(() => this.finished(this.exitCode)));
    })();
    return this.stopPromise;
  }

  private async crashLoop(n: number): Promise<void> {
    this.log.fatal({ event: 'daemon.crash_loop', restarts: n }, `the app crashed ${n} times in a row; giving up (exit ${EXIT.crashLoop})`);
    void this.notifier?.status(`giving up: the app crashed ${n} times`);
    this.exitCode = EXIT.crashLoop;
    this.scheduler?.stop();
    this.stopPromise ??= (async () => {
      const t0 = Date.now();
      await this.lifecycle.record('shutdown.requested', { reason: 'crash-loop', timeoutS: 1 });
      await this.sup.stop(1_000, 'error');
      await this.lifecycle.record('shutdown.completed', { durationMs: Date.now() - t0, exitCode: this.exitCode });
      await this.cleanup();
      this.finished(this.exitCode);
    })();
  }

  private async cleanup(): Promise<void> {
    this.compactor.close();
    await this.healthWatch.close();
    await this.admin?.close().catch(() => undefined);
    await this.metrics?.close().catch(() => undefined);
    for (const l of this.listeners) l.close();
    this.listeners = [];
    await this.jobs?.persist();
    await this.notifier?.close();
    // The incumbent's control socket outlives the app (it does not unlink it on exit). Once
    // no app of ours runs, nobody will connect to it again: remove it.
    if (this.sup && !this.sup.incumbent?.alive) await rm(this.sup.controlPath, { force: true }).catch(() => undefined);
    this.removeFaultPolicy?.();
    this.removeFaultPolicy = undefined;
  }
}
