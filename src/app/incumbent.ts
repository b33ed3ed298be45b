import { chmod, mkdir, rename, rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { exitProcess, sayHello, type AgentContext, type JobProgressNote } from './agent.js';
import { ControlChannel } from '../wire/channel.js';
import { crashPoint } from '../os/crashpoints.js';
import { BatonError, ProtocolError, errorMessage } from '../os/errors.js';
import { SessionErrorCode } from '../wire/messages.js';
import type { MessageOf } from '../wire/schema.js';
import { drive, type Machine, type Transitions } from '../wire/statemachine.js';
import type { DrainResult, SealResult } from './app.js';
import { LatestWins } from '../os/latest-wins.js';

/**
 * Incumbent states (PROTOCOL.md "Incumbent state machine"). Transient states
 * (DRAINING, SEALING, RESUMING, SHUTTING_DOWN) take no messages: the driver runs one
 * handler to completion before it reads the next frame.
 */
export type IncumbentState =
  | 'SERVING' // no supervisor attached
  | 'ATTACHED' // supervisor said HelloAck; nothing in progress
  | 'DRAINING'
  | 'DRAINED'
  | 'SEALING'
  | 'SEALED' // lock released, waiting for Commit or ResumeAfterAbort
  | 'RESUMING'
  | 'SHUTTING_DOWN'
  | 'JOB_RUNNING' // a maintenance task runs in the app (JobStart); JobCancel / ProbeRequest accepted
  | 'COMMITTED'; // point of no return: exiting

/** A maintenance task in flight (JobStart → JobDone). */
interface RunningJob {
  id: string;
  task: string;
  startedAt: number;
  /** Settles when the app's task returned (the JobDone was sent, if the session lives). */
  done: Promise<void>;
  cancelRequested: boolean;
  /** Its session was lost: nothing about it is sent any more (another session may be a handoff). */
  abandoned: boolean;
  /** JobProgress to the supervisor, throttled (newest wins). */
  progress: LatestWins<JobProgressNote>;
}

/** JobProgress at most this often; the newest snapshot wins. */
const PROGRESS_MIN_INTERVAL_MS = 200;
/** After losing the supervisor mid-job: when to log that the cancelled task still runs. */
const JOB_ABANDON_WAIT_MS = 5_000;
/** The app's main thread must answer a probe request within this (a blocked main thread cannot run probes). */
const PROBE_RPC_TIMEOUT_MS = 1_000;

/** What the app's main thread answers to runTask (it never throws). */
export interface TaskOutcome {
  outcome: 'succeeded' | 'failed' | 'cancelled';
  result: string;
  error?: string;
}

/** How long a re-take of the lock waits per attempt while a live successor still holds it. */
const RELOCK_ATTEMPT_MS = 5_000;

export class Incumbent implements Machine<IncumbentState> {
  state: IncumbentState = 'SERVING';
  handoffId: string | undefined;
  private server: net.Server | undefined;
  private session: ControlChannel | undefined;
  /** Settles when the current session's clean-up (supervisorLost) is over. */
  private sessionOver: Promise<void> | undefined;
  job: RunningJob | undefined;

  /** SealProgress to the supervisor, at most every 200 ms, newest wins (only while SEALING in a handoff). */
  private readonly sealProgress = new LatestWins<{ done: number; total: number }>(PROGRESS_MIN_INTERVAL_MS, (p) => {
    if (this.state === 'SEALING' && this.handoffId) this.send({ type: 'SealProgress', handoffId: this.handoffId, done: u32(p.done), total: u32(p.total) });
  });

  constructor(readonly ctx: AgentContext) {
    ctx.onJobProgress = (p) => this.jobProgress(p);
    ctx.onSealProgress = (done, total) => {
      if (this.state === 'SEALING') this.sealProgress.push({ done, total });
    };
  }

  /**
   * Binds the control path atomically: listen on a temporary name, restrict it to
   * 0600, rename over the final path (the directory is 0700 and owned by the
   * supervisor's user). A new incumbent's rename replaces the old one's entry; the
   * old process keeps its now-unnamed socket until it exits.
   */
  async bind(): Promise<void> {
    const finalPath = this.ctx.controlPath;
    const tmpPath = path.join(path.dirname(finalPath), `.${path.basename(finalPath)}.${process.pid}.tmp`);
    await mkdir(path.dirname(finalPath), { recursive: true, mode: 0o700 });
    await rm(tmpPath, { force: true });
    const server = net.createServer((socket) => void this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(tmpPath, () => resolve());
    });
    await chmod(tmpPath, 0o600);
    await rename(tmpPath, finalPath);
    this.server = server;
    this.ctx.log.info({ event: 'incumbent.control_bound', path: finalPath }, 'serving the control socket');
  }

  private async accept(socket: net.Socket): Promise<void> {
    const ch = new ControlChannel(socket, { peer: 'supervisor', log: this.ctx.log, livenessMs: this.ctx.livenessMs });
    // The previous session already failed (the supervisor closed it, e.g. after JobDone) and is
    // only cleaning up: wait for that instead of answering E_BUSY to the next session.
    if (this.session?.failed && this.sessionOver) await this.sessionOver;
    if (this.session || this.state !== 'SERVING') {
      this.ctx.log.warn({ event: 'incumbent.busy', state: this.state, session: Boolean(this.session) }, 'refusing a second supervisor connection (E_BUSY)');
      ch.send({ type: 'Error', code: 'E_BUSY', message: `another supervisor connection is active (state ${this.state})` });
      ch.close('busy');
      return;
    }
    this.session = ch;
    let over!: () => void;
    this.sessionOver = new Promise<void>((r) => (over = r));
    let ended: BatonError;
    try {
      crashPoint(this.ctx.crash, 'incumbent.on_hello');
      this.handoffId = await sayHello(ch, this.ctx, 'incumbent');
      this.state = 'ATTACHED';
      ch.startHeartbeats(() => this.state.toLowerCase());
      // Health probes attach every few seconds (baton run healthIntervalS): debug, not info, for those.
      this.ctx.log[this.handoffId.startsWith('probe-') ? 'debug' : 'info']({ event: 'incumbent.attached', handoffId: this.handoffId }, 'supervisor attached');
      ended = await drive(ch, this, INCUMBENT_TRANSITIONS);
    } catch (err) {
      ended = err instanceof BatonError ? err : new BatonError('E_SESSION', errorMessage(err));
      // e.g. a HelloAck with a version we do not speak: say why before closing (PROTOCOL.md "Errors").
      ch.sendError(ended);
    }
    ch.close('session over');
    this.session = undefined;
    try {
      await this.supervisorLost(ended);
    } finally {
      over();
    }
  }

  /** The supervisor connection ended; what that means depends on how far the handoff got. */
  private async supervisorLost(reason: BatonError): Promise<void> {
    const state = this.state;
    if (state === 'COMMITTED' || state === 'SHUTTING_DOWN') return;
    if (state === 'JOB_RUNNING') {
      // Nobody will read the outcome: stop the task (it may be an upgrade that wants the lease).
      this.abandonJob(`supervisor connection lost: ${reason.message}`);
      this.state = 'SERVING';
      this.handoffId = undefined;
      return;
    }
    if (state === 'ATTACHED' || state === 'SERVING') {
      this.state = 'SERVING';
      this.handoffId = undefined;
      return;
    }
    // DRAINED or SEALED: nobody will tell us what to do; abort on our own.
    this.ctx.log.warn(
      { event: 'incumbent.self_abort', state, code: reason.code, reason: reason.message },
      'lost the supervisor mid-handoff; resuming on our own',
    );
    await this.resume();
    this.rememberAborted();
    this.state = 'SERVING';
    this.handoffId = undefined;
  }

  /** Handoffs this incumbent aborted: a late Commit for one of them gets Error{E_ABORTED}. */
  readonly abortedHandoffs: string[] = [];

  rememberAborted(): void {
    if (!this.handoffId) return;
    this.abortedHandoffs.push(this.handoffId);
    if (this.abortedHandoffs.length > 16) this.abortedHandoffs.shift();
  }

  /** Refuses the session's last frame and ends the session (we stay the incumbent). */
  reject(err: BatonError): void {
    this.session?.sendError(err);
    this.session?.close('after a refused frame');
  }

  /** Re-takes the lock if we released it, then tells the app to serve again. */
  async resume(): Promise<void> {
    this.state = 'RESUMING';
    crashPoint(this.ctx.crash, 'incumbent.on_resume');
    while (!this.ctx.lock.held) {
      try {
        await this.ctx.lock.acquire({ handoffId: this.handoffId ?? 'resume', waitMs: RELOCK_ATTEMPT_MS });
      } catch (err) {
        // A live successor still holds it; it gives it up when it loses the supervisor.
        this.ctx.log.warn({ event: 'incumbent.relock_wait', err: errorMessage(err) }, 'waiting to re-take the data-dir lock');
      }
    }
    crashPoint(this.ctx.crash, 'incumbent.after_relock');
    try {
      await this.ctx.rpc.call('resume');
    } catch (err) {
      await this.cannotResume(err);
    }
    this.ctx.log.info({ event: 'incumbent.resumed', handoffId: this.handoffId }, 'serving again after abort');
  }

  /**
   * The app could not serve again (its resumeAfterAbort threw: e.g. it has no listener
   * copy left to listen on). A process that holds the lock and does not serve is the one
   * state that must not last: say why, then exit; the supervisor cold-starts a new
   * generation, which recovers the data like after any crash. Never returns.
   */
  private async cannotResume(err: unknown): Promise<never> {
    const reason = `the app cannot serve again after the abort: ${errorMessage(err)}`;
    this.ctx.log.fatal({ event: 'incumbent.resume_failed', handoffId: this.handoffId, err: errorMessage(err) }, `${reason}; exiting`);
    this.session?.sendError(new BatonError(SessionErrorCode.E_RESUME_FAILED, reason));
    return exitProcess(this.ctx, 70, reason);
  }

  /**
   * The session is gone while a job runs: cancel the task and serve on (a handoff may be
   * what needs the connection). A task that ignores its signal keeps running in the app;
   * until it returns, JobStart is answered with a failed JobDone.
   */
  private abandonJob(why: string): void {
    const job = this.job;
    if (!job) return;
    job.abandoned = true;
    job.progress.cancel();
    this.ctx.log.warn({ event: 'incumbent.job_abandoned', jobId: job.id, task: job.task, reason: why }, 'cancelling the running job');
    this.ctx.rpc.notify('cancelTask', { jobId: job.id, reason: why });
    const timer = setTimeout(() => {
      if (this.job === job) this.ctx.log.error({ event: 'incumbent.job_ignores_cancel', jobId: job.id, task: job.task }, `task ${job.task} still runs ${JOB_ABANDON_WAIT_MS} ms after its cancellation`);
    }, JOB_ABANDON_WAIT_MS);
    timer.unref();
  }

  /** Progress from the app's main thread: forwarded as JobProgress, at most every 200 ms (newest wins). */
  jobProgress(p: JobProgressNote): void {
    const job = this.job;
    if (job && p.jobId === job.id && !job.abandoned) job.progress.push(p);
  }

  private sendJobProgress(job: RunningJob, p: JobProgressNote): void {
    if (job.abandoned) return;
    const counters: Record<string, bigint> = {};
    for (const [k, v] of Object.entries(p.counters ?? {})) if (k !== '__proto__') counters[k] = u64(v);
    this.send({ type: 'JobProgress', jobId: job.id, done: u64(p.done), total: u64(p.total), counters });
  }

  newJob(id: string, task: string, startedAt: number): RunningJob {
    const job: RunningJob = { id, task, startedAt, done: Promise.resolve(), cancelRequested: false, abandoned: false, progress: new LatestWins(PROGRESS_MIN_INTERVAL_MS, (p) => this.sendJobProgress(job, p)) };
    return job;
  }

  /** The seal is over: a progress note still waiting would arrive after SealComplete. */
  dropSealProgress(): void {
    this.sealProgress.cancel();
  }

  send(msg: Parameters<ControlChannel['send']>[0]): void {
    this.session?.send(msg);
  }

  /** Stops accepting supervisor connections (does not wait for the current one: it may be the one asking us to exit). */
  close(): void {
    this.server?.close();
  }
}

async function onPrepare(inc: Incumbent, msg: MessageOf<'PrepareHandoff'>): Promise<void> {
  const { ctx } = inc;
  crashPoint(ctx.crash, 'incumbent.on_prepare');
  inc.state = 'DRAINING';
  const deadlineMs = Math.min(Number(msg.deadlineMs), Date.now() + msg.drainGraceMs);
  ctx.log.info({ event: 'incumbent.drain', handoffId: msg.handoffId, successorPid: msg.successorPid }, 'draining');
  const draining = ctx.rpc.call<DrainResult>('drain', { deadlineMs });
  crashPoint(ctx.crash, 'incumbent.mid_drain');
  try {
    const result = await draining;
    inc.send({ type: 'Drained', handoffId: msg.handoffId, ...result });
    inc.state = 'DRAINED';
    crashPoint(ctx.crash, 'incumbent.after_drained');
  } catch (err) {
    ctx.log.error({ event: 'incumbent.drain_failed', err: errorMessage(err) }, 'drain failed; resuming');
    await inc.resume();
    inc.state = 'ATTACHED';
    inc.send({ type: 'DrainFailed', handoffId: msg.handoffId, error: errorMessage(err) });
  }
}

async function onSealRequest(inc: Incumbent, msg: MessageOf<'SealRequest'>): Promise<void> {
  const { ctx } = inc;
  crashPoint(ctx.crash, 'incumbent.on_seal_request');
  inc.state = 'SEALING';
  const sealing = ctx.rpc.call<SealResult>('seal');
  ctx.log.info({ event: 'incumbent.seal', handoffId: msg.handoffId }, 'sealing');
  crashPoint(ctx.crash, 'incumbent.mid_seal');
  let result: SealResult;
  try {
    result = await sealing;
  } catch (err) {
    ctx.log.error({ event: 'incumbent.seal_failed', err: errorMessage(err) }, 'seal failed; resuming');
    await inc.resume();
    inc.state = 'ATTACHED';
    const partialState = (err as { partialState?: Record<string, bigint> }).partialState ?? {};
    inc.send({ type: 'SealFailed', handoffId: msg.handoffId, error: errorMessage(err), partialState });
    return;
  }
  inc.dropSealProgress();
  crashPoint(ctx.crash, 'incumbent.after_seal_before_release');
  // Invariant 2: the lock is released only after a successful seal, right before SealComplete.
  await ctx.lock.release();
  crashPoint(ctx.crash, 'incumbent.after_lock_release');
  inc.state = 'SEALED';
  inc.send({ type: 'SealComplete', handoffId: msg.handoffId, ...result });
  crashPoint(ctx.crash, 'incumbent.after_seal_complete');
}

async function onCommit(inc: Incumbent, msg: MessageOf<'Commit'>): Promise<void> {
  crashPoint(inc.ctx.crash, 'incumbent.on_commit');
  inc.state = 'COMMITTED';
  // Stop accepting before answering: once the supervisor has our Committed it may start
  // the next handoff at once and connect to the control path, which names our socket
  // until the successor's rename. Closed first, that connect is refused and retried;
  // closed after, it could sit in our backlog and be reset when we exit (seen under load
  // in the 100-handoff chain: E_SOCKET ECONNRESET in the next handoff's hello).
  inc.close();
  inc.send({ type: 'Committed', handoffId: msg.handoffId });
  crashPoint(inc.ctx.crash, 'incumbent.after_committed');
  await exitProcess(inc.ctx, 0, `handoff ${msg.handoffId} committed`);
}

async function onResume(inc: Incumbent, msg: MessageOf<'ResumeAfterAbort'> | MessageOf<'Abort'>): Promise<void> {
  await inc.resume();
  inc.rememberAborted();
  inc.state = 'ATTACHED';
  inc.send({ type: 'Resumed', handoffId: msg.handoffId });
}

/** Nothing to undo (e.g. DrainFailed already resumed); confirm. */
async function onResumeIdle(inc: Incumbent, msg: MessageOf<'ResumeAfterAbort'> | MessageOf<'Abort'>): Promise<void> {
  inc.send({ type: 'Resumed', handoffId: msg.handoffId });
}

async function onShutdown(inc: Incumbent, msg: MessageOf<'Shutdown'>): Promise<void> {
  const { ctx } = inc;
  inc.state = 'SHUTTING_DOWN';
  const started = Date.now();
  ctx.log.info({ event: 'incumbent.shutdown', reason: msg.reason, timeoutMs: msg.timeoutMs }, 'shutting down');
  // Lifecycle notice to the app (ordered before the drain call on the same port).
  ctx.rpc.notify('lifecycle', { event: 'shutdown-requested', reason: msg.reason, timeoutMs: msg.timeoutMs });
  try {
    await ctx.rpc.call<DrainResult>('drain', { deadlineMs: Date.now() + msg.timeoutMs / 2 });
    await ctx.rpc.call<SealResult>('seal');
    await ctx.lock.release();
    // Ordered before the exit call on the same port: the app hears it before it is asked to exit.
    ctx.rpc.notify('lifecycle', { event: 'shutdown-completed', reason: msg.reason, durationMs: Date.now() - started });
  } catch (err) {
    ctx.log.error({ event: 'incumbent.shutdown_failed', err: errorMessage(err) }, 'shutdown seal failed');
    await exitProcess(ctx, 1, `shutdown (${msg.reason}) failed: ${errorMessage(err)}`);
  }
  inc.close();
  await exitProcess(ctx, 0, `shutdown (${msg.reason})`);
}

/** Commit with nothing sealed: refused (E_ABORTED if we aborted that handoff); we never exit on it. */
async function onStrayCommit(inc: Incumbent, msg: MessageOf<'Commit'>): Promise<void> {
  const aborted = inc.abortedHandoffs.includes(msg.handoffId);
  inc.reject(
    aborted
      ? new ProtocolError('E_ABORTED', `handoff ${msg.handoffId} was aborted; this process serves on`)
      : new ProtocolError('E_UNEXPECTED_MESSAGE', `Commit is not accepted in state ${inc.state}`),
  );
}

/**
 * JobStart: the task runs in the app's main thread (RPC); this handler returns at once so
 * the session keeps reading (JobCancel, ProbeRequest). JobDone goes out when it ends.
 */
async function onJobStart(inc: Incumbent, msg: MessageOf<'JobStart'>): Promise<void> {
  const { ctx } = inc;
  const previous = inc.job;
  if (previous) {
    // A task whose session was lost (and which ignores its cancellation) still runs.
    inc.send({ type: 'JobDone', jobId: msg.jobId, outcome: 'failed', durationMs: 0n, result: 'null', error: `task ${previous.task} (job ${previous.id}) is still running in the app after its cancellation` });
    return;
  }
  inc.state = 'JOB_RUNNING';
  const startedAt = Date.now();
  ctx.log.info({ event: 'incumbent.job_start', jobId: msg.jobId, task: msg.task, urgency: msg.urgency, reason: msg.reason }, `running task ${msg.task}`);
  let params: unknown = {};
  try {
    params = JSON.parse(msg.params || '{}');
  } catch {
    // reported below as a failed job
    params = undefined;
  }
  const running = params === undefined || typeof params !== 'object' || params === null || Array.isArray(params)
    ? Promise.resolve<TaskOutcome>({ outcome: 'failed', result: 'null', error: `JobStart.params: expected JSON text of an object (got ${JSON.stringify(msg.params.slice(0, 80))})` })
    : ctx.rpc.call<TaskOutcome>('runTask', { jobId: msg.jobId, task: msg.task, urgency: msg.urgency, reason: msg.reason, params });
  const job = inc.newJob(msg.jobId, msg.task, startedAt);
  job.done = running
    .catch((err: unknown): TaskOutcome => ({ outcome: 'failed', result: 'null', error: errorMessage(err) }))
    .then((r) => {
      const current = inc.job === job;
      if (current) job.progress.flush();
      if (current) inc.job = undefined;
      const durationMs = BigInt(Date.now() - startedAt);
      ctx.log.info({ event: 'incumbent.job_done', jobId: job.id, task: job.task, outcome: r.outcome, durationMs: Number(durationMs), error: r.error }, `task ${job.task} ${r.outcome}`);
      if (current && !job.abandoned && inc.state === 'JOB_RUNNING') {
        inc.state = 'ATTACHED';
        inc.send({ type: 'JobDone', jobId: job.id, outcome: r.outcome, durationMs, result: typeof r.result === 'string' ? r.result : 'null', ...(r.error !== undefined && { error: r.error.slice(0, 4096) }) });
      }
    });
  inc.job = job;
}

async function onJobCancel(inc: Incumbent, msg: MessageOf<'JobCancel'>): Promise<void> {
  const job = inc.job;
  // A cancel that crossed the JobDone (or names another job) has nothing to stop.
  if (!job || job.id !== msg.jobId || job.cancelRequested) return;
  job.cancelRequested = true;
  inc.ctx.log.info({ event: 'incumbent.job_cancel', jobId: job.id, reason: msg.reason }, `cancelling task ${job.task}`);
  inc.ctx.rpc.notify('cancelTask', { jobId: job.id, reason: msg.reason });
}

/** Runs the app's probes (its main thread enforces the 10 ms per probe; a blocked main thread is UNKNOWN here). */
async function onProbeRequest(inc: Incumbent, msg: MessageOf<'ProbeRequest'>): Promise<void> {
  const asked = inc.ctx.rpc.call<unknown[]>('probes');
  asked.catch(() => undefined);
  const probes = await Promise.race([
    asked.catch((err: unknown) => [{ name: 'app', status: 'UNKNOWN', message: `probe runner failed: ${errorMessage(err)}` }]),
    sleep(PROBE_RPC_TIMEOUT_MS).then(() => [{ name: 'app', status: 'UNKNOWN', message: `the app's main thread did not answer the probe request within ${PROBE_RPC_TIMEOUT_MS} ms (blocked?)` }]),
  ]);
  let text = JSON.stringify(probes);
  if (text.length > 512 * 1024) text = JSON.stringify([{ name: 'app', status: 'UNKNOWN', message: `probe report too large (${text.length} bytes)` }]);
  inc.send({ type: 'ProbeReport', requestId: msg.requestId, probes: text });
}

async function onStartupCompleted(inc: Incumbent, msg: MessageOf<'StartupCompleted'>): Promise<void> {
  inc.ctx.rpc.notify('lifecycle', { event: 'startup-completed', durationMs: Number(msg.durationMs), components: msg.components });
}

export const INCUMBENT_TRANSITIONS: Transitions<IncumbentState, Incumbent> = {
  JOB_RUNNING: { JobCancel: onJobCancel, ProbeRequest: onProbeRequest },
  ATTACHED: {
    JobStart: onJobStart,
    JobCancel: onJobCancel,
    ProbeRequest: onProbeRequest,
    StartupCompleted: onStartupCompleted,
    PrepareHandoff: onPrepare,
    Shutdown: onShutdown,
    ResumeAfterAbort: onResumeIdle,
    Abort: onResumeIdle,
    Commit: onStrayCommit,
  },
  DRAINED: { SealRequest: onSealRequest, ResumeAfterAbort: onResume, Abort: onResume },
  SEALED: { Commit: onCommit, ResumeAfterAbort: onResume, Abort: onResume },
};

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** A progress figure from the app as u32 (negative or non-finite: 0; larger: the maximum). */
function u32(v: unknown): number {
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? Math.min(Math.trunc(n), 0xffff_ffff) : 0;
}

/** A progress figure from the app as u64 (negative or non-finite: 0). */
function u64(v: unknown): bigint {
  if (typeof v === 'bigint') return v < 0n ? 0n : v;
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? BigInt(Math.min(Math.trunc(n), Number.MAX_SAFE_INTEGER)) : 0n;
}
