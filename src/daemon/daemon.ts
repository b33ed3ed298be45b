import { rm } from 'node:fs/promises';
import path from 'node:path';
import { AdminServer } from './admin.js';
import { AdminRoutes } from './admin-routes.js';
import { AdminTokens } from './admin-auth.js';
import { adminSocketLive } from './admin-client.js';
import { activationOptions, type RunConfig } from './config.js';
import { BatonError, ConfigError, errorMessage } from '../os/errors.js';
import { JobStore } from './jobs.js';
import { adoptSystemdListeners, type HeldListener } from '../os/listeners.js';
import { LifecycleLog } from './lifecycle.js';
import { HeapCompactor } from '../supervisor/memory.js';
import { createLogger, type Logger } from '../os/log.js';
import { Supervisor } from '../supervisor/supervisor.js';
import type { ShutdownReason } from '../supervisor/options.js';
import type { HandoffResult } from '../supervisor/results.js';
import { type SupervisorPhase } from '../supervisor/phases.js';
import type { SupervisorMetrics } from './metrics.js';
import { SystemdNotifier } from './systemd.js';
import { ScheduleRunLog } from './schedule-runs.js';
import { ScheduleStore } from './schedules.js';
import { Scheduler } from './scheduler.js';
import { adminSocketPath, adminTokensDir, prepareStateDir } from './state-dir.js';
import { installFaultPolicy } from './fault-policy.js';
import { bindOrTakeOver } from './takeover.js';
import { aggregateHealth, type HealthReport } from './health.js';
import { HealthWatch } from './health-watch.js';
import { handoffSpec, HandoffJobs, servingStatus } from './handoff-jobs.js';
import { adoptHandedListeners, checkFixedConfig, HANDOVER_ENV, HANDOVER_FIRST_FD, isHandoverMessage, parseHandoverEnv, reconcileListeners, type HandoverEnv, type HandoverMessage } from './handover.js';
import { SelfUpgrade } from './self-upgrade.js';
import { crashConfigFromEnv, crashPoint } from '../os/crashpoints.js';
import { bindListeners } from '../os/listeners.js';
import { VERSION } from './cli-help.js';
import * as net from 'node:net';
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
  /** `baton upgrade --self` / SIGUSR2: this supervisor replaced by the `baton` now on disk (self-upgrade.ts). */
  readonly selfUpgrade: SelfUpgrade;
  /** Started by a supervisor handing over to us (handover.ts); cleared once we serve. */
  private handover: HandoverEnv | undefined;
  /** Makes the handed-over unix socket files ours (to unlink at our stop); called once we serve. */
  private ownHandedListeners: (() => HeldListener[]) | undefined;
  /** The listeners came from systemd (LISTEN_FDS), directly or through the supervisor before us. */
  private listenersFromSystemd = false;
  /** This supervisor handed over to a new one and exits, leaving the app, listeners and state to it. */
  handedOver = false;
  /** Signal handlers we installed, removed at clean-up. */
  private readonly signalHandlers: [NodeJS.Signals, () => void][] = [];

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
    this.selfUpgrade = new SelfUpgrade({
      log: this.log,
      sup: () => this.sup,
      jobs: () => this.jobs,
      listeners: () => this.listeners,
      fixedConfig: cfg,
      listenersFromSystemd: () => this.listenersFromSystemd,
      busy: () => this.selfUpgradeRefusal(),
      quiesce: () => this.quiesce(),
      reopen: () => this.reopen(),
      handedOver: () => void this.exitHandedOver(),
    });
    this.handover = parseHandoverEnv(env[HANDOVER_ENV]);
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
    if (this.handover) checkFixedConfig(this.handover, cfg); // before anything is made in a new state dir
    await prepareStateDir(cfg.stateDir, this.log);
    const sockPath = adminSocketPath(cfg.stateDir);
    // A supervisor handing over to us still answers there until it says go.
    if (!this.handover && (await adminSocketLive(sockPath))) {
      throw new BatonError('E_ALREADY_RUNNING', `another baton supervisor is running on state dir ${cfg.stateDir} (${sockPath} answers); use another --state-dir or --name`);
    }
    // From here on the state dir is ours: whatever fails the start, the app is stopped (a
    // failed start never leaves it running unsupervised) and what we bound is closed.
    try {
      await this.startUp(t0, sockPath);
    } catch (err) {
      if (this.handover) {
        // A new supervisor that fails leaves everything to the old one, which serves on:
        // the app is not stopped, the handed-over socket files are not unlinked. (runCli
        // tells the old one why.)
        this.scheduler?.stop();
        await this.cleanup({ keepApp: true });
        throw err;
      }
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
    if (this.handover) await this.takeHandover(this.handover);
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

    const adopted = this.handover ? undefined : adoptSystemdListeners(this.env);
    if (this.handover) {
      // Held since takeHandover.
    } else if (adopted) {
      if (cfg.listen.length) this.log.warn({ event: 'daemon.listen_ignored', listen: cfg.listenText }, 'systemd passed listening sockets (LISTEN_FDS); ignoring --listen/"listen"');
      this.listeners = adopted;
      this.listenersFromSystemd = true;
    } else if (cfg.listen.length) {
      this.listeners = await bindOrTakeOver(cfg, this.log);
    }
    this.log.info({ event: 'daemon.listeners', listeners: this.listeners.map((l) => `${l.name}=${l.address}`), systemd: Boolean(adopted), handedOver: Boolean(this.handover) }, 'listeners held');

    this.jobs = new JobStore(path.join(cfg.stateDir, 'jobs.json'), cfg.history, this.log);
    await this.jobs.load(this.handover ? { continuing: this.handover.jobId } : {});

    const appEnv = { ...this.env };
    for (const k of ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID', HANDOVER_ENV]) delete appEnv[k];
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
      // Socket activation (docs/socket-activation.md): an unmodified server, no control protocol.
      ...(cfg.activation && { activation: activationOptions(cfg.activation) }),
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
      routes: new AdminRoutes({
        cfg,
        log: this.log,
        startedAt: this.startedAt,
        sup: this.sup,
        jobs: this.jobs,
        lifecycle: this.lifecycle,
        schedules: this.schedules,
        scheduleRuns: this.scheduleRuns,
        handoffs: this.handoffs,
        selfUpgrade: this.selfUpgrade,
        maintenance: this.maintenance,
        listeners: () => this.listeners,
        scheduler: () => this.scheduler,
        adminTcpAddress: () => this.admin?.tcpAddress,
        phaseStartedAt: () => this.phaseStartedAt,
        stopping: () => Boolean(this.stopPromise),
        health: () => this.health(),
        stop: (timeoutMs, reason) => this.stop(timeoutMs, reason),
      }).table(),
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
    const appStderr = this.handover?.appStderr ? HANDOVER_FIRST_FD + this.handover.listeners.length : undefined;
    if (recovered?.survivor) {
      if (this.handover) {
        this.log.info({ event: 'daemon.adopted', ...recovered, handover: true }, `took over generation ${recovered.survivor.generation} (pid ${recovered.survivor.pid}) from the supervisor before us (pid ${this.handover.fromPid})`);
        if (appStderr !== undefined) this.sup.adoptIncumbentStderr(new net.Socket({ fd: appStderr, readable: true, writable: false }));
      } else {
        this.log.warn({ event: 'daemon.adopted', ...recovered }, `adopted generation ${recovered.survivor.generation} (pid ${recovered.survivor.pid}) after a supervisor restart`);
      }
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

    this.onSignal('SIGHUP', () => {
      this.log.info({ event: 'daemon.signal', signal: 'SIGHUP' }, 'SIGHUP: upgrading');
      void this.handoffs.upgrade('signal', undefined, {});
    });
    this.onSignal('SIGUSR2', () => {
      this.log.info({ event: 'daemon.signal', signal: 'SIGUSR2' }, 'SIGUSR2: replacing this supervisor with the baton now on disk');
      void this.selfUpgrade.run('signal', undefined);
    });
    for (const sig of ['SIGTERM', 'SIGINT'] as const) {
      this.onSignal(sig, () => {
        this.log.info({ event: 'shutdown.requested', reason: 'signal', signal: sig, timeoutS: this.cfg.stopTimeoutS }, `${sig}: stopping`);
        if (!this.stopPromise) void this.lifecycle.record('shutdown.requested', { reason: 'signal', signal: sig, timeoutS: this.cfg.stopTimeoutS });
        void this.stop(this.cfg.stopTimeoutS * 1000, 'signal');
      });
    }
    const inc = this.sup.incumbent;
    // MAINPID: after a self-upgrade systemd must watch us, not the supervisor that exits.
    await this.notifier?.ready(servingStatus(this.sup), process.pid);
    this.notifier?.startWatchdog();
    const components = ['listeners', 'journal', 'app', 'admin', ...(this.admin.tcpAddress ? ['admin-tcp'] : [])];
    const startupMs = Date.now() - t0;
    await this.lifecycle.record('startup.completed', { durationMs: startupMs, components, ...(this.handover && { handedOverBy: this.handover.fromPid }) });
    if (this.handover) await this.finishHandover(this.handover, recovered?.survivor);
    this.log.info(
      { event: 'startup.completed', durationMs: startupMs, components, appPid: inc?.pid, generation: this.sup.generation, admin: sockPath, adminTcp: this.admin.tcpAddress },
      `serving generation ${this.sup.generation} (pid ${inc?.pid}); admin socket ${sockPath}`,
    );
    // Lifecycle notice to the app (StartupCompleted), off the start-up path.
    void this.sup.notifyStartup(Date.now() - t0, components);
    this.startScheduler();
    this.healthWatch.start();
  }

  private onSignal(sig: NodeJS.Signals, handler: () => void): void {
    process.on(sig, handler);
    this.signalHandlers.push([sig, handler]);
  }

  // ---- supervisor self-upgrade (self-upgrade.ts: the old side; here: the new side) ----

  /**
   * The new side, before anything is loaded: hold the listeners handed to us, check the
   * configuration now on disk against them (a listener that moved or went is refused,
   * naming it; a new one is bound), say `prepared` and wait for `go` (the old supervisor
   * is quiet then). If the old one is gone before that (it died), we carry on: the
   * listeners are ours and the app is re-adopted from the journal.
   */
  private async takeHandover(h: HandoverEnv): Promise<void> {
    const handed = adoptHandedListeners(h);
    this.listeners = handed.listeners;
    this.ownHandedListeners = handed.own;
    this.listenersFromSystemd = h.systemd;
    const { added } = reconcileListeners(h.listeners, this.cfg.listen, h.systemd);
    if (added.length) {
      const fresh = bindListeners(added);
      this.listeners = [...this.listeners, ...fresh];
      const own = handed.own;
      this.ownHandedListeners = () => [...own(), ...fresh];
      this.log.info({ event: 'daemon.listener_added', listeners: fresh.map((l) => `${l.name}=${l.address}`) }, `bound ${fresh.map((l) => l.name).join(', ')}: the app gets ${fresh.length > 1 ? 'them' : 'it'} at its next handoff`);
    }
    const go = new Promise<void>((resolve) => {
      const onMessage = (m: unknown): void => {
        if (isHandoverMessage(m) && m.type === 'go') done();
      };
      const done = (): void => {
        process.off('message', onMessage);
        process.off('disconnect', done);
        resolve();
      };
      process.on('message', onMessage);
      process.once('disconnect', done);
    });
    this.sendHandover({ baton: 'handover', type: 'prepared', pid: process.pid });
    this.log.info({ event: 'self_upgrade.prepared', fromPid: h.fromPid, version: VERSION }, `ready to take over from pid ${h.fromPid}`);
    const crash = crashConfigFromEnv(this.env);
    crashPoint(crash, 'handover.new_after_prepared');
    await go;
    crashPoint(crash, 'handover.new_after_go');
  }

  /** The new side, serving: the job is finished here (jobs.json is ours now), then `serving` lets the old one exit. */
  private async finishHandover(h: HandoverEnv, survivor: { pid: number; generation: number } | undefined): Promise<void> {
    if (this.ownHandedListeners) this.listeners = this.ownHandedListeners();
    this.ownHandedListeners = undefined;
    const job = this.jobs.get(h.jobId);
    const record = job
      ? await this.jobs.finish(job, 'SUCCEEDED', { supervisor: { oldPid: h.fromPid, newPid: process.pid, version: VERSION, ...(survivor && { appPid: survivor.pid, generation: survivor.generation }) } })
      : undefined;
    this.sendHandover({ baton: 'handover', type: 'serving', pid: process.pid, version: VERSION, job: record });
    this.log.info({ event: 'self_upgrade.serving', fromPid: h.fromPid, version: VERSION, appPid: survivor?.pid }, `took over from supervisor pid ${h.fromPid}${survivor ? `; the app (pid ${survivor.pid}) serves on` : ''}`);
    this.handover = undefined;
    if (process.connected) process.disconnect();
  }

  private sendHandover(m: HandoverMessage): void {
    if (process.connected) process.send?.(m);
  }

  /** Why `baton upgrade --self` must wait, or undefined. */
  private selfUpgradeRefusal(): string | undefined {
    if (this.stopPromise) return 'the supervisor is stopping';
    if (this.handoffs.upgrading) return 'a handoff is running';
    if (this.sup.busy) return this.sup.phase !== 'idle' ? `a handoff is running (phase ${this.sup.phase})` : 'a restart of the app is scheduled';
    const running = this.jobs.running();
    if (running) return `${running.kind} job ${running.id} is running${running.maintenance ? ` (${running.maintenance.task})` : ''}`;
    return undefined;
  }

  /** The old side, once the new supervisor is ready: quiet, state flushed, admin and metrics ports free. */
  private async quiesce(): Promise<void> {
    this.scheduler?.stop();
    await this.scheduler?.idle();
    this.scheduler = undefined;
    await this.healthWatch.close();
    await this.scheduleRuns.flushed();
    await this.jobs.persist();
    await this.admin?.stopListening();
    await this.metrics?.close();
  }

  /** The old side after a failed handover: the admin socket, TCP and metrics listeners, schedules and health checks again. */
  private async reopen(): Promise<void> {
    try {
      await this.admin?.listen({ ready: true });
      await this.admin?.listenTcp();
      if (this.cfg.metrics) await this.metrics?.serve(this.cfg.metrics.host, this.cfg.metrics.port, this.log);
    } catch (err) {
      this.log.error({ event: 'self_upgrade.reopen_failed', err: errorMessage(err) }, `after the failed self-upgrade, could not open the admin or metrics listener again: ${errorMessage(err)}`);
    }
    this.startScheduler();
    this.healthWatch.start();
  }

  /** The old side, handed over: exit once the answer to the request is out, leaving the app, listeners and state files to the new supervisor. */
  private async exitHandedOver(): Promise<void> {
    this.handedOver = true;
    const until = Date.now() + 2_000;
    while (Date.now() < until && ((await this.admin?.openConnections()) ?? 0) > 0) await new Promise((r) => setTimeout(r, 20));
    await this.cleanup({ keepApp: true, handedOver: true });
    this.finished(EXIT.ok);
  }

  /** A handoff runs or waits for the lease, a restart is scheduled, or we stop: no health check starts (health-watch.ts). */
  private handoffUnderWay(): boolean {
    return Boolean(this.stopPromise || this.handoffs.upgrading) || this.sup.busy || this.sup.phase !== 'idle';
  }

  /** Aggregated health: the supervisor's own checks, the app's probes, the supervisor's view. */
  private health(): Promise<HealthReport> {
    return aggregateHealth({ sup: this.sup, listeners: this.listeners, jobs: this.jobs, metrics: this.metrics, dataDir: this.cfg.dataDir });
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

  /**
   * `keepApp`: the app is not ours to end (a supervisor before or after us serves it), so
   * its control socket stays. `handedOver`: the listeners' socket files and the state files
   * belong to the new supervisor: nothing of them is unlinked or written.
   */
  private async cleanup(opts: { keepApp?: boolean; handedOver?: boolean } = {}): Promise<void> {
    this.compactor.close();
    await this.healthWatch.close();
    await this.admin?.close().catch(() => undefined);
    await this.metrics?.close().catch(() => undefined);
    if (!opts.handedOver) for (const l of this.listeners) l.close();
    this.listeners = [];
    if (!opts.handedOver) await this.jobs?.persist();
    await this.notifier?.close();
    // The incumbent's control socket outlives the app (it does not unlink it on exit). Once
    // no app of ours runs, nobody will connect to it again: remove it.
    if (this.sup && !opts.keepApp && !this.sup.incumbent?.alive) await rm(this.sup.controlPath, { force: true }).catch(() => undefined);
    for (const [sig, handler] of this.signalHandlers.splice(0)) process.off(sig, handler);
    this.removeFaultPolicy?.();
    this.removeFaultPolicy = undefined;
  }
}
