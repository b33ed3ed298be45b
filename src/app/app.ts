import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { crashConfigFromEnv } from '../os/crashpoints.js';
import { BatonError, errorMessage } from '../os/errors.js';
import { inheritedListeners } from '../os/listeners.js';
import { createLogger, type Logger } from '../os/log.js';
import { detectRole, ENV, type Role, type RoleInfo } from '../wire/roles.js';
import type { RevisionMap } from '../wire/schema.js';
import { fetchListenerCopies, fetchListenerCopySets, type ListenerHandle } from './listener-copies.js';
import { Rpc } from './worker-rpc.js';
import { StandaloneListeners } from './standalone.js';
import { LIVENESS_TIMEOUT_MS } from '../wire/channel.js';
import { MAX_LISTENER_COPIES_PER_REQUEST } from '../wire/listener-copies.js';

// ---- The typed app-facing API --------------------------------------------------

export interface DrainResult {
  openConnsRemaining: number;
  acceptClosed: boolean;
}
export interface SealResult {
  lastRevisionPerShard: RevisionMap;
  /** SHA-256 over the sealed shard heads: exactly 32 bytes. */
  dataDirFingerprint: Uint8Array;
}
/** What Ready says (sent by `ready()`); the supervisor commits only if it passes its checks. */
export interface Readiness {
  /**
   * Names of the listeners this process accepts on now (`listenTarget(name)` names).
   * Reported in the job history and logs; the supervisor does not require every name.
   */
  listeningOn: string[];
  /**
   * The app's own verdict that it can serve (data open, dependencies reachable). It is
   * trusted as said: `false` aborts the handoff (`E_READY_REJECTED`) and the old process
   * serves on. baton does not call your `/healthz` to decide; it probes `/healthz` on the
   * first listener only for `baton status`/`health`, where a missing route shows as not OK.
   */
  healthzOk: boolean;
  /**
   * For each shard (any string key; a single store uses one key, e.g. `'0'`), the
   * revision this process serves from: a number that grows with every acknowledged
   * write. The supervisor rejects Ready (`E_READY_REJECTED`) if any shard is behind what
   * the incumbent sealed (`BeginInfo.sealedRevisionPerShard`), so a successor that
   * opened stale data never commits.
   */
  advertisedRevisionPerShard: RevisionMap;
}
/** `snapshotState()`: a cheap, read-only view for diagnostics (logs, tests); nothing is decided on it. */
export interface StateSnapshot {
  shardCount: number;
  /** Connections open right now (what drain would have to finish). */
  openConns: number;
  /** The newest acknowledged revision per shard (see Readiness.advertisedRevisionPerShard). */
  lastRevisionPerShard: RevisionMap;
}
export type SealProgress = (done: number, total: number) => void;

/**
 * What an app implements so baton can hand it off. Every method may be async or may
 * block the main thread for a long time: baton's worker thread keeps heartbeating
 * and keeps the data-dir lock fresh meanwhile.
 */
export interface Drainable {
  /** Stop accepting; let in-flight requests finish; close keep-alive connections cleanly by `deadline`. */
  drain(deadline: Date): DrainResult | Promise<DrainResult>;
  /** Make all data durable and stop writing. baton releases the data-dir lock after this returns. */
  seal(progress: SealProgress): SealResult | Promise<SealResult>;
  /** Undo drain/seal: re-open for writes (re-reading anything a successor wrote) and accept again. */
  resumeAfterAbort(): void | Promise<void>;
  snapshotState(): StateSnapshot | Promise<StateSnapshot>;
  readiness(): Readiness | Promise<Readiness>;
}

/** What `begin()` resolves with: the data-dir lock is held by this process now. */
export interface BeginInfo {
  role: 'cold' | 'successor' | 'standalone';
  handoffId: string;
  /** Revisions the previous incumbent sealed ({} on cold start or after it died). */
  sealedRevisionPerShard: RevisionMap;
  /** Its dataDirFingerprint (empty when there was no seal). */
  sealedFingerprint: Uint8Array;
  /** 0 on cold start. */
  incumbentPid: number;
}

export interface BatonAppOptions {
  drainable: Drainable;
  /** Opaque build identifier sent in Hello/Ready (defaults to BATON_BUILD_ID or ''). */
  buildId?: string;
  /** Data dir to lock; defaults to BATON_DATA_DIR. */
  dataDir?: string;
  /**
   * Start-up work to finish before this process says Hello: warming up code paths,
   * pre-reading data. It runs on the main thread while baton's worker thread boots (≈ 80
   * ms under load, BENCHMARKS.md), and Hello waits for it: a successor's Hello starts
   * the incumbent's drain, and from then on every millisecond delays writes. A failure
   * is logged and the start goes on (only speed is lost). Keep it well under the
   * supervisor's Hello timeout (5 s by default).
   */
  warmUp?: () => unknown;
  /** Called before the process exits (after Commit as the old incumbent, on Abort, after Shutdown). */
  onExit?: (reason: string) => void | Promise<void>;
  /** Called when the data-dir lock is lost to another process: stop writing. Default: exit(70). */
  onLockLost?: (err: Error) => void;
  log?: Logger;
  env?: NodeJS.ProcessEnv;
  /** Maintenance tasks by name (also: BatonApp.registerTask). */
  tasks?: Record<string, TaskHandler>;
  /** Health probes by name (also: BatonApp.registerProbe). */
  probes?: Record<string, ProbeFn>;
  /** The node finished starting (the supervisor says so after its start-up). Also the 'startup-completed' event. */
  onStartupCompleted?: (e: StartupCompletedEvent) => void;
  /** A graceful stop was requested; drain and seal follow. Also the 'shutdown-requested' event. */
  onShutdownRequested?: (e: ShutdownRequestedEvent) => void;
  /** The stop is done (drained, sealed, lock released); the process exits next. Also the 'shutdown-completed' event. */
  onShutdownCompleted?: (e: ShutdownCompletedEvent) => void;
}

// ---- Maintenance tasks, health probes, lifecycle (issue 8) ---------------------------

export type Urgency = 'low' | 'normal' | 'high' | 'critical';
/** Reports progress of a running task: units done, units in all (0: unknown), task-specific counters. */
export type TaskProgress = (done: number, total: number, counters?: Record<string, number>) => void;
export interface TaskInfo {
  jobId: string;
  params: Record<string, unknown>;
  urgency: Urgency;
  reason: string;
}
/**
 * A maintenance task: runs in the app's main thread (heartbeats go on in baton's worker
 * meanwhile). Returns a JSON-serialisable summary. `signal` aborts on JobCancel or when
 * the supervisor connection is lost: stop soon and throw (the job is then CANCELLED).
 */
export type TaskHandler = (progress: TaskProgress, signal: AbortSignal, job: TaskInfo) => unknown;

export type ProbeStatus = 'OK' | 'DEGRADED' | 'CRITICAL';
export interface ProbeResult {
  status: ProbeStatus;
  message: string;
  details?: Record<string, unknown>;
}
/** A health probe: must answer within 10 ms (sync or async); one that throws or overruns is reported UNKNOWN. */
export type ProbeFn = () => ProbeResult | Promise<ProbeResult>;
export interface ProbeReportEntry {
  name: string;
  status: ProbeStatus | 'UNKNOWN';
  message: string;
  details?: Record<string, unknown>;
  ms: number;
}
export const PROBE_BUDGET_MS = 10;

export interface StartupCompletedEvent {
  durationMs: number;
  components: string[];
}
/** Why the app is stopped (Shutdown.reason): `graceful` (a supervisor's own stop, e.g. to re-bind after a takeover), `signal` (baton run got SIGTERM/SIGINT), `admin` (`baton stop`), `error` (baton gives up: the app crash-looped). */
export type ShutdownReason = 'graceful' | 'signal' | 'admin' | 'error';
export interface ShutdownRequestedEvent {
  reason: ShutdownReason;
  timeoutMs: number;
}
export interface ShutdownCompletedEvent {
  reason: ShutdownReason;
  /** From Shutdown to the lock's release. */
  durationMs: number;
}

/** Pass it unchanged to `net.Server#listen` (it may carry the socket's handle besides `fd`). */
export interface ListenTarget {
  readonly fd: number;
}

/** An extra copy of a listener (`BatonApp.acceptCopies`): listen on `target`, or `close()` it unused. */
export interface AcceptCopy {
  readonly target: ListenTarget;
  close(): void;
}

/** How long a resume waits for the supervisor's listener copies before falling back to a spare. */
const LISTENER_COPIES_TIMEOUT_MS = 2_000;

export interface InheritedListener {
  fd: number;
  address: string;
}

/**
 * An app's handle on baton. Typical use:
 *
 *   const baton = await startBaton({ drainable: app });
 *   const begin = await baton.begin();      // data-dir lock held
 *   await app.open(baton.dataDir, begin);   // verify begin.sealedRevisionPerShard
 *   app.listen(baton.listeners);            // server.listen({ fd })
 *   await baton.ready();                    // Ready sent; resolves once committed
 */
export class BatonApp {
  readonly role: Role;
  readonly listeners: Map<string, InheritedListener>;
  readonly dataDir: string;
  private readonly worker: Worker;
  private readonly rpc: Rpc;
  private beginWaiter = deferred<BeginInfo>();
  private readinessReply = deferred<Readiness>();
  private committed = deferred<void>();
  private readonly log: Logger;
  private readonly spares: number;
  private readonly copiesUsed = new Map<string, number>();
  /** Fresh listener copies fetched for the resume in progress (listenTarget takes them). */
  private freshCopies = new Map<string, ListenerHandle>();
  private readonly tasks = new Map<string, TaskHandler>();
  private readonly probes = new Map<string, ProbeFn>();
  private readonly runningTasks = new Map<string, AbortController>();
  private readonly events = new EventEmitter();
  /** Standalone (not under baton): the listeners asked for are bound from BATON_LISTEN (standalone.ts). */
  private readonly standalone: StandaloneListeners | undefined;

  constructor(
    private readonly opts: BatonAppOptions,
    info: RoleInfo,
  ) {
    for (const [name, fn] of Object.entries(opts.tasks ?? {})) this.registerTask(name, fn);
    for (const [name, fn] of Object.entries(opts.probes ?? {})) this.registerProbe(name, fn);
    const env = opts.env ?? process.env;
    this.role = info.role;
    this.log = opts.log ?? createLogger('baton-app', { role: info.role });
    const dataDir = opts.dataDir ?? info.dataDir;
    if (!dataDir) throw new BatonError('E_BAD_ENV', 'no data dir: pass dataDir or set BATON_DATA_DIR');
    this.dataDir = dataDir;
    this.listeners = info.role === 'standalone' ? new Map() : inheritedListeners(env);
    this.standalone = info.role === 'standalone' ? new StandaloneListeners(env, this.log) : undefined;
    this.spares = Number(env[ENV.listenSpares] ?? '0');
    this.worker = new Worker(new URL('./agent-worker.js', import.meta.url), {
      workerData: {
        role: info.role,
        controlFd: info.controlFd,
        controlPath: info.controlPath,
        dataDir,
        buildId: opts.buildId ?? env.BATON_BUILD_ID ?? '',
        crash: crashConfigFromEnv(env),
        livenessMs: Number(env.BATON_LIVENESS_MS ?? LIVENESS_TIMEOUT_MS),
      },
    });
    this.worker.on('error', (err) => {
      this.log.fatal({ event: 'app.worker_error', err: errorMessage(err) }, 'baton worker failed');
      process.exit(70);
    });
    const d = opts.drainable;
    const warmedUp = this.warmUp();
    this.rpc = new Rpc(this.worker, {
      warmedUp: () => warmedUp,
      drain: ({ deadlineMs }: { deadlineMs: number }) => d.drain(new Date(deadlineMs)),
      seal: () => d.seal((done, total) => this.rpc.notify('sealProgress', { done, total })),
      resume: () => this.resumeAfterAbort(),
      snapshot: () => d.snapshotState(),
      begin: (begin: BeginInfo) => {
        this.beginWaiter.resolve(begin);
        return this.readinessReply.promise;
      },
      committed: () => this.committed.resolve(),
      exit: async ({ code, reason }: { code: number; reason: string }) => {
        try {
          await opts.onExit?.(reason);
        } finally {
          process.exit(code);
        }
      },
      runTask: (arg: { jobId: string; task: string; urgency: Urgency; reason: string; params: Record<string, unknown> }) => this.runTask(arg),
      cancelTask: ({ jobId, reason }: { jobId: string; reason: string }) => {
        this.runningTasks.get(jobId)?.abort(new BatonError('E_CANCELLED', `cancelled: ${reason}`));
      },
      probes: () => this.runProbes(),
      lifecycle: (e: { event: string } & Record<string, unknown>) => {
        if (e.event === 'startup-completed') {
          const ev: StartupCompletedEvent = { durationMs: Number(e.durationMs), components: (e.components as string[]) ?? [] };
          this.safely('onStartupCompleted', () => opts.onStartupCompleted?.(ev));
          this.safely('startup-completed', () => this.events.emit('startup-completed', ev));
        } else if (e.event === 'shutdown-requested') {
          const ev: ShutdownRequestedEvent = { reason: e.reason as ShutdownReason, timeoutMs: Number(e.timeoutMs) };
          for (const c of this.runningTasks.values()) c.abort(new BatonError('E_CANCELLED', `cancelled: shutdown requested (${ev.reason})`));
          this.safely('onShutdownRequested', () => opts.onShutdownRequested?.(ev));
          this.safely('shutdown-requested', () => this.events.emit('shutdown-requested', ev));
        } else if (e.event === 'shutdown-completed') {
          const ev: ShutdownCompletedEvent = { reason: e.reason as ShutdownReason, durationMs: Number(e.durationMs) };
          this.safely('onShutdownCompleted', () => opts.onShutdownCompleted?.(ev));
          this.safely('shutdown-completed', () => this.events.emit('shutdown-completed', ev));
        }
      },
      lockLost: ({ message }: { message: string }) => {
        const err = new BatonError('E_LOCK_LOST', message);
        this.log.fatal({ event: 'app.lock_lost', err: message }, 'data-dir lock lost: stop writing');
        if (opts.onLockLost) opts.onLockLost(err);
        else process.exit(70);
      },
    });
  }

  /** Runs opts.warmUp after the worker started booting; settles when it is done, never rejects. */
  private async warmUp(): Promise<void> {
    if (!this.opts.warmUp) return;
    const t0 = performance.now();
    try {
      await this.opts.warmUp();
      this.log.debug({ event: 'app.warmed_up', ms: Math.round(performance.now() - t0) }, 'warm-up done');
    } catch (err) {
      this.log.warn({ event: 'app.warm_up_failed', ms: Math.round(performance.now() - t0), err: errorMessage(err) }, 'warm-up failed; starting anyway (only speed is lost)');
    }
  }

  /**
   * The fd to `listen({ fd })` on for listener `name`. The first call gives the
   * listener itself; each later call (after you closed the previous one to drain and
   * are resuming after an abort) gives a spare copy of the same socket, of which there
   * are `handoff.listenerSpares`. Prefer listenTarget, which has no such limit.
   * Standalone (not started by baton), the listener is bound now from BATON_LISTEN
   * (standalone.ts).
   */
  listenFd(name: string): number {
    if (this.standalone) return this.standalone.listenFd(name, (n, fd, address) => this.listeners.set(n, { fd, address }));
    const names = [...this.listeners.keys()];
    const index = names.indexOf(name);
    if (index < 0) throw new BatonError('E_NO_LISTENER', `no inherited listener named ${name} (have: ${names.join(', ') || 'none'})`);
    const copy = this.copiesUsed.get(name) ?? 0;
    if (copy > this.spares) {
      throw new BatonError(
        'E_NO_SPARE_LISTENER',
        `listener ${name}: all ${this.spares} spare copies are used (one per re-listen after an aborted handoff); ` +
          'this process cannot listen again (use baton.listenTarget(name), which gets a fresh copy from the supervisor for every resume, or raise handoff.listenerSpares in the baton config)',
      );
    }
    this.copiesUsed.set(name, copy + 1);
    return this.listeners.get(name)!.fd + copy * names.length;
  }

  /**
   * What to pass, unchanged, to `server.listen(target)` for listener `name`: the
   * inherited listener the first time; after an aborted handoff (you closed it to drain
   * and now resume), a fresh copy the supervisor sent over the IPC channel for this
   * resume, so there is no limit on how often this process can serve again. Without
   * that channel (a process adopted by a restarted supervisor, or started through a
   * wrapper that took the channel, like `npm start`), the next spare copy, as listenFd.
   */
  listenTarget(name: string): ListenTarget {
    const fresh = (this.copiesUsed.get(name) ?? 0) > 0 ? this.freshCopies.get(name) : undefined;
    if (!fresh) return { fd: this.listenFd(name) };
    this.freshCopies.delete(name);
    return handleTarget(fresh);
  }

  /**
   * `count` extra copies of every listener, each to listen on beside the listener itself
   * for a short while: Node (libuv ≥ 1.45) accepts one connection per listening handle
   * per event-loop turn, so a process that starts serving while many connections wait in
   * the backlog (a successor after the drain) takes them `count + 1` at a time instead of
   * one. HttpListeners does this by itself (`acceptFanOut`). The copies come from the
   * supervisor over the IPC channel: without one (standalone, or started through a
   * wrapper that took it) the map is empty. Close each copy's server once a loop turn
   * takes fewer connections than there are handles (the backlog is taken).
   */
  async acceptCopies(count: number, timeoutMs = LISTENER_COPIES_TIMEOUT_MS): Promise<Map<string, AcceptCopy[]>> {
    if (this.standalone || this.listeners.size === 0 || count < 1) return new Map();
    const sets = await fetchListenerCopySets(timeoutMs, Math.min(count, MAX_LISTENER_COPIES_PER_REQUEST));
    return new Map([...sets].map(([name, handles]) => [name, handles.map((h) => ({ target: handleTarget(h), close: () => h.close() }))]));
  }

  /** The resume RPC: fetch fresh listener copies, let the app re-listen, close the copies it did not take. */
  private async resumeAfterAbort(): Promise<void> {
    if (this.listeners.size > 0) this.freshCopies = await fetchListenerCopies(LISTENER_COPIES_TIMEOUT_MS);
    try {
      await this.opts.drainable.resumeAfterAbort();
    } finally {
      for (const unused of this.freshCopies.values()) unused.close();
      this.freshCopies.clear();
    }
  }

  /** Lifecycle notices: 'startup-completed' (node started), 'shutdown-requested' (a graceful stop begins), 'shutdown-completed' (it is done; exit follows). */
  on(event: 'startup-completed', fn: (e: StartupCompletedEvent) => void): this;
  on(event: 'shutdown-requested', fn: (e: ShutdownRequestedEvent) => void): this;
  on(event: 'shutdown-completed', fn: (e: ShutdownCompletedEvent) => void): this;
  on(event: string, fn: (e: never) => void): this {
    this.events.on(event, fn as (e: unknown) => void);
    return this;
  }

  /** Registers (or replaces) a maintenance task type the supervisor can run (`baton maintenance run NAME`). */
  registerTask(name: string, handler: TaskHandler): this {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) throw new BatonError('E_BAD_TASK', `task name ${JSON.stringify(name)}: expected 1-64 of [A-Za-z0-9._-], starting with a letter or digit`);
    this.tasks.set(name, handler);
    return this;
  }

  /** Registers (or replaces) a health probe; it must answer in < 10 ms. */
  registerProbe(name: string, fn: ProbeFn): this {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) throw new BatonError('E_BAD_PROBE', `probe name ${JSON.stringify(name)}: expected 1-64 of [A-Za-z0-9._-], starting with a letter or digit`);
    this.probes.set(name, fn);
    return this;
  }

  /** Runs one task for the worker; never throws (the outcome says what happened). */
  private async runTask(arg: { jobId: string; task: string; urgency: Urgency; reason: string; params: Record<string, unknown> }): Promise<{ outcome: 'succeeded' | 'failed' | 'cancelled'; result: string; error?: string }> {
    const handler = this.tasks.get(arg.task);
    if (!handler) {
      return { outcome: 'failed', result: 'null', error: `no task named ${JSON.stringify(arg.task)} in this app (registered: ${[...this.tasks.keys()].join(', ') || 'none'})` };
    }
    const controller = new AbortController();
    this.runningTasks.set(arg.jobId, controller);
    const progress: TaskProgress = (done, total, counters = {}) => {
      this.rpc.notify('jobProgress', { jobId: arg.jobId, done, total, counters });
    };
    try {
      const value = await handler(progress, controller.signal, { jobId: arg.jobId, params: arg.params, urgency: arg.urgency, reason: arg.reason });
      let result: string;
      try {
        result = JSON.stringify(value ?? null, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) ?? 'null';
      } catch (err) {
        result = JSON.stringify({ unserialisable: errorMessage(err) });
      }
      if (result.length > 256 * 1024) result = JSON.stringify({ truncated: true, bytes: result.length });
      return { outcome: 'succeeded', result };
    } catch (err) {
      return { outcome: controller.signal.aborted ? 'cancelled' : 'failed', result: 'null', error: errorMessage(err) };
    } finally {
      this.runningTasks.delete(arg.jobId);
    }
  }

  /**
   * Runs every probe with the 10 ms budget: a synchronous probe is timed (it cannot be
   * interrupted; past the budget it is UNKNOWN), an async one is raced against the budget.
   */
  async runProbes(): Promise<ProbeReportEntry[]> {
    const entries = [...this.probes.entries()].map(async ([name, fn]): Promise<ProbeReportEntry> => {
      const t0 = performance.now();
      const ms = (): number => Math.round((performance.now() - t0) * 100) / 100;
      const unknown = (message: string): ProbeReportEntry => ({ name, status: 'UNKNOWN', message, ms: ms() });
      try {
        const answer = fn();
        let value: unknown = answer;
        if (answer && typeof (answer as Promise<unknown>).then === 'function') {
          let timer: NodeJS.Timeout | undefined;
          const late = Symbol('late');
          const left = Math.max(0, PROBE_BUDGET_MS - (performance.now() - t0));
          value = await Promise.race([answer, new Promise<symbol>((r) => (timer = setTimeout(() => r(late), left)))]).finally(() => clearTimeout(timer));
          if (value === late) return unknown(`no answer within ${PROBE_BUDGET_MS} ms`);
        }
        const took = ms();
        if (took > PROBE_BUDGET_MS) return unknown(`answered in ${took} ms (limit ${PROBE_BUDGET_MS} ms)`);
        const r = value as Partial<ProbeResult> | undefined;
        if (!r || !['OK', 'DEGRADED', 'CRITICAL'].includes(r.status as string)) return unknown(`bad answer: expected {status: OK|DEGRADED|CRITICAL, message}, got ${safeJson(r)}`);
        const entry: ProbeReportEntry = { name, status: r.status as ProbeStatus, message: String(r.message ?? ''), ms: took };
        if (r.details && typeof r.details === 'object') {
          const text = safeJson(r.details);
          entry.details = text.length <= 4096 ? (JSON.parse(text) as Record<string, unknown>) : { truncated: true, bytes: text.length };
        }
        return entry;
      } catch (err) {
        return unknown(`threw: ${errorMessage(err)}`);
      }
    });
    return Promise.all(entries);
  }

  private safely(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error({ event: 'app.callback_failed', callback: what, err: errorMessage(err) }, `${what} threw`);
    }
  }

  /** Resolves when this process holds the data-dir lock and may open the data. */
  begin(): Promise<BeginInfo> {
    return this.beginWaiter.promise;
  }

  /** Reports readiness (from the Drainable) and resolves once this process is the committed incumbent. */
  async ready(): Promise<void> {
    this.readinessReply.resolve(await this.opts.drainable.readiness());
    await this.committed.promise;
  }
}

/** Detects the role from the environment and starts baton's worker thread for this app. */
export async function startBaton(opts: BatonAppOptions): Promise<BatonApp> {
  const info = detectRole(opts.env ?? process.env);
  return new BatonApp(opts, info);
}

function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x)) ?? 'undefined';
  } catch (err) {
    return `(unserialisable: ${errorMessage(err)})`;
  }
}

/** What to pass to `net.Server#listen` for a handle that came over IPC. */
function handleTarget(handle: ListenerHandle): ListenTarget {
  // net.Server#listen serves an object's `_handle` as it is (one owner of the fd);
  // `{ fd }` would wrap the same fd a second time.
  const target = { fd: handle.fd };
  Object.defineProperty(target, '_handle', { value: handle, enumerable: false });
  return target;
}

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
