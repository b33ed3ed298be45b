/**
 * The one lease on the incumbent's control connection (ARCHITECTURE.md "One lease"): the
 * incumbent serves one supervisor connection at a time, so maintenance jobs, probes and
 * lifecycle notices take turns here, and a handoff waits for them (take) or refuses them.
 */
import { randomUUID } from 'node:crypto';
import { ControlChannel, type ChannelOptions } from '../wire/channel.js';
import { negotiateVersion } from '../wire/codec.js';
import { BatonError, HandoffError, ProtocolError, asBatonError, errorMessage } from '../os/errors.js';
import type { Logger } from '../os/log.js';
import { connectUnix } from '../os/unix-connect.js';
import { PROTO_MAX, PROTO_MIN, type MessageOf } from '../wire/schema.js';
import type { AppProcess, ExitStatus } from './generation.js';
import type { HandoffSpec, Timeouts } from './options.js';
import type { SupervisorPhase } from './phases.js';
import { parseProbes, type ProbeEntry } from './probes.js';

export type Urgency = 'low' | 'normal' | 'high' | 'critical';
export const URGENCIES: readonly Urgency[] = ['low', 'normal', 'high', 'critical'];

export interface JobSpec {
  /** Job id (default: a fresh uuid). */
  id?: string;
  task: string;
  urgency?: Urgency;
  reason?: string;
  params?: Record<string, unknown>;
}

export interface JobProgressSnapshot {
  done: number;
  total: number;
  counters: Record<string, number>;
  /** When it arrived (epoch ms). */
  at: number;
}

export type JobOutcome = 'succeeded' | 'failed' | 'cancelled' | 'skipped';

export interface JobResult {
  id: string;
  task: string;
  urgency: Urgency;
  outcome: JobOutcome;
  code?: string;
  reason?: string;
  /** The task's summary (parsed from JobDone.result). */
  result?: unknown;
  /** Epoch ms; startedAt is when the lease was taken (absent when skipped). */
  startedAt?: number;
  endedAt: number;
  /** How long the task ran in the app (JobDone.durationMs). */
  appDurationMs?: number;
  progress?: JobProgressSnapshot;
  pid?: number;
  generation?: number;
}

/** A job on the incumbent's control connection, while it holds the lease. */
interface JobFlight {
  spec: JobSpec & { id: string; urgency: Urgency };
  startedAt: number;
  app: AppProcess;
  generation: number;
  ch: ControlChannel | undefined;
  progress: JobProgressSnapshot | undefined;
  cancelReason: string | undefined;
  cancelTimer: NodeJS.Timeout | undefined;
  /** Resolves the job early (cancel not acknowledged). */
  forceEnd: ((r: { outcome: JobOutcome; code: string; reason: string }) => void) | undefined;
  probeWaiters: Map<string, (entries: ProbeEntry[]) => void>;
}

/**
 * A non-handoff conversation with the incumbent (job, probe, lifecycle notice). The
 * incumbent serves one supervisor connection at a time, so these and handoffs share
 * ONE lease: whoever holds the connection.
 */
interface ControlSession {
  kind: 'job' | 'probe' | 'notify';
  done: Promise<unknown>;
  job?: JobFlight;
}

/** What the lease needs from the Supervisor that owns it. */
export interface LeaseHost {
  readonly controlPath: string;
  readonly timeouts: Timeouts;
  readonly log: Logger;
  /** The Supervisor's events ('job-start', 'job-progress', 'job', 'probes', 'lease-wait'). */
  emit(event: string, ...args: unknown[]): boolean;
  /** The serving incumbent, if any. */
  incumbent(): AppProcess | undefined;
  generation(): number;
  /** The handoff that runs now, if any. */
  handoff(): { id: string; phase: SupervisorPhase } | undefined;
  /** A restart of a crashed incumbent is scheduled. */
  restartScheduled(): boolean;
  stopping(): boolean;
  channelOptions(peer: 'incumbent'): ChannelOptions;
}

/** Holds the lease for jobs, probes and notices; a waiting handoff is recorded here too. */
export class Lease {
  /** The incumbent's connection is held by a job / probe / notice (see ControlSession). */
  private session: ControlSession | undefined;
  /** A handoff was requested and waits for the lease (a maintenance job holds it). */
  private pending: string | undefined;
  /** The newest probe answer from the app (served while a handoff makes asking impossible). */
  lastProbes: { at: number; entries: ProbeEntry[] } | undefined;

  constructor(private readonly host: LeaseHost) {}

  /** A job, probe or notice holds the incumbent's connection. */
  get held(): boolean {
    return this.session !== undefined;
  }

  /** When the handoff that waits for the lease was requested, if one waits. */
  get handoffPending(): string | undefined {
    return this.pending;
  }

  /** Who holds the lease (a handoff, a scheduled restart, a job), or undefined when it is free. */
  holder(): string | undefined {
    const handoff = this.host.handoff();
    if (handoff) return `handoff ${handoff.id} (phase ${handoff.phase})`;
    if (this.handoffPending) return `handoff waiting for the lease (${this.handoffPending})`;
    if (this.host.restartScheduled()) return 'a scheduled restart of the app';
    const job = this.session?.job;
    if (job) return `maintenance job ${job.spec.id} (${job.spec.task})`;
    return undefined;
  }

  /** The maintenance job that runs now, if any. */
  get runningJob(): { id: string; task: string; urgency: Urgency; startedAt: number; pid: number; progress: JobProgressSnapshot | undefined; cancelling: boolean } | undefined {
    const j = this.session?.job;
    return j && { id: j.spec.id, task: j.spec.task, urgency: j.spec.urgency, startedAt: j.startedAt, pid: j.app.pid, progress: j.progress, cancelling: j.cancelReason !== undefined };
  }

  /** Waiting handoff: probes/notices end by themselves; a job gets leaseWaitMs, then is cancelled (a critical one refuses the handoff). */
  async take(spec: Pick<HandoffSpec, 'leaseWaitMs'>): Promise<void> {
    this.pending = `requested at ${new Date().toISOString()}`;
    try {
      while (this.session) {
        const session = this.session;
        const job = session.job;
        if (!job) {
          await session.done.catch(() => undefined);
          continue;
        }
        const waitMs = spec.leaseWaitMs ?? this.host.timeouts.leaseWaitMs;
        this.host.log.info({ event: 'lease.wait', jobId: job.spec.id, task: job.spec.task, waitMs }, `handoff waits up to ${waitMs} ms for maintenance job ${job.spec.id}`);
        this.host.emit('lease-wait', job.spec.id, waitMs);
        const ended = await Promise.race([session.done.then(() => true, () => true), sleep(waitMs).then(() => false)]);
        if (ended) continue;
        if (job.spec.urgency === 'critical') {
          throw new HandoffError('E_LEASE_HELD', `lease held by critical maintenance job ${job.spec.id} (${job.spec.task}); it did not end within ${waitMs} ms and a critical job is not cancelled for a handoff`);
        }
        this.cancelJob(job.spec.id, `a handoff waited ${waitMs} ms for the lease`);
        await session.done.catch(() => undefined);
      }
    } finally {
      this.pending = undefined;
    }
  }

  /**
   * Runs a maintenance task in the incumbent (JobStart … JobDone on a connection of its
   * own, heartbeats and the 10 s liveness rule as for handoffs). Never throws: a refusal
   * is outcome 'skipped' (E_LEASE_HELD, E_STOPPING, E_NO_APP), a dead or silent
   * incumbent 'failed' with the reason. Emits 'job-start', 'job-progress' and 'job'.
   */
  async runJob(spec: JobSpec): Promise<JobResult> {
    const full = { ...spec, id: spec.id ?? randomUUID(), urgency: spec.urgency ?? 'normal' };
    const base = { id: full.id, task: full.task, urgency: full.urgency };
    const skip = (code: string, reason: string): JobResult => this.endJob({ ...base, outcome: 'skipped', code, reason, endedAt: Date.now() });
    // Probes and notices hold the connection for milliseconds: wait for them; anything else refuses.
    for (;;) {
      if (this.host.stopping()) return skip('E_STOPPING', 'the supervisor is stopping');
      const holder = this.holder();
      if (holder) return skip('E_LEASE_HELD', `lease held by ${holder}`);
      if (!this.session) break;
      await this.session.done.catch(() => undefined);
    }
    const app = this.host.incumbent();
    if (!app?.alive) return skip('E_NO_APP', 'no app is running');
    // An app known to run no tasks (a socket-activated server speaks no protocol at all) is not connected to.
    if (app.features && !app.features.includes('jobs')) {
      return this.endJob({ ...base, outcome: 'failed', code: 'E_UNSUPPORTED', reason: `the app (pid ${app.pid}) does not run maintenance tasks (it listed no "jobs" in its Hello.features, or speaks no control protocol: socket activation)`, startedAt: Date.now(), pid: app.pid, generation: this.host.generation(), endedAt: Date.now() });
    }
    const job: JobFlight = {
      spec: full,
      startedAt: Date.now(),
      app,
      generation: this.host.generation(),
      ch: undefined,
      progress: undefined,
      cancelReason: undefined,
      cancelTimer: undefined,
      forceEnd: undefined,
      probeWaiters: new Map(),
    };
    const run = this.conductJob(job);
    this.session = { kind: 'job', done: run, job };
    try {
      return this.endJob(await run);
    } finally {
      if (job.cancelTimer) clearTimeout(job.cancelTimer);
      this.session = undefined;
    }
  }

  private async conductJob(job: JobFlight): Promise<JobResult> {
    const { spec, app } = job;
    const base = { id: spec.id, task: spec.task, urgency: spec.urgency, startedAt: job.startedAt, pid: app.pid, generation: job.generation };
    this.host.log.info({ event: 'job.start', jobId: spec.id, task: spec.task, urgency: spec.urgency, pid: app.pid }, `maintenance job ${spec.task} started`);
    this.host.emit('job-start', { ...base });
    const forced = new Promise<{ outcome: JobOutcome; code: string; reason: string }>((r) => (job.forceEnd = r));
    let socketClosed: Promise<void> = Promise.resolve();
    try {
      const { ch, hello, closed } = await this.openSession(app, `job-${spec.id}`, `during job ${spec.id} (${spec.task})`);
      socketClosed = closed;
      job.ch = ch;
      if (!hello.features?.includes('jobs')) {
        return { ...base, outcome: 'failed', code: 'E_UNSUPPORTED', reason: `the app (pid ${app.pid}) does not run maintenance tasks (no "jobs" in its Hello.features)`, endedAt: Date.now() };
      }
      ch.send({ type: 'JobStart', jobId: spec.id, task: spec.task, urgency: spec.urgency, reason: spec.reason ?? '', params: JSON.stringify(spec.params ?? {}) });
      const conversation = (async (): Promise<JobResult> => {
        for (;;) {
          const msg = await this.raceDeath(app, ch.expect(['JobProgress', 'JobDone', 'ProbeReport']), `during job ${spec.id} (${spec.task})`);
          if (msg.type === 'ProbeReport') {
            job.probeWaiters.get(msg.requestId)?.(parseProbes(msg.probes));
            continue;
          }
          if (msg.jobId !== spec.id) throw new ProtocolError('E_WRONG_JOB', `incumbent sent ${msg.type} for job ${msg.jobId}, expected ${spec.id}`);
          if (msg.type === 'JobProgress') {
            job.progress = { done: toNum(msg.done), total: toNum(msg.total), counters: Object.fromEntries(Object.entries(msg.counters).map(([k, v]) => [k, toNum(v)])), at: Date.now() };
            this.host.emit('job-progress', spec.id, job.progress);
            continue;
          }
          let result: unknown = null;
          try {
            result = JSON.parse(msg.result || 'null');
          } catch {
            result = msg.result;
          }
          const outcome: JobOutcome = msg.outcome;
          const reason = outcome === 'cancelled' ? (job.cancelReason ?? msg.error) : msg.error;
          return {
            ...base,
            outcome,
            ...(outcome !== 'succeeded' && { code: outcome === 'cancelled' ? 'E_CANCELLED' : 'E_TASK_FAILED' }),
            ...(reason !== undefined && { reason }),
            result,
            appDurationMs: toNum(msg.durationMs),
            ...(job.progress && { progress: job.progress }),
            endedAt: Date.now(),
          };
        }
      })();
      conversation.catch(() => undefined);
      const r = await Promise.race([conversation, forced.then((f) => ({ ...base, ...f, ...(job.progress && { progress: job.progress }), endedAt: Date.now() }))]);
      return r;
    } catch (err) {
      const e = asBatonError(err);
      return { ...base, outcome: 'failed', code: e.code, reason: e.message, ...(job.progress && { progress: job.progress }), endedAt: Date.now() };
    } finally {
      job.ch?.close('job over');
      for (const w of job.probeWaiters.values()) w([{ name: 'app', status: 'UNKNOWN', message: 'the job connection ended before the probe answer' }]);
      // The incumbent takes the next connection only once it saw this one end.
      await Promise.race([socketClosed, sleep(2_000)]);
    }
  }

  private endJob(r: JobResult): JobResult {
    const level = r.outcome === 'succeeded' ? 'info' : 'warn';
    this.host.log[level]({ event: 'job.end', ...r }, `maintenance job ${r.task} ${r.outcome}${r.reason ? `: ${r.reason}` : ''}`);
    this.host.emit('job', r);
    return r;
  }

  /**
   * Asks the running job to stop (JobCancel). The app answers JobDone (cancelled); if it
   * does not within cancelGraceMs the job's connection is closed (the incumbent then
   * aborts the task itself) and the job ends CANCELLED. False when no such job runs.
   */
  cancelJob(id: string, reason: string): boolean {
    const job = this.session?.job;
    if (!job || job.spec.id !== id) return false;
    if (job.cancelReason !== undefined) return true;
    job.cancelReason = reason;
    this.host.log.info({ event: 'job.cancel', jobId: id, reason }, `cancelling maintenance job ${id}: ${reason}`);
    job.ch?.send({ type: 'JobCancel', jobId: id, reason });
    job.cancelTimer = setTimeout(() => {
      job.forceEnd?.({ outcome: 'cancelled', code: 'E_CANCELLED', reason: `${reason}; the task did not acknowledge the cancel within ${this.host.timeouts.cancelGraceMs} ms, so its connection was closed` });
    }, job.ch ? this.host.timeouts.cancelGraceMs : 0);
    return true;
  }

  /**
   * The app's health probes (ProbeRequest/ProbeReport), on the job's connection when a
   * job runs, else on a short connection of its own. During a handoff nobody can ask:
   * undefined (callers show `lastProbes`). Never throws: trouble is an UNKNOWN entry.
   */
  async probe(): Promise<ProbeEntry[] | undefined> {
    if (this.host.handoff() || this.handoffPending || this.host.stopping()) return undefined;
    const app = this.host.incumbent();
    if (!app?.alive) return undefined;
    // An app that said it has no probes is never asked (no periodic session it did not ask for: PROTOCOL.md 7.9).
    if (app.features && !app.features.includes('probes')) return this.probed([]);
    const requestId = randomUUID();
    let entries: ProbeEntry[];
    const job = this.session?.job;
    if (job?.ch && !job.ch.failed) {
      entries = await new Promise<ProbeEntry[]>((resolve) => {
        const timer = setTimeout(() => resolve([{ name: 'app', status: 'UNKNOWN', message: `no ProbeReport within ${this.host.timeouts.probeMs} ms` }]), this.host.timeouts.probeMs);
        job.probeWaiters.set(requestId, (e) => {
          clearTimeout(timer);
          job.probeWaiters.delete(requestId);
          resolve(e);
        });
        job.ch!.send({ type: 'ProbeRequest', requestId });
      });
    } else if (this.session) {
      // Another probe or a notice: wait for it (milliseconds), then ask.
      await this.session.done.catch(() => undefined);
      return this.probe();
    } else {
      const run = this.withSession('probe', app, async (ch, hello) => {
        if (!hello.features?.includes('probes')) return [] as ProbeEntry[];
        ch.send({ type: 'ProbeRequest', requestId });
        for (;;) {
          const msg = await this.raceDeath(app, ch.expect(['ProbeReport'], this.host.timeouts.probeMs), 'during a probe');
          if (msg.requestId === requestId) return parseProbes(msg.probes);
        }
      });
      entries = await run.catch((err: unknown) => [{ name: 'app', status: 'UNKNOWN' as const, message: `probe failed: ${errorMessage(err)}` }]);
    }
    return this.probed(entries);
  }

  private probed(entries: ProbeEntry[]): ProbeEntry[] {
    this.lastProbes = { at: Date.now(), entries };
    this.host.emit('probes', entries);
    return entries;
  }

  /** Lifecycle notice StartupCompleted to the incumbent (if it speaks "lifecycle"); best effort. */
  async notifyStartup(durationMs: number, components: string[]): Promise<void> {
    const app = this.host.incumbent();
    if (!app?.alive || this.host.handoff() || this.session || this.host.stopping()) return;
    if (app.features && !app.features.includes('lifecycle')) return;
    await this.withSession('notify', app, async (ch, hello) => {
      if (!hello.features?.includes('lifecycle')) return;
      ch.send({ type: 'StartupCompleted', durationMs: BigInt(Math.max(0, Math.round(durationMs))), components });
    }).catch((err: unknown) => this.host.log.warn({ event: 'lifecycle.notify_failed', err: errorMessage(err) }, 'could not send StartupCompleted'));
  }

  /** A short conversation holding the lease (probe, notice); frees it once the incumbent saw the connection end. */
  private withSession<T>(kind: 'probe' | 'notify', app: AppProcess, body: (ch: ControlChannel, hello: MessageOf<'Hello'>) => Promise<T>): Promise<T> {
    const run = (async () => {
      let opened: Awaited<ReturnType<Lease['openSession']>> | undefined;
      try {
        opened = await this.openSession(app, `${kind}-${randomUUID()}`, `during a ${kind}`);
        return await body(opened.ch, opened.hello);
      } finally {
        opened?.ch.close(`${kind} over`);
        if (opened) await Promise.race([opened.closed, sleep(2_000)]);
      }
    })();
    const session: ControlSession = { kind, done: run };
    this.session = session;
    void run.then(
      () => undefined,
      () => undefined,
    ).finally(() => {
      if (this.session === session) this.session = undefined;
    });
    return run;
  }

  /** Connects to the incumbent's control socket: its Hello (pid checked), our HelloAck, heartbeats. */
  private async openSession(app: AppProcess, sessionId: string, what: string): Promise<{ ch: ControlChannel; hello: MessageOf<'Hello'>; closed: Promise<void> }> {
    const socket = await connectUnix(this.host.controlPath, this.host.timeouts.helloMs);
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    const ch = new ControlChannel(socket, this.host.channelOptions('incumbent'));
    try {
      const hello = await this.raceDeath(app, ch.expect(['Hello'], this.host.timeouts.helloMs), what);
      if (hello.role !== 'incumbent') throw new ProtocolError('E_WRONG_ROLE', `incumbent introduced itself as ${hello.role}`);
      if (hello.pid !== app.pid) throw new ProtocolError('E_WRONG_PID', `incumbent says pid ${hello.pid}, expected ${app.pid}`);
      const version = negotiateVersion(hello.protoMin, hello.protoMax, PROTO_MIN, PROTO_MAX);
      app.features ??= hello.features ?? [];
      ch.send({ type: 'HelloAck', handoffId: sessionId, protoVersion: version });
      ch.setVersion(version);
      ch.startHeartbeats(() => sessionId.split('-')[0]!);
      return { ch, hello, closed };
    } catch (err) {
      if (err instanceof BatonError && err.code !== 'E_PEER_ERROR') ch.sendError(err);
      ch.close('session refused');
      throw err;
    }
  }

  /** Races a receive against the process's death, so a killed incumbent fails the job at once with how it died. */
  private async raceDeath<T>(proc: AppProcess, p: Promise<T>, when: string): Promise<T> {
    const died = (st: ExitStatus): BatonError => new BatonError('E_PEER_DIED', `incumbent (pid ${proc.pid}) exited (code ${st.code ?? '-'}, signal ${st.signal ?? '-'}) ${when}`);
    const death = proc.exited.then((st) => Promise.reject(died(st)));
    death.catch(() => undefined);
    try {
      return await Promise.race([p, death]);
    } catch (err) {
      if ((err as BatonError).code === 'E_PEER_CLOSED' || (err as BatonError).code === 'E_SOCKET') {
        const st = await Promise.race([proc.exited, sleep(1_000).then(() => undefined)]);
        if (st) throw died(st);
      }
      throw err;
    }
  }

  /** Stopping: the incumbent's connection must be free for Shutdown, so a running job is cancelled at once. */
  async release(reason: string): Promise<void> {
    while (this.session) {
      const session = this.session;
      if (session.job) this.cancelJob(session.job.spec.id, reason);
      await session.done.catch(() => undefined);
    }
  }
}

function toNum(v: bigint | number): number {
  return typeof v === 'bigint' ? (v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v)) : v;
}

/** A wait the lease depends on: keeps the process alive, like the Supervisor's own. */
function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
