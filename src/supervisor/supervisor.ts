import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { ControlChannel, type ChannelOptions } from '../wire/channel.js';
import { negotiateVersion } from '../wire/codec.js';
import { crashConfigFromEnv, crashPoint, type CrashConfig } from '../os/crashpoints.js';
import { BatonError, HandoffError, ProtocolError, asBatonError, errorMessage } from '../os/errors.js';
import { Lease, type JobResult, type JobSpec } from './lease.js';
import { Restarter } from './restart-policy.js';
import { keyLine, StderrTail } from './stderr-tail.js';
import { BuildLedger, buildIdText, describeBuild, resolveCommand, sameBuild, type BuildInfo, type BuildRecord } from './builds.js';
import { AppProcess, crashEnv, spawnApp, type ExitStatus } from './generation.js';
import { ActivationHandoff, ACTIVATION_NEXT_PHASE } from './activation.js';
import { Journal } from './journal.js';
import { inspectLock, lockHolder } from '../os/lock.js';
import { connectUnix } from '../os/unix-connect.js';
import { NEXT_PHASE, type SupervisorPhase } from './phases.js';
import type { ProbeEntry } from './probes.js';
import { checkReady } from './ready-check.js';
import { SessionErrorCode } from '../wire/messages.js';
import { isAlive } from '../os/proc.js';
import { createLogger, type Logger } from '../os/log.js';
import { PROTO_MAX, PROTO_MIN, type MessageOf, type RevisionMap } from '../wire/schema.js';
import { DEFAULT_ACTIVATION, DEFAULT_TIMEOUTS, type BuildRef, type HandoffSpec, type RollbackInfo, type ShutdownReason, type SupervisorOptions, type Timeouts } from './options.js';
import type { HandoffOutcome, HandoffResult, JournalRecord, RecoveryReport } from './results.js';

/** How long an aborted successor that was told (Abort) before Begin gets to exit by itself before SIGTERM. */
const ABORT_EXIT_WAIT_MS = 500;
/**
 * An aborted successor that was sent Begin may already serve: it stops accepting, lets
 * its requests finish and closes its connections cleanly (SUCCESSOR_ABORT_DRAIN_MS,
 * successor.ts) before it exits, so this is how long S waits before SIGTERM (PROTOCOL.md 7.4).
 */
const SERVING_ABORT_EXIT_WAIT_MS = 3_000;
/** The old incumbent exits within this after Committed (PROTOCOL.md 9); past it S SIGKILLs it. */
export const INCUMBENT_EXIT_AFTER_COMMIT_MS = 1_000;
/** An incumbent that cannot resume exits by itself (its agent SIGKILLs itself after 3 s if the app hangs). */
const CANNOT_RESUME_EXIT_WAIT_MS = 5_000;

/** One handoff in flight: both peers, their channels, what the incumbent sealed. */
interface Flight {
  id: string;
  /** Why the incumbent cannot serve again after an abort, in its own words (E_RESUME_FAILED). */
  resumeFailure?: string;
  /** The failed successor's last stderr lines. */
  successorStderr?: string;
  spec: HandoffSpec;
  startedAt: number;
  deadline: number;
  phase: SupervisorPhase;
  phaseStartedAt: number;
  phases: { phase: SupervisorPhase; ms: number }[];
  incumbent: AppProcess | undefined;
  successor: AppProcess | undefined;
  incCh: ControlChannel | undefined;
  sucCh: ControlChannel | undefined;
  sealed: { revisions: RevisionMap; fingerprint: Uint8Array } | undefined;
  /** Set once the incumbent said Committed (or died after sealing): from here on it cannot serve again. */
  pointOfNoReturn: boolean;
  /** Begin was sent: the successor may be serving (an abort gives it time to drain). */
  beginSent?: boolean;
  /** Drained.openConnsRemaining, when not 0. */
  openConnsAtDrain?: number;
  promoted: boolean;
  /** The successor completed its handshake (it can be sent Begin). */
  successorHello: boolean;
  /** Which processes the journal names now ("incumbentPid/successorPid"). */
  journaled?: string;
  /** The successor's Ready arrived (it sends only one: a promotion cannot wait for another). */
  readyReceived?: boolean;
  /** We answered the incumbent's Hello (it is in a handoff session with us). */
  incumbentAttached: boolean;
  /** The incumbent handshake in flight (abort waits for it, so no session outlives the handoff). */
  attaching?: Promise<void>;
}

/**
 * Runs handoffs (and maintenance jobs) for one service. Events, in the order a handoff
 * produces them: `handoff-start` (id, spec) · `phase` (phase, id) · `spawned` (pid,
 * generation, id) · `heartbeat` (peer, gapMs) · `drained` (msg) · `sealProgress` (done,
 * total) · `sealed` (revisions, fingerprint, id) · `ready` (Ready msg, id; before it is
 * checked) · `handoff` (HandoffResult) · `retired` (old incumbent's pid, killed: it
 * outstayed its exit grace). Outside handoffs: `incumbent-exit`,
 * `restart-scheduled`, `restarted`, `crash-loop`, `recovered`, and the job events.
 */
export class Supervisor extends EventEmitter {
  readonly controlPath: string;
  private readonly timeouts: Timeouts;
  private readonly log: Logger;
  private readonly journal: Journal<JournalRecord>;
  private readonly crash: CrashConfig;
  private current: AppProcess | undefined;
  private flight: Flight | undefined;
  private stopping = false;
  /** The restart policy: restarts an incumbent that exits outside a handoff. */
  private readonly restarter: Restarter;
  generation = 0;
  lastHandoff: HandoffResult | undefined;
  /** Jobs, probes and notices: the one lease on the incumbent's connection. */
  private readonly lease: Lease;
  /** Old incumbents being made to exit after their Committed (see retire()). */
  private readonly retiring = new Set<Promise<void>>();
  /** Which build each committed generation ran, and which have proven themselves (builds.ts). */
  readonly builds: BuildLedger;
  private buildsLoaded: Promise<void> | undefined;
  /** The newest process that served (committed), alive or not: what a restart restarts. */
  private lastServed: AppProcess | undefined;
  private bakeTimer: NodeJS.Timeout | undefined;
  /** Socket-activation mode (activation.ts): its handoff table and stop in place of the protocol's; undefined in protocol mode. */
  private readonly activation: ActivationHandoff | undefined;

  constructor(private readonly opts: SupervisorOptions) {
    super();
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...opts.timeouts };
    this.log = opts.log ?? createLogger('baton-supervisor');
    this.controlPath = path.join(opts.stateDir, 'control', 'incumbent.sock');
    // Not fsynced: it names live processes (pid + start time) for a restarted supervisor;
    // a power cut ends them all, and their start times rule out pid reuse after a reboot.
    // Two fsyncs per write cost ≈ 20 ms of every handoff on this machine's disk.
    this.journal = new Journal<JournalRecord>(path.join(opts.stateDir, 'handoff.journal'), false);
    this.crash = opts.crash ?? crashConfigFromEnv();
    this.builds = new BuildLedger(path.join(opts.stateDir, 'builds.json'), this.log);
    this.restarter = new Restarter({
      log: this.log,
      policy: () => this.opts.restart,
      emit: (event, ...args) => this.emit(event, ...args),
      incumbent: () => this.current,
      setIncumbent: (app) => (this.current = app),
      handoffRunning: () => this.flight !== undefined,
      stopping: () => this.stopping,
      performHandoff: () => this.restartHandoff(),
      fallback: () => this.crashLoopFallback(),
    });
    this.lease = new Lease({
      controlPath: this.controlPath,
      timeouts: this.timeouts,
      log: this.log,
      emit: (event, ...args) => this.emit(event, ...args),
      incumbent: () => this.current,
      generation: () => this.generation,
      handoff: () => this.flight && { id: this.flight.id, phase: this.flight.phase },
      restartScheduled: () => this.restarter.scheduled,
      stopping: () => this.stopping,
      channelOptions: (peer) => this.channelOptions(peer),
    });
    // ---- socket activation (activation.ts) ----
    const activation = opts.activation && { ...DEFAULT_ACTIVATION, ...opts.activation };
    this.activation = activation && new ActivationHandoff({
      log: this.log,
      options: activation,
      timeouts: this.timeouts,
      listeners: opts.listeners,
      stdout: opts.appStdout ?? 'inherit',
      generation: () => this.generation,
      baseEnv: () => this.opts.env ?? process.env,
      commandOf: (spec) => (spec.build ? { command: this.commandFor(spec.build), resolved: spec.build.resolved } : { command: spec.command ?? this.command() }),
      emit: (event, ...args) => this.emit(event, ...args),
    });
    // ---- end socket activation ----
  }

  /** The app is an unmodified server run in socket-activation mode (activation.ts). */
  get socketActivation(): boolean {
    return this.activation !== undefined;
  }

  /** The serving generation, if any. */
  get incumbent(): AppProcess | undefined {
    return this.current;
  }

  get phase(): SupervisorPhase {
    return this.flight?.phase ?? 'idle';
  }

  /** The restart policy will start the app again (nothing serves meanwhile). */
  get restartScheduled(): boolean {
    return this.restarter.scheduled;
  }

  /**
   * Another supervisor takes over (self-upgrade, daemon/self-upgrade.ts): until the
   * returned resume function is called, nothing here acts on the app: no restart (the
   * new supervisor restarts it if it dies meanwhile), no handoff, no bake verdict, and
   * the app's stderr is left unread for the new supervisor (its fd is returned).
   * Refused (throws) while a handoff runs or a restart is scheduled.
   */
  handOver(): { stderrFd: number | undefined; resume: () => void } {
    if (this.busy) throw new HandoffError('E_HANDOFF_IN_PROGRESS', this.flight ? `a handoff is running (phase ${this.flight.phase})` : 'a restart of the app is scheduled');
    if (this.stopping) throw new HandoffError('E_STOPPING', 'supervisor is stopping');
    this.stopping = true;
    clearTimeout(this.bakeTimer);
    const app = this.current;
    const stderrFd = app?.stderr?.stopReading();
    return {
      stderrFd,
      resume: () => {
        this.stopping = false;
        if (stderrFd !== undefined) app?.stderr?.resumeReading();
        if (app && this.current === app) this.rearmBake(app);
        this.restarter.checkIncumbent();
      },
    };
  }

  /**
   * The adopted incumbent's stderr, handed over by the supervisor before us: passed on
   * to ours and its tail kept, as for a process we spawned.
   */
  adoptIncumbentStderr(stream: Readable): void {
    if (this.current && !this.current.stderr) this.current.stderr = new StderrTail(stream);
    else stream.destroy();
  }

  /** Its bake window goes on where it was left (a restarted or taken-over supervisor). */
  private rearmBake(app: AppProcess): void {
    const rec = this.buildRecord(app.generation);
    if (rec?.state === 'baking') this.bakeTimerFor(app, rec, Math.max(0, Date.parse(rec.bakeEndsAt ?? '') - Date.now() || 0));
  }

  /** A handoff runs, or a restart of a crashed incumbent is scheduled. */
  get busy(): boolean {
    return this.flight !== undefined || this.restarter.scheduled;
  }

  /**
   * After a supervisor crash: reads the journal and brings the world back to one
   * serving generation. The peers of the interrupted handoff resolve on their own
   * once they lose us (PROTOCOL.md "Peer self-protection"); we wait for exactly one
   * live lock holder among them, kill a proven-own orphan that is not it (pid + start
   * time), adopt the survivor as the incumbent and clear the journal. Returns
   * undefined when there was nothing to recover; `survivor` is undefined when nobody
   * is left (the caller cold-starts).
   */
  async recover(settleMs = 20_000): Promise<RecoveryReport | undefined> {
    await this.prepareDirs();
    await this.loadBuilds();
    let record: JournalRecord | undefined;
    try {
      record = await this.journal.read();
    } catch (err) {
      this.log.error({ event: 'recovery.journal_unreadable', err: errorMessage(err) }, 'journal unreadable; starting fresh');
    }
    if (!record) return undefined;
    // Socket activation: no lock to settle on. The journaled old process is kept while it
    // lives (it served; the new one was never confirmed), else the new one.
    if (this.activation) settleMs = 0;
    this.log.warn(
      { event: 'recovery.start', handoffId: record.handoffId, phase: record.phase },
      record.phase === 'idle' ? 'previous supervisor died while idle: re-adopting its incumbent' : 'recovering an interrupted handoff',
    );
    const peers = [
      record.incumbent && { role: 'incumbent' as const, ...record.incumbent, generation: record.generation },
      record.successor && { role: 'successor' as const, ...record.successor, generation: record.generation + 1 },
    ].filter((p): p is NonNullable<typeof p> => Boolean(p));
    const alive = () => peers.filter((p) => isAlive(p.pid, p.startTime));
    const deadline = Date.now() + settleMs;
    let holderPid: number | undefined;
    for (;;) {
      const holder = await lockHolder(this.opts.dataDir).catch(() => undefined);
      holderPid = holder?.alive ? holder.owner.pid : undefined;
      const live = alive();
      if (live.length <= 1 && (live.length === 0 || live[0]!.pid === holderPid)) break;
      if (Date.now() > deadline) break;
      await sleep(50);
    }
    // Still two alive after the settle time: keep the lock holder (else the incumbent), end the other.
    const live = alive();
    const keep = live.find((p) => p.pid === holderPid) ?? live.find((p) => p.role === 'incumbent') ?? live[0];
    const killed: number[] = [];
    for (const p of live.filter((q) => q !== keep)) {
      // Ours: pid + start time match the journal.
      this.log.warn({ event: 'recovery.kill_orphan', pid: p.pid, role: p.role }, `killing orphaned ${p.role}`);
      await new AppProcess(p.pid, p.startTime, p.generation, undefined, undefined).terminate(this.timeouts.killGraceMs);
      killed.push(p.pid);
    }
    const survivor = alive()[0];
    if (survivor) {
      this.current = new AppProcess(survivor.pid, survivor.startTime, survivor.generation, undefined, undefined);
      if (this.activation) this.current.features = []; // speaks no protocol: never asked for probes or jobs
      this.current.build = this.buildRecord(survivor.generation);
      this.lastServed = this.current;
      this.rearmBake(this.current);
      this.generation = survivor.generation;
      this.restarter.watch(this.current);
    }
    await this.journalSteady();
    const report: RecoveryReport = {
      handoffId: record.handoffId,
      phase: record.phase,
      survivor: survivor && { pid: survivor.pid, role: survivor.role, generation: survivor.generation },
      killed,
    };
    this.log.warn({ event: 'recovery.done', ...report }, 'recovery finished');
    this.emit('recovered', report);
    return report;
  }

  /** Cold start of generation 1: a handoff from nobody. */
  async start(spec: HandoffSpec = {}): Promise<HandoffResult> {
    await this.prepareDirs();
    await this.loadBuilds();
    if (spec.build || spec.command) return this.performHandoff(spec);
    // The newest build (the command as it resolves now), unless it was judged bad and a
    // known-good build exists; and if the newest fails to start, the known-good one.
    const newest = { resolved: resolveCommand(this.command(), this.opts.env ?? process.env) };
    const known = [...this.builds.list()].reverse().find((r) => sameBuild(r, newest));
    const good = this.builds.lastGood(newest);
    if (known?.state === 'bad' && good) {
      const why = `the newest build is bad (${known.reason ?? 'no reason recorded'})`;
      this.log.warn({ event: 'build.skipped', build: describeBuild(known), lastGood: describeBuild(good) }, `${why}: starting ${describeBuild(good)} instead`);
      return this.performHandoff({ ...spec, build: good, rollback: rollbackInfo(why, true, known, good) });
    }
    const first = await this.performHandoff(spec);
    if (first.outcome === 'committed' || !good || this.stopping) return first;
    const why = `the newest build did not start: ${first.reason ?? first.code ?? 'unknown reason'}`;
    this.log.error({ event: 'build.start_fallback', lastGood: describeBuild(good), err: first.reason }, `${why}; starting ${describeBuild(good)} instead`);
    return this.performHandoff({ ...spec, build: good, rollback: rollbackInfo(why, true, undefined, good) });
  }

  private loadBuilds(): Promise<void> {
    this.buildsLoaded ??= this.builds.load();
    return this.buildsLoaded;
  }

  /** The build record of a committed generation, if it is still in the records. */
  private buildRecord(generation: number): BuildRecord | undefined {
    return this.builds.list().find((r) => r.generation === generation);
  }

  /** The build record of the newest process that served. */
  private servedRecord(): BuildRecord | undefined {
    return this.lastServed && this.buildRecord(this.lastServed.generation);
  }

  private async prepareDirs(): Promise<void> {
    await mkdir(path.join(this.opts.stateDir, 'control'), { recursive: true, mode: 0o700 });
    await mkdir(this.opts.dataDir, { recursive: true });
  }

  /**
   * Replaces the incumbent with a freshly started successor (or, with no incumbent,
   * starts one). Resolves with the outcome; a second call while one runs is refused
   * at once with HandoffError E_HANDOFF_IN_PROGRESS.
   */
  async performHandoff(spec: HandoffSpec = {}): Promise<HandoffResult> {
    if (this.flight) {
      throw new HandoffError('E_HANDOFF_IN_PROGRESS', `handoff ${this.flight.id} is already running (phase ${this.flight.phase})`);
    }
    if (this.lease.handoffPending) throw new HandoffError('E_HANDOFF_IN_PROGRESS', `a handoff is already waiting for the lease (${this.lease.handoffPending})`);
    if (this.stopping) throw new HandoffError('E_STOPPING', 'supervisor is stopping');
    if (this.lease.held) {
      await this.lease.take(spec);
      const other = this.flight as Flight | undefined; // set by another call while we waited
      if (other) throw new HandoffError('E_HANDOFF_IN_PROGRESS', `handoff ${other.id} is already running (phase ${other.phase})`);
      if (this.stopping) throw new HandoffError('E_STOPPING', 'supervisor is stopping');
    }
    const now = Date.now();
    const f: Flight = {
      id: randomUUID(),
      spec,
      startedAt: now,
      deadline: now + (spec.deadlineMs ?? this.timeouts.deadlineMs),
      phase: 'idle',
      phaseStartedAt: now,
      phases: [],
      incumbent: this.current?.alive ? this.current : undefined,
      successor: undefined,
      incCh: undefined,
      sucCh: undefined,
      sealed: undefined,
      pointOfNoReturn: false,
      promoted: false,
      successorHello: false,
      incumbentAttached: false,
    };
    this.flight = f;
    this.log.info({ event: 'handoff.start', handoffId: f.id, incumbentPid: f.incumbent?.pid }, 'handoff started');
    this.emit('handoff-start', f.id, spec);
    let result: HandoffResult;
    try {
      result = await this.run(f);
    } finally {
      f.incCh?.close('handoff over');
      f.sucCh?.close('handoff over');
      await this.journalSteady().catch(() => undefined);
      this.flight = undefined; // only now: no window in which we look idle mid-handoff
    }
    if (result.outcome === 'aborted' && !f.incumbent) this.restarter.lastFailed = f.successor;
    if (result.outcome === 'committed') this.restarter.checkIncumbent();
    if (result.outcome === 'aborted' && !this.current?.alive && !this.stopping && f.incumbent) {
      // The incumbent died and could not be replaced: nobody serves. Start fresh.
      this.log.error({ event: 'handoff.cold_restart', handoffId: f.id }, 'incumbent gone after abort; cold-starting a new generation');
      this.current = undefined;
      const exit = f.incumbent.exit;
      const lostIncumbent = f.resumeFailure ?? `it exited (code ${exit?.code ?? '-'}, signal ${exit?.signal ?? '-'})`;
      // The build that was serving, not the one this handoff failed to start.
      const served = f.incumbent.build ?? this.buildRecord(f.incumbent.generation);
      const restart = await this.performHandoff(served ? { build: served } : {});
      result.restoredBy = { handoffId: restart.id, outcome: restart.outcome, pid: restart.newPid, lostIncumbent };
      // Nothing serves: the restart policy keeps trying (with backoff, and the last known-good build).
      if (restart.outcome !== 'committed') this.restarter.retryLater();
    }
    return result;
  }

  private async run(f: Flight): Promise<HandoffResult> {
    // Socket activation runs its own table (activation.ts); everything around it is shared.
    const [next, steps] = this.activation ? [ACTIVATION_NEXT_PHASE, this.activation.steps] : [NEXT_PHASE, this.steps];
    try {
      for (let phase = next.idle; phase; phase = next[phase]) {
        await this.enter(f, phase);
        await steps[phase](f);
      }
    } catch (err) {
      if (!f.pointOfNoReturn) return this.abort(f, asBatonError(err));
      const tail = await this.afterIncumbentCommitted(f, asBatonError(err));
      if (tail) return tail;
    }
    return this.commit(f, f.promoted ? 'incumbent died mid-handoff; successor promoted' : undefined);
  }

  /** The successor is the incumbent now: watch it; the old one is made to exit (retire). */
  private commit(f: Flight, note: string | undefined): HandoffResult {
    this.endPhase(f);
    this.current = f.successor;
    this.lastServed = f.successor;
    this.generation = f.successor!.generation;
    // A rollback goes to a build that has proven itself: no bake window for it.
    this.bake(f.successor!, f.spec.rollback ? 0 : this.timeouts.bakeMs);
    this.restarter.watch(f.successor!);
    if (f.incumbent) this.retire(f.incumbent);
    const rb = f.spec.rollback;
    return this.finish(f, 'committed', note ?? (rb && `rolled back to ${describeBuild(rb.to)} (generation ${rb.to.generation}): ${rb.reason}`));
  }

  /**
   * Something failed after the incumbent's Committed: it exits and cannot serve again.
   * A successor that is alive holds the lock and commits on its own once it loses us
   * (PROTOCOL.md 7.5), so that is a commit. A dead one is never reported committed
   * (PROTOCOL.md 7.3): the handoff ended with nothing serving, and the caller cold-starts.
   * Returns undefined for the first case.
   */
  private async afterIncumbentCommitted(f: Flight, err: BatonError): Promise<HandoffResult | undefined> {
    const successor = f.successor!;
    if (successor.alive) {
      this.log.error({ event: 'handoff.commit_tail_error', handoffId: f.id, err: err.message }, 'error after the point of no return; the live successor commits on its own');
      f.sucCh?.close('error after the point of no return');
      return undefined;
    }
    await this.enter(f, 'aborting');
    const reason = `successor (pid ${successor.pid}) died after the incumbent (pid ${f.incumbent?.pid ?? '-'}) had committed: ${err.message}`;
    this.log.error({ event: 'handoff.successor_lost_after_commit', handoffId: f.id, successorPid: successor.pid, incumbentPid: f.incumbent?.pid, err: err.message }, `${reason}; nothing serves until a cold start`);
    f.resumeFailure = 'it had answered Commit with Committed before the successor died, so it exits';
    await successor.terminate(0);
    if (f.incumbent) await this.retire(f.incumbent);
    const withStderr = await this.withSuccessorStderr(f, reason);
    this.endPhase(f);
    return this.finish(f, 'aborted', withStderr, 'E_SUCCESSOR_LOST');
  }

  /**
   * The old incumbent exits within INCUMBENT_EXIT_AFTER_COMMIT_MS of its Committed
   * (PROTOCOL.md 9); one that lingers is killed, and its process group swept: it no
   * longer holds the lock and must not outlive its generation. stop() waits for these.
   */
  private retire(app: AppProcess): Promise<void> {
    const retiring = (async () => {
      const status = await Promise.race([app.exited, sleep(INCUMBENT_EXIT_AFTER_COMMIT_MS).then(() => undefined)]);
      if (!status) {
        this.log.warn(
          { event: 'handoff.old_incumbent_killed', pid: app.pid, generation: app.generation, waitedMs: INCUMBENT_EXIT_AFTER_COMMIT_MS },
          `old incumbent (pid ${app.pid}) did not exit within ${INCUMBENT_EXIT_AFTER_COMMIT_MS} ms of its Committed; killing it`,
        );
      }
      await app.terminate(0);
      this.emit('retired', app.pid, !status);
    })().catch((err: unknown) => this.log.error({ event: 'handoff.retire_failed', pid: app.pid, err: errorMessage(err) }, 'could not end the old incumbent'));
    this.retiring.add(retiring);
    void retiring.finally(() => this.retiring.delete(retiring));
    return retiring;
  }

  private async enter(f: Flight, phase: SupervisorPhase): Promise<void> {
    this.endPhase(f);
    f.phase = phase;
    f.phaseStartedAt = Date.now();
    this.emit('phase', phase, f.id);
    await this.opts.phaseGate?.(phase, f.id);
    this.log.info({ event: 'handoff.phase', handoffId: f.id, phase }, `phase ${phase}`);
    await this.journalProcesses(f, phase);
  }

  /**
   * Between handoffs the journal names the serving incumbent (phase "idle"), so a
   * supervisor that dies while idle is replaced by one that re-adopts it instead of
   * cold-starting next to it (RELIABILITY.md B1). Cleared when nothing serves.
   */
  private async journalSteady(): Promise<void> {
    const app = this.current;
    if (!app?.alive) {
      await this.journal.clear();
      return;
    }
    await this.journal.write({
      handoffId: 'idle',
      phase: 'idle',
      generation: this.generation,
      incumbent: { pid: app.pid, startTime: app.startTime },
      at: Date.now(),
    });
  }

  /**
   * Recovery needs to know which processes a handoff involves, not how far it got (the
   * peers resolve that themselves), so the journal is written only when
   * that set changes: at the start and once the successor exists. Keeping it out of
   * the later phases keeps it off the write blackout's critical path.
   */
  private async journalProcesses(f: Flight, phase: SupervisorPhase): Promise<void> {
    const processes = `${f.incumbent?.pid}/${f.successor?.pid}`;
    if (f.journaled === processes) return;
    f.journaled = processes;
    await this.journal.write({
      handoffId: f.id,
      phase,
      generation: this.generation,
      incumbent: f.incumbent && { pid: f.incumbent.pid, startTime: f.incumbent.startTime },
      successor: f.successor && { pid: f.successor.pid, startTime: f.successor.startTime },
      at: Date.now(),
    });
  }

  private endPhase(f: Flight): void {
    if (f.phase === 'idle') return;
    f.phases.push({ phase: f.phase, ms: Date.now() - f.phaseStartedAt });
    f.phaseStartedAt = Date.now();
  }

  // ---- phases --------------------------------------------------------------------

  /** Phase → what the supervisor does in it (the order is NEXT_PHASE). */
  private readonly steps: Record<SupervisorPhase, (f: Flight) => Promise<void>> = {
    idle: async () => undefined,
    spawning: (f) => this.stepSpawn(f),
    hello: (f) => this.stepHello(f),
    draining: (f) => this.stepDrain(f),
    sealing: (f) => this.stepSeal(f),
    begin: (f) => this.stepBegin(f),
    await_ready: (f) => this.stepAwaitReady(f),
    committing: (f) => this.stepCommit(f),
    aborting: async () => undefined,
  };

  private async stepSpawn(f: Flight): Promise<void> {
    const build = f.spec.build;
    const command = build ? this.commandFor(build) : (f.spec.command ?? this.command());
    f.successor = spawnApp({
      command,
      ...(build && { resolved: build.resolved }),
      role: f.incumbent ? 'successor' : 'cold',
      generation: this.generation + 1,
      listeners: this.opts.listeners,
      spares: this.opts.listenerSpares ?? 4,
      listenerCopies: this.opts.listenerCopies ?? true,
      controlPath: this.controlPath,
      dataDir: this.opts.dataDir,
      baseEnv: this.opts.env ?? process.env,
      extraEnv: { ...f.spec.successorEnv, ...crashEnv(f.spec.successorCrashPoint, f.spec.crashMarkerDir) },
      stdout: this.opts.appStdout ?? 'inherit',
      log: this.log,
    });
    this.emit('spawned', f.successor.pid, f.successor.generation, f.id);
    crashPoint(this.crash, 'supervisor.after_spawn');
  }

  private async stepHello(f: Flight): Promise<void> {
    const successor = f.successor!;
    const sucCh = new ControlChannel(successor.control!, this.channelOptions('successor'));
    f.sucCh = sucCh;
    // Connect to the incumbent while the successor boots: the two overlap.
    const incumbentHello = f.incumbent ? this.attachIncumbent(f) : Promise.resolve();
    f.attaching = incumbentHello.catch(() => undefined); // awaited below or by abort(); never unhandled
    await this.helloFrom(f, sucCh, 'successor', successor);
    f.successorHello = true;
    crashPoint(this.crash, 'supervisor.after_successor_hello');
    await incumbentHello;
  }

  private async stepDrain(f: Flight): Promise<void> {
    if (!f.incCh) return; // cold start or promotion: nothing to drain
    const drainGraceMs = f.spec.drainGraceMs ?? this.timeouts.drainGraceMs;
    f.incCh.send({
      type: 'PrepareHandoff',
      handoffId: f.id,
      successorPid: f.successor!.pid,
      deadlineMs: BigInt(f.deadline),
      drainGraceMs,
    });
    crashPoint(this.crash, 'supervisor.after_prepare');
    // The incumbent enforces the grace itself; we allow a little more before calling it a timeout.
    const msg = await this.fromIncumbent(f, ['Drained', 'DrainFailed'], Math.min(drainGraceMs + 5_000, this.remaining(f)));
    if (msg.type === 'DrainFailed') throw new HandoffError('E_DRAIN_FAILED', `incumbent drain failed: ${msg.error}`);
    // A sealed process must take no request (PROTOCOL.md 7.3): one that still accepts cannot be sealed.
    if (!msg.acceptClosed) throw new HandoffError('E_DRAIN_INCOMPLETE', `incumbent (pid ${f.incumbent!.pid}) reported Drained with acceptClosed=false: it still accepts connections`);
    if (msg.openConnsRemaining > 0) {
      f.openConnsAtDrain = msg.openConnsRemaining;
      this.log.warn(
        { event: 'handoff.drain_left_connections', handoffId: f.id, openConnsRemaining: msg.openConnsRemaining },
        `incumbent drained with ${msg.openConnsRemaining} connection(s) still open; it closes them when it exits`,
      );
    }
    this.emit('drained', msg);
    crashPoint(this.crash, 'supervisor.after_drained');
  }

  private async stepSeal(f: Flight): Promise<void> {
    if (!f.incCh) return;
    f.incCh.send({ type: 'SealRequest', handoffId: f.id });
    crashPoint(this.crash, 'supervisor.after_seal_request');
    for (;;) {
      const msg = await this.fromIncumbent(f, ['SealProgress', 'SealComplete', 'SealFailed'], this.remaining(f));
      if (msg.type === 'SealProgress') {
        this.emit('sealProgress', msg.done, msg.total);
        continue;
      }
      if (msg.type === 'SealFailed') throw new HandoffError('E_SEAL_FAILED', `incumbent seal failed: ${msg.error}`);
      f.sealed = { revisions: msg.lastRevisionPerShard, fingerprint: msg.dataDirFingerprint };
      this.emit('sealed', f.sealed.revisions, f.sealed.fingerprint, f.id);
      break;
    }
    crashPoint(this.crash, 'supervisor.after_seal_complete');
  }

  private async stepBegin(f: Flight): Promise<void> {
    // Anything the successor said before Begin (e.g. a premature Ready) is a violation, not an answer.
    if (f.sucCh!.queued > 0) await this.outOfTurn(f.sucCh!, 'before Begin');
    f.sucCh!.send({
      type: 'Begin',
      handoffId: f.id,
      sealedRevisionPerShard: f.sealed?.revisions ?? {},
      sealedFingerprint: f.sealed?.fingerprint ?? new Uint8Array(),
      incumbentPid: f.incumbent?.pid ?? 0,
    });
    f.beginSent = true;
    crashPoint(this.crash, 'supervisor.after_begin');
  }

  private async stepAwaitReady(f: Flight): Promise<void> {
    const readyMs = f.spec.readyMs ?? this.timeouts.readyMs;
    // Which budget can run out first: the Begin → Ready one has its own code (the overall deadline keeps E_TIMEOUT).
    const readyBudgetFirst = readyMs < this.remaining(f);
    const ready = await this.fromSuccessor(f, ['Ready'], Math.min(readyMs, this.remaining(f))).catch((err: unknown) => {
      if ((err as BatonError).code === 'E_TIMEOUT' && readyBudgetFirst) {
        throw new HandoffError('E_READY_TIMEOUT', `successor (pid ${f.successor!.pid}) did not send Ready within ${readyMs} ms of Begin (handoff.readyTimeoutS)`);
      }
      throw err;
    });
    f.readyReceived = true;
    this.emit('ready', ready, f.id);
    crashPoint(this.crash, 'supervisor.after_ready');
    const problem = checkReady(ready, f.sealed?.revisions ?? {}, inspectLock(this.opts.dataDir), f.successor!);
    if (problem) throw new HandoffError('E_READY_REJECTED', problem);
  }

  private async stepCommit(f: Flight): Promise<void> {
    if (f.incCh && f.incumbent?.alive) {
      // The last moment the handoff can be undone: a successor that died after its Ready
      // is never committed (PROTOCOL.md 7.3); the incumbent resumes instead.
      const successor = f.successor!;
      if (!successor.alive || f.sucCh!.failed) {
        throw new BatonError('E_PEER_DIED', `successor (pid ${successor.pid}) ${successor.alive ? 'lost its channel' : 'exited'} after Ready, before Commit`);
      }
      f.incCh.send({ type: 'Commit', handoffId: f.id });
      try {
        await this.fromIncumbent(f, ['Committed'], this.timeouts.livenessMs);
      } catch (err) {
        // It may have died after sealing: then only the successor can serve, so commit it.
        if (f.incumbent.alive || !f.sealed) throw err;
        f.promoted = true;
      }
    }
    // With an incumbent (alive until its Committed, or dead after sealing) nothing can be
    // undone from here. A cold start has none: until the successor's Committed it aborts.
    if (f.incumbent) f.pointOfNoReturn = true;
    crashPoint(this.crash, 'supervisor.after_commit_incumbent');
    f.sucCh!.send({ type: 'Commit', handoffId: f.id });
    crashPoint(this.crash, 'supervisor.after_commit_successor');
    await this.fromSuccessor(f, ['Committed'], this.timeouts.livenessMs);
  }

  // ---- helpers -------------------------------------------------------------------

  private async attachIncumbent(f: Flight): Promise<void> {
    const socket = await connectUnix(this.controlPath, this.timeouts.helloMs);
    const ch = new ControlChannel(socket, this.channelOptions('incumbent'));
    f.incCh = ch;
    await this.helloFrom(f, ch, 'incumbent', f.incumbent!);
    f.incumbentAttached = true;
  }

  /** Waits for the peer's Hello, answers HelloAck with the handoff id, starts heartbeats. */
  private async helloFrom(f: Flight, ch: ControlChannel, role: 'incumbent' | 'successor', proc: AppProcess): Promise<void> {
    const hello = await this.guarded(f, proc, ch.expect(['Hello'], this.timeouts.helloMs), role);
    let version: number;
    try {
      if (hello.role !== role) throw new ProtocolError('E_WRONG_ROLE', `${role} introduced itself as ${hello.role}`);
      if (hello.pid !== proc.pid) throw new ProtocolError('E_WRONG_PID', `${role} says pid ${hello.pid}, expected ${proc.pid}`);
      version = negotiateVersion(hello.protoMin, hello.protoMax, PROTO_MIN, PROTO_MAX);
    } catch (err) {
      // PROTOCOL.md: answer the Hello with Error{code} and close.
      ch.sendError(err as BatonError);
      ch.close('after a rejected Hello');
      throw err;
    }
    ch.send({ type: 'HelloAck', handoffId: f.id, protoVersion: version });
    ch.setVersion(version);
    ch.startHeartbeats(() => f.phase);
    if (hello.features) proc.features = hello.features;
    if (proc.build && role === 'successor') proc.build.buildId = buildIdText(hello.buildId);
  }

  /**
   * Waits for the incumbent, and meanwhile watches the successor: it must stay silent
   * (it has nothing to say before Begin) and alive; trouble there aborts at once
   * rather than after the incumbent was drained and sealed for nothing.
   */
  private async fromIncumbent<T extends 'Drained' | 'DrainFailed' | 'SealProgress' | 'SealComplete' | 'SealFailed' | 'Committed'>(
    f: Flight,
    types: T[],
    timeoutMs: number,
  ): Promise<MessageOf<T>> {
    const fromIncumbent = this.guarded(f, f.incumbent!, this.expectFor(f, f.incCh!, types, timeoutMs), 'incumbent');
    if (!f.sucCh || f.phase === 'committing') return fromIncumbent;
    const watch = { active: true };
    const successorTrouble = this.guarded(f, f.successor!, this.outOfTurn(f.sucCh, `during ${f.phase}`, watch), 'successor');
    successorTrouble.catch(() => undefined); // loses the race in the normal case
    try {
      return await Promise.race([fromIncumbent, successorTrouble]);
    } finally {
      watch.active = false; // a later, legitimate message (Ready after Begin) is not out of turn
    }
  }

  /**
   * Rejects when the peer sends anything (E_UNEXPECTED_MESSAGE, reported to it) or its
   * channel fails — as long as `watch.active`; after that it never settles.
   */
  private async outOfTurn(ch: ControlChannel, when: string, watch = { active: true }): Promise<never> {
    const msg = await ch.arrival();
    if (!watch.active) return new Promise<never>(() => undefined);
    const err = new ProtocolError('E_UNEXPECTED_MESSAGE', `${ch.peer} sent ${msg.type} ${when}`);
    ch.sendError(err);
    ch.close('after a protocol violation');
    throw err;
  }

  private fromSuccessor<T extends 'Ready' | 'Committed'>(f: Flight, types: T[], timeoutMs: number): Promise<MessageOf<T>> {
    return this.guarded(f, f.successor!, this.expectFor(f, f.sucCh!, types, timeoutMs), 'successor');
  }

  private async expectFor<T extends Parameters<ControlChannel['expect']>[0][number]>(
    f: Flight,
    ch: ControlChannel,
    types: T[],
    timeoutMs: number,
  ): Promise<MessageOf<T>> {
    const msg = await ch.expect(types, Math.max(timeoutMs, 1));
    if ('handoffId' in msg && msg.handoffId !== f.id) {
      const err = new BatonError('E_WRONG_HANDOFF', `${ch.peer} sent ${msg.type} for handoff ${msg.handoffId}, expected ${f.id}`);
      ch.sendError(err);
      throw err;
    }
    return msg;
  }

  /**
   * Races a receive against the peer's death, so a dead peer fails the phase at once
   * and the reason says how it died (its socket usually closes a moment before the exit is seen).
   */
  private async guarded<T>(f: Flight, proc: AppProcess, p: Promise<T>, role: string): Promise<T> {
    const phase = f.phase;
    const died = (s: ExitStatus): BatonError =>
      new BatonError('E_PEER_DIED', `${role} (pid ${proc.pid}) exited (code ${s.code ?? '-'}, signal ${s.signal ?? '-'}) during ${phase}`);
    const death = proc.exited.then((s) => Promise.reject(died(s)));
    death.catch(() => undefined); // the losing side of the race must not become an unhandled rejection
    try {
      return await Promise.race([p, death]);
    } catch (err) {
      // A dying process closes its sockets before it is a zombie: a close, a reset or a
      // frame cut in half may be its death, seen a moment early.
      if (['E_PEER_CLOSED', 'E_SOCKET', 'E_TRUNCATED'].includes((err as BatonError).code)) {
        const status = await Promise.race([proc.exited, sleep(1_000).then(() => undefined)]);
        if (status) throw died(status);
      }
      throw err;
    }
  }

  /** Every frame from a peer reports the gap since the previous one ('heartbeat' event: peer, gapMs). */
  private channelOptions(peer: 'incumbent' | 'successor'): ChannelOptions {
    return {
      peer,
      log: this.log,
      livenessMs: this.timeouts.livenessMs,
      onHeartbeatGap: (gapMs) => this.emit('heartbeat', peer, gapMs),
    };
  }

  private remaining(f: Flight): number {
    return f.deadline - Date.now();
  }

  private command(): readonly string[] {
    const c = this.opts.command;
    return typeof c === 'function' ? c() : c;
  }

  /**
   * How to start `build`: its own command while that still resolves to the same files,
   * else the resolved command (the symlink now names a newer release).
   */
  private commandFor(build: { command: readonly string[]; resolved: readonly string[] }): readonly string[] {
    const now = resolveCommand(build.command, this.opts.env ?? process.env);
    return sameBuild({ resolved: now }, build) ? build.command : build.resolved;
  }

  // ---- builds: bake, restart, rollback (builds.ts) ----------------------------------

  /** A generation committed: its build is recorded and bakes for `bakeMs`, then is good. */
  private bake(app: AppProcess, bakeMs: number): void {
    if (!app.build) return;
    const record = this.builds.committed(app.build, app.generation, app.pid, bakeMs);
    if (bakeMs <= 0) return;
    this.log.info({ event: 'build.baking', generation: app.generation, pid: app.pid, build: describeBuild(record), bakeMs }, `generation ${app.generation} bakes for ${bakeMs} ms`);
    this.bakeTimerFor(app, record, bakeMs);
  }

  /** Judges `app`'s build good once it is still serving `ms` from now. */
  private bakeTimerFor(app: AppProcess, record: BuildRecord, ms: number): void {
    clearTimeout(this.bakeTimer);
    this.bakeTimer = setTimeout(() => {
      this.bakeTimer = undefined;
      if (this.current !== app || !app.alive) return; // a crash is judged by the restart (restartHandoff)
      if (this.builds.proven(app.generation)) {
        this.log.info({ event: 'build.proven', generation: app.generation, build: describeBuild(record) }, `${describeBuild(record)} lasted its bake window: known good`);
        this.emit('build-proven', record);
      }
    }, ms);
    this.bakeTimer.unref();
  }

  /** The serving generation's build record while its bake window runs. */
  get baking(): BuildRecord | undefined {
    const rec = this.current?.alive ? this.buildRecord(this.current.generation) : undefined;
    return rec?.state === 'baking' ? rec : undefined;
  }

  /**
   * The restart policy's start: the build that served last, unless it has not proven
   * itself (it crashed inside its bake window, or was judged bad), in which case the
   * last known-good build: that restart is a rollback (`result.rollback`).
   */
  private restartHandoff(): Promise<HandoffResult> {
    const served = this.lastServed;
    const rec = this.servedRecord();
    if (served && rec?.state === 'baking') {
      const exit = served.exit;
      const ranS = ((Date.now() - Date.parse(rec.committedAt)) / 1000).toFixed(1);
      this.condemn(rec, `it exited (code ${exit?.code ?? '-'}, signal ${exit?.signal ?? '-'}) ${ranS} s after its commit, inside its bake window`);
    }
    if (rec?.state === 'bad') {
      const good = this.builds.lastGood(rec);
      if (good) return this.performHandoff({ build: good, rollback: rollbackInfo(rec.reason ?? 'it was judged bad', true, rec, good) });
    }
    const build = rec ?? served?.build;
    return this.performHandoff(build ? { build } : {});
  }

  /**
   * A crash loop: when the build that keeps crashing is not the last known-good one,
   * it is judged bad and the restarts go on with the good one (true); the restart
   * policy gives up only when that fails too.
   */
  private crashLoopFallback(): boolean {
    const rec = this.servedRecord();
    if (!rec || !this.builds.lastGood(rec)) return false;
    this.condemn(rec, 'it crash-looped');
    return true;
  }

  private condemn(rec: BuildRecord, reason: string): void {
    this.builds.condemn(rec.generation, reason);
    this.log.error({ event: 'build.bad', generation: rec.generation, build: describeBuild(rec), reason }, `${describeBuild(rec)} is bad: ${reason}`);
  }

  /**
   * Goes back to the last known-good build other than the serving one: a handoff if a
   * process serves, else a cold start. The build it leaves is judged bad (no restart
   * returns to it). Refused with E_NO_ROLLBACK_TARGET when there is nothing to go back to.
   */
  async rollback(opts: { reason: string; automatic?: boolean }): Promise<HandoffResult> {
    await this.loadBuilds();
    const serving = this.current?.alive ? this.current : this.lastServed;
    const rec = serving && this.buildRecord(serving.generation);
    const from = rec ?? serving?.build;
    const target = this.builds.lastGood(from);
    if (!target) throw new HandoffError('E_NO_ROLLBACK_TARGET', this.noRollbackTarget(from));
    if (this.flight) throw new HandoffError('E_HANDOFF_IN_PROGRESS', `handoff ${this.flight.id} is already running (phase ${this.flight.phase})`);
    if (rec) this.condemn(rec, `rolled back: ${opts.reason}`);
    return this.performHandoff({ build: target, rollback: rollbackInfo(opts.reason, opts.automatic ?? false, rec, target) });
  }

  private noRollbackTarget(from: BuildInfo | undefined): string {
    const all = this.builds.list();
    const good = all.filter((r) => r.state === 'good');
    if (from && all.length > 1 && all.every((r) => sameBuild(r, from))) {
      return `every known-good build resolves to the same files as the serving one (${from.resolved.join(' ')}): a deploy that replaces files in place cannot be rolled back; deploy each release to its own directory and point a symlink at it`;
    }
    if (good.length === 0) return 'no build has proven itself yet (a build is known good once it lasts its bake window)';
    const bad = all.filter((r) => r.state === 'bad' && !(from && sameBuild(r, from)));
    return `no known-good build other than the serving one${from ? ` (${describeBuild(from)})` : ''}${bad.length ? `; the others are bad: ${[...new Set(bad.map((r) => `${describeBuild(r)}: ${r.reason ?? 'no reason'}`))].slice(-3).join('; ')}` : ''}`;
  }

  /**
   * Every failure before the point of no return ends here (invariant 5): the successor
   * is told, killed and reaped; then the incumbent re-takes the lock and serves. If the
   * incumbent died, the successor is promoted instead when it can be; else a cold start.
   */
  private async abort(f: Flight, err: BatonError): Promise<HandoffResult> {
    const reason = err.message;
    if (!this.activation && f.incumbent && !f.incumbent.alive && f.successor?.alive && !f.promoted && f.phase !== 'committing') {
      const promoted = await this.promote(f, err);
      if (promoted) return promoted;
    }
    await this.enter(f, 'aborting');
    this.log.warn({ event: 'handoff.abort', handoffId: f.id, code: err.code, reason }, `aborting: ${reason}`);
    crashPoint(this.crash, 'supervisor.during_abort');
    if (f.successor && this.activation) {
      await this.activation.stopFailed(f.successor); // its own graceful stop: it may already serve
    } else if (f.successor) {
      // Told first (or, with its channel gone, on its own: 7.5), it stops serving, releases the
      // lock and exits by itself; the signals are for one that does not. One that was sent
      // Begin may be serving: it gets the time to finish its requests (no reset connection).
      const told = f.sucCh?.send({ type: 'Abort', handoffId: f.id, reason }) ?? false;
      const exitWaitMs = f.beginSent ? SERVING_ABORT_EXIT_WAIT_MS : told ? ABORT_EXIT_WAIT_MS : 0;
      await f.successor.terminate(this.timeouts.killGraceMs, exitWaitMs);
    }
    const withStderr = await this.withSuccessorStderr(f, reason);
    await this.resumeIncumbent(f);
    this.endPhase(f);
    return this.finish(f, 'aborted', withStderr, err.code);
  }

  /**
   * The failed successor's last stderr lines go into the result (successorStderr) and
   * its last line into the reason: the exception it died of, not only its exit code.
   */
  private async withSuccessorStderr(f: Flight, reason: string): Promise<string> {
    const tail = await f.successor?.stderrTail();
    if (!tail) return reason;
    f.successorStderr = tail;
    const key = keyLine(tail);
    return `${reason}; its stderr says: ${key.length > 300 ? `${key.slice(0, 300)}…` : key}`;
  }

  private async resumeIncumbent(f: Flight): Promise<void> {
    const inc = f.incumbent;
    await f.attaching; // settles within the hello timeout
    if (!inc?.alive) return;
    if (!f.incumbentAttached) {
      // We never answered its Hello: nothing was started there, so there is nothing to resume.
      // Closing the half-open session (if any) returns it to plain serving.
      f.incCh?.close('handoff aborted before the handshake finished');
      return;
    }
    if (!f.incCh || f.incCh.failed) {
      // It notices the lost connection and resumes on its own (incumbent.ts).
      this.log.warn({ event: 'handoff.incumbent_self_resume', pid: inc.pid }, 'incumbent unreachable; it resumes on its own');
      f.incCh?.close('abort');
      return;
    }
    f.incCh.send({ type: 'ResumeAfterAbort', handoffId: f.id });
    try {
      // A late answer to the phase we gave up on (e.g. Drained after a drain timeout) may come first.
      const stale = ['Drained', 'DrainFailed', 'SealProgress', 'SealComplete', 'SealFailed'] as const;
      while ((await this.guarded(f, inc, f.incCh.expect(['Resumed', ...stale], this.timeouts.resumeMs), 'incumbent')).type !== 'Resumed');
      this.log.info({ event: 'handoff.incumbent_resumed', pid: inc.pid }, 'incumbent serves again');
    } catch (err) {
      if ((err as BatonError).details?.peerCode === SessionErrorCode.E_RESUME_FAILED) {
        // It exits by itself (incumbent.ts cannotResume); once it is gone, the caller cold-starts.
        f.resumeFailure = errorMessage(err);
        this.log.error({ event: 'handoff.incumbent_cannot_resume', pid: inc.pid, err: f.resumeFailure }, 'the incumbent cannot serve again and exits; a cold start follows');
        await inc.terminate(this.timeouts.killGraceMs, CANNOT_RESUME_EXIT_WAIT_MS);
        return;
      }
      this.log.error({ event: 'handoff.resume_unconfirmed', pid: inc.pid, err: errorMessage(err) }, 'incumbent did not confirm resume');
    }
  }

  /** The incumbent died before sealing: let the successor take the lock from the dead holder. */
  private async promote(f: Flight, cause: BatonError): Promise<HandoffResult | undefined> {
    this.log.warn({ event: 'handoff.promote', handoffId: f.id, cause: cause.message }, 'incumbent died; promoting the successor');
    f.promoted = true;
    f.incCh?.close('incumbent died');
    f.incCh = undefined;
    f.sealed = undefined;
    try {
      // A successor whose Ready was already received (and rejected) will not send another:
      // abort it and cold-start instead of waiting out the deadline.
      if (!f.sucCh || f.sucCh.failed || !f.successorHello || f.readyReceived) return undefined;
      if (f.phase !== 'begin' && f.phase !== 'await_ready') await this.stepBegin(f);
      await this.enter(f, 'await_ready');
      await this.stepAwaitReady(f);
      await this.enter(f, 'committing');
      await this.stepCommit(f);
    } catch (err) {
      this.log.error({ event: 'handoff.promote_failed', err: errorMessage(err) }, 'promotion failed');
      return undefined;
    }
    return this.commit(f, `incumbent died (${cause.message}); successor promoted`);
  }

  private finish(f: Flight, outcome: HandoffOutcome, reason?: string, code?: string): HandoffResult {
    const result: HandoffResult = {
      id: f.id,
      outcome,
      ...(reason !== undefined && { reason }),
      ...(code !== undefined && { code }),
      ...(f.promoted && { promoted: true }),
      ...(f.openConnsAtDrain !== undefined && { openConnsAtDrain: f.openConnsAtDrain }),
      startedAt: f.startedAt,
      endedAt: Date.now(),
      phases: f.phases,
      oldPid: f.incumbent?.pid,
      // Who serves now: never a dead process (an abort that lost the incumbent: nobody, until restoredBy).
      newPid: outcome === 'committed' ? f.successor?.pid : f.incumbent?.alive ? f.incumbent.pid : undefined,
      generation: this.generation,
      ...(outcome === 'committed' && f.successor?.build && { build: { buildId: f.successor.build.buildId, resolved: f.successor.build.resolved } }),
      ...(f.successorStderr && { successorStderr: f.successorStderr }),
      ...(f.spec.rollback && { rollback: f.spec.rollback }),
    };
    this.lastHandoff = result;
    this.log.info({ event: 'handoff.end', ...result }, `handoff ${outcome}${reason ? `: ${reason}` : ''}`);
    this.emit('handoff', result);
    return result;
  }

  // ---- the lease (lease.ts): the same members as before the split, for every caller ----

  /** Who holds the lease (a handoff, a scheduled restart, a job), or undefined when it is free. */
  leaseHolder(): string | undefined {
    return this.lease.holder();
  }

  /** The maintenance job that runs now, if any. */
  get runningJob(): Lease['runningJob'] {
    return this.lease.runningJob;
  }

  /** The newest probe answer from the app (served while a handoff makes asking impossible). */
  get lastProbes(): Lease['lastProbes'] {
    return this.lease.lastProbes;
  }

  /** See Lease.runJob: never throws; emits 'job-start', 'job-progress' and 'job'. */
  runJob(spec: JobSpec): Promise<JobResult> {
    return this.lease.runJob(spec);
  }

  /** See Lease.cancelJob: false when no such job runs. */
  cancelJob(id: string, reason: string): boolean {
    return this.lease.cancelJob(id, reason);
  }

  /** See Lease.probe: undefined during a handoff (callers show `lastProbes`). */
  probe(): Promise<ProbeEntry[] | undefined> {
    return this.lease.probe();
  }

  /** Lifecycle notice StartupCompleted to the incumbent (if it speaks "lifecycle"); best effort. */
  notifyStartup(durationMs: number, components: string[]): Promise<void> {
    return this.lease.notifyStartup(durationMs, components);
  }

  /**
   * Graceful stop: Shutdown to the incumbent (drain, seal, release, exit); past the
   * timeout SIGTERM, then SIGKILL. Listeners stay open: closing them is the owner's call.
   */
  async stop(timeoutMs = 30_000, reason: ShutdownReason = 'graceful'): Promise<void> {
    await this.stopApp(timeoutMs, reason);
    await this.journal.clear().catch(() => undefined); // nothing left to re-adopt
  }

  private async stopApp(timeoutMs: number, reason: ShutdownReason): Promise<void> {
    this.stopping = true;
    this.restarter.cancel();
    clearTimeout(this.bakeTimer);
    // Old incumbents still exiting after their Committed: none outlives the supervisor's stop.
    await Promise.all(this.retiring);
    // The incumbent's connection must be free for Shutdown: a running job is cancelled at once.
    await this.lease.release('the supervisor is stopping');
    const app = this.current;
    if (!app?.alive) return;
    if (this.activation) {
      // No protocol to ask it with: its graceful-stop signal, SIGKILL past the timeout.
      this.log.info({ event: 'supervisor.stop_signal', pid: app.pid, reason, timeoutMs }, `stopping the app (${reason})`);
      await this.activation.stop(app, timeoutMs);
      return;
    }
    try {
      const socket = await connectUnix(this.controlPath, this.timeouts.helloMs);
      const ch = new ControlChannel(socket, this.channelOptions('incumbent'));
      await ch.expect(['Hello'], this.timeouts.helloMs);
      ch.send({ type: 'HelloAck', handoffId: `stop-${randomUUID()}`, protoVersion: PROTO_MAX });
      ch.setVersion(PROTO_MAX);
      ch.startHeartbeats(() => 'stopping');
      ch.send({ type: 'Shutdown', reason, timeoutMs });
      this.log.info({ event: 'supervisor.shutdown_sent', pid: app.pid, reason, timeoutMs }, `asked the app to stop (${reason})`);
      const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs).unref());
      const done = await Promise.race([app.exited, timeout]);
      ch.close('stopped');
      if (done !== 'timeout') return;
      this.log.warn({ event: 'supervisor.stop_timeout', pid: app.pid }, 'app did not stop in time; killing');
    } catch (err) {
      this.log.warn({ event: 'supervisor.stop_unreachable', pid: app.pid, err: errorMessage(err) }, 'could not ask the app to stop; killing');
    }
    await app.terminate(this.timeouts.killGraceMs);
  }
}

/** A wait the supervisor depends on: keeps the process alive (an unref'd timer could let it exit mid-recovery). */
function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function buildRef(r: BuildRecord): BuildRef {
  return { generation: r.generation, buildId: r.buildId, resolved: [...r.resolved] };
}

function rollbackInfo(reason: string, automatic: boolean, from: BuildRecord | undefined, to: BuildRecord): RollbackInfo {
  return { reason, automatic, from: from && buildRef(from), to: buildRef(to) };
}
