/**
 * The test harness of `baton/testing`: the user's app under a real Supervisor (in
 * this process) in a temp dir, on a fresh 127.0.0.1 listener; handoffs, crash
 * injection, signals at a phase, the end-state invariants, and a clean-up that works
 * whatever state the test left behind.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CRASH_POINTS, type CrashPoint } from '../os/crashpoints.js';
import { BatonError, errorMessage } from '../os/errors.js';
import { crashEnv } from '../supervisor/generation.js';
import { bindListener, parseListenAddress, type HeldListener } from '../os/listeners.js';
import { lockHolder } from '../os/lock.js';
import { createLogger } from '../os/log.js';
import { Supervisor } from '../supervisor/supervisor.js';
import type { HandoffSpec, RestartPolicy, Timeouts } from '../supervisor/options.js';
import type { HandoffResult } from '../supervisor/results.js';
import { type SupervisorPhase } from '../supervisor/phases.js';
import { killTagged, killTaggedSync, newTag, TEST_TAG_ENV, taggedProcesses, taggedProcessesSync, type TaggedProcess } from './procs.js';

// ---------------------------------------------------------------- talking to the app

/**
 * How the kit talks to your app over HTTP. The defaults fit an app with
 * `GET /healthz` → JSON `{"pid": <number>, ...}` and `PUT`/`GET /kv/:key` (baton's
 * fixtures/primitive and fixtures/kv); override what differs.
 */
export interface AppProbe {
  /**
   * Pid of the process that answers a fresh connection, or undefined if the app cannot
   * tell (then only "it answers" is checked). Throws if nobody answers within `timeoutMs`.
   */
  pid(url: string, timeoutMs: number): Promise<number | undefined>;
  /** The HTTP request that writes `value` under `key` (a 2xx answer = acknowledged). */
  writeRequest(key: string, value: string): ProbeRequest;
  /** Reads `key` back: its value, or undefined when it is missing. */
  read(url: string, key: string): Promise<string | undefined>;
}

export interface ProbeRequest {
  method: string;
  /** Path and query, e.g. `/kv/a`. */
  path: string;
  body: string;
  headers?: Record<string, string>;
}

export const DEFAULT_PROBE: AppProbe = {
  async pid(url, timeoutMs) {
    const r = await httpRequest(url, { method: 'GET', path: '/healthz', body: '' }, timeoutMs);
    if (r.status < 200 || r.status > 299) throw new Error(`GET /healthz answered ${r.status}`);
    const pid = (JSON.parse(r.body) as { pid?: unknown }).pid;
    return typeof pid === 'number' ? pid : undefined;
  },
  writeRequest: (key, value) => ({ method: 'PUT', path: `/kv/${encodeURIComponent(key)}`, body: value }),
  async read(url, key) {
    const r = await httpRequest(url, { method: 'GET', path: `/kv/${encodeURIComponent(key)}`, body: '' });
    if (r.status === 404) return undefined;
    if (r.status !== 200) throw new Error(`GET /kv/${key} answered ${r.status}`);
    try {
      const v = (JSON.parse(r.body) as { value?: unknown }).value;
      return typeof v === 'string' ? v : r.body;
    } catch {
      return r.body;
    }
  },
};

/** One request on a fresh connection (no keep-alive agent). */
export function httpRequest(url: string, req: ProbeRequest, timeoutMs = 10_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const r = http.request(new URL(req.path, url), { method: req.method, headers: req.headers, agent: false, timeout: timeoutMs }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
      res.on('error', reject);
    });
    r.on('timeout', () => r.destroy(Object.assign(new Error(`${req.method} ${req.path}: no answer in ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    r.on('error', reject);
    r.end(req.body);
  });
}

// ---------------------------------------------------------------- the harness

export interface HarnessOptions {
  /** Your app's command, e.g. `['node', 'dist/server.js']`; started fresh for every generation. */
  command: readonly string[];
  /** Extra env for every app process (on top of this process's env). */
  env?: Record<string, string>;
  /** Supervisor timeouts (hello, liveness, drain grace, deadline, ...). */
  timeouts?: Partial<Timeouts>;
  /** Restart policy for an incumbent that dies outside a handoff; default first retry after 100 ms. */
  restart?: Partial<RestartPolicy>;
  /** The listener: a TCP socket on 127.0.0.1 with a free port (the only kind so far). */
  listen?: 'tcp';
  /** How to reach the app (see AppProbe); defaults fit GET /healthz → {"pid"}. */
  probe?: Partial<AppProbe>;
  /** App stdout (stderr is always inherited); default 'ignore'. */
  appStdout?: 'inherit' | 'ignore';
  /** Supervisor log level (pino JSON on stderr); default BATON_LOG_LEVEL, else 'error'. */
  logLevel?: string;
  /** Cold-start generation 1 in createHarness (default true). */
  start?: boolean;
}

export type Role = 'incumbent' | 'successor';
export type Signal = 'SIGKILL' | 'SIGSTOP' | 'SIGCONT' | 'SIGTERM';

export interface CrashHandoff {
  /** The handoff the crash happened in. */
  result: HandoffResult;
  /** The process that died at the point. */
  crashedPid: number;
  /** Incumbent points: the committed handoff that started an incumbent carrying the point. */
  arming?: HandoffResult;
}

export interface InvariantOptions {
  /** Reads back every write your test saw acknowledged; returns the keys that are missing or wrong. */
  readBack?: (url: string) => Promise<string[]>;
  /** How long the world may take to settle (a restart, a promotion) before a violation counts; default 20 s. */
  timeoutMs?: number;
}

export interface InvariantReport {
  /** The one live lock holder, answering on the listener. */
  pid: number;
}

/** checkInvariants' error: `violations` lists every invariant that did not hold. */
export class InvariantViolation extends Error {
  constructor(readonly violations: string[]) {
    super(`baton invariants violated:\n${violations.map((v) => `  - ${v}`).join('\n')}`);
    this.name = 'InvariantViolation';
  }
}

/** A serving app answers a fresh connection in milliseconds; nobody serving means the backlog holds it forever. */
export const PROBE_TIMEOUT_MS = 3_000;

/** Points only reached when the handoff aborts: the kit provokes the abort (see handoffWithCrash). */
const NEEDS_ABORT_AFTER_SEAL = new Set<CrashPoint>(['incumbent.on_resume', 'incumbent.after_relock']);

const open = new Set<Harness>();
let exitHookInstalled = false;

/** Worst case (the test runner exits without calling close): kill what is left, remove the dirs. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const h of open) h.closeSync();
  });
}

export class Harness {
  /** Temp dir holding data/, state/ and markers/; removed by close(). */
  readonly dir: string;
  readonly dataDir: string;
  readonly stateDir: string;
  /** Crash-point marker files `<point>.<pid>`. */
  readonly markerDir: string;
  /** BATON_TEST_TAG value every app process of this harness carries. */
  readonly tag = newTag();
  readonly listener: HeldListener;
  readonly supervisor: Supervisor;
  readonly probe: AppProbe;
  private readonly stopped = new Set<number>();
  private phasesSeen = new Set<SupervisorPhase>();
  private closing: Promise<{ leftovers: number[] }> | undefined;

  constructor(readonly options: HarnessOptions) {
    if (options.listen !== undefined && options.listen !== 'tcp') throw new BatonError('E_UNSUPPORTED', `listen: ${String(options.listen)} (only 'tcp')`);
    this.probe = { ...DEFAULT_PROBE, ...options.probe };
    this.dir = mkdtempSync(path.join(tmpdir(), 'baton-testing-'));
    this.dataDir = path.join(this.dir, 'data');
    this.stateDir = path.join(this.dir, 'state');
    this.markerDir = path.join(this.dir, 'markers');
    try {
      this.listener = bindListener(parseListenAddress('tcp://127.0.0.1:0'));
    } catch (err) {
      rmSync(this.dir, { recursive: true, force: true });
      throw err;
    }
    const log = createLogger('baton-testing', { tag: this.tag });
    log.level = options.logLevel ?? process.env.BATON_LOG_LEVEL ?? 'error';
    this.supervisor = new Supervisor({
      command: options.command,
      listeners: [this.listener],
      dataDir: this.dataDir,
      stateDir: this.stateDir,
      // Apps log at 'error' unless asked: the crashes and aborts a test provokes make warnings expected.
      env: { ...process.env, BATON_LOG_LEVEL: process.env.BATON_LOG_LEVEL ?? 'error', ...options.env, [TEST_TAG_ENV]: this.tag },
      timeouts: options.timeouts,
      restart: { baseMs: 100, ...options.restart },
      appStdout: options.appStdout ?? 'ignore',
      log,
      crash: {}, // a supervisor crash point would kill the test process itself
    });
    this.supervisor.on('handoff-start', () => (this.phasesSeen = new Set()));
    this.supervisor.on('phase', (phase: SupervisorPhase) => this.phasesSeen.add(phase));
    open.add(this);
    installExitHook();
  }

  /** The listener's port on 127.0.0.1. */
  get port(): number {
    return Number(this.listener.address.slice(this.listener.address.lastIndexOf(':') + 1));
  }

  /** `http://127.0.0.1:<port>` */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Cold start of generation 1 (createHarness does it unless `start: false`). */
  async start(spec: HandoffSpec = {}): Promise<HandoffResult> {
    return this.supervisor.start(spec);
  }

  /** One handoff to a fresh process of `command` (resolves with committed or aborted). */
  handoff(spec: HandoffSpec = {}): Promise<HandoffResult> {
    return this.supervisor.performHandoff(spec);
  }

  /**
   * A handoff in which the process of the point's role SIGKILLs itself at `point`.
   * - `successor.*`: the new process carries the point.
   * - `incumbent.*`: the serving process must carry it from its start, so the kit
   *   first hands off (committed) to a process carrying it, then runs the handoff.
   * - Points only reached on an abort are given one: `incumbent.on_resume` and
   *   `incumbent.after_relock` get a successor that dies on Begin (after the seal),
   *   `successor.on_abort` a deadline that has already passed.
   * - `supervisor.*` points kill the process running the Supervisor — here, your test
   *   runner — so they are refused; baton's own suite covers them (test/recovery.test.ts).
   * Resolves once the crash marker exists (a committed successor may reach its point
   * just after the handoff returns); rejects if the point was never reached.
   */
  async handoffWithCrash(point: CrashPoint, spec: HandoffSpec = {}, crashWaitMs = 10_000): Promise<CrashHandoff> {
    if (!(point in CRASH_POINTS)) throw new BatonError('E_UNKNOWN_CRASH_POINT', `no crash point ${String(point)}`);
    if (point.startsWith('supervisor.')) {
      throw new BatonError(
        'E_UNSUPPORTED',
        `${point}: supervisor crash points kill the process that runs the Supervisor (this test); baton's own suite covers them (test/recovery.test.ts)`,
      );
    }
    // Markers of earlier crash handoffs stay in markerDir: only one that appears after
    // this point counts (#18: an older marker was reported for three handoffs in a row).
    const before = new Set(this.markerFiles());
    let arming: HandoffResult | undefined;
    let run: HandoffSpec;
    if (point.startsWith('incumbent.')) {
      arming = await this.handoff({ successorEnv: crashEnv(point, this.markerDir) });
      if (arming.outcome !== 'committed') {
        throw new BatonError('E_ARMING_FAILED', `could not start an incumbent carrying ${point}: handoff aborted (${arming.code}: ${arming.reason})`);
      }
      run = NEEDS_ABORT_AFTER_SEAL.has(point) ? { ...spec, successorCrashPoint: 'successor.on_begin', crashMarkerDir: this.markerDir } : spec;
    } else {
      run = { ...spec, successorCrashPoint: point, crashMarkerDir: this.markerDir, ...(point === 'successor.on_abort' && { deadlineMs: 1 }) };
    }
    const result = await this.handoff(run);
    const until = Date.now() + crashWaitMs;
    for (;;) {
      const pid = this.crashedAt(point, before);
      if (pid !== undefined) return { result, crashedPid: pid, ...(arming && { arming }) };
      if (Date.now() > until) {
        throw new BatonError('E_CRASH_NOT_REACHED', `crash point ${point} was not reached (handoff ${result.outcome}${result.reason ? `: ${result.reason}` : ''})`);
      }
      await sleep(20);
    }
  }

  /**
   * Pid of the process that crashed at `point` in this harness most recently, if any;
   * marker files named in `ignore` (e.g. a snapshot taken before a handoff) do not count.
   */
  crashedAt(point: CrashPoint, ignore: ReadonlySet<string> = new Set()): number | undefined {
    let latest: { pid: number; at: number } | undefined;
    for (const f of this.markerFiles()) {
      if (!f.startsWith(`${point}.`) || ignore.has(f)) continue;
      const pid = Number(f.slice(point.length + 1));
      if (!Number.isInteger(pid)) continue;
      // The marker holds the time of the crash (crashpoints.ts); a torn one sorts first.
      const at = Number(readFileSync(path.join(this.markerDir, f), 'utf8').trim()) || 0;
      if (!latest || at >= latest.at) latest = { pid, at };
    }
    return latest?.pid;
  }

  private markerFiles(): string[] {
    return existsSync(this.markerDir) ? readdirSync(this.markerDir) : [];
  }

  /**
   * Resolves when the running (or next) handoff is in `phase` — at once if the running
   * one already entered it. Rejects after `timeoutMs`.
   */
  waitForPhase(phase: SupervisorPhase, timeoutMs = 30_000): Promise<void> {
    if (this.supervisor.phase !== 'idle' && this.phasesSeen.has(phase)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onPhase = (p: SupervisorPhase): void => {
        if (p !== phase) return;
        clearTimeout(timer);
        this.supervisor.off('phase', onPhase);
        resolve();
      };
      const timer = setTimeout(() => {
        this.supervisor.off('phase', onPhase);
        reject(new BatonError('E_TIMEOUT', `phase ${phase} not reached in ${timeoutMs} ms (this handoff: ${[...this.phasesSeen].join(' → ') || 'none running'})`));
      }, timeoutMs);
      this.supervisor.on('phase', onPhase);
    });
  }

  /** Pids of the serving incumbent and, during a handoff, the successor. */
  pids(): { incumbent?: number; successor?: number } {
    const incumbent = this.supervisor.incumbent?.alive ? this.supervisor.incumbent.pid : undefined;
    const next = String(this.supervisor.generation + 1);
    // Direct children only: an app's own helpers inherit its env, generation included.
    const successor = taggedProcessesSync(this.tag).find((p) => p.ppid === process.pid && p.env.BATON_GENERATION === next && p.pid !== incumbent)?.pid;
    return { ...(incumbent !== undefined && { incumbent }), ...(successor !== undefined && { successor }) };
  }

  /**
   * Sends `signal` to the incumbent or the successor now; returns the pid. Processes
   * stopped with SIGSTOP are continued by close(). To hit a phase exactly, use
   * signalAt: phases can last only milliseconds, so a signal sent after
   * `await waitForPhase(...)` may land a phase or two later.
   */
  signal(role: Role, signal: Signal): number {
    const pid = this.pids()[role];
    if (pid === undefined) throw new BatonError('E_NO_PROCESS', `no ${role} is running${role === 'successor' ? ' (a successor exists during a handoff, from the hello phase on)' : ''}`);
    process.kill(pid, signal);
    if (signal === 'SIGSTOP') this.stopped.add(pid);
    if (signal === 'SIGCONT' || signal === 'SIGKILL') this.stopped.delete(pid);
    return pid;
  }

  /**
   * Sends `signal` to `role` the moment the running (or next) handoff enters `phase`
   * — synchronously, before the supervisor does anything in that phase. Resolves with
   * the pid; rejects if that role has no process then, or after `timeoutMs`.
   *
   *   const killed = h.signalAt('sealing', 'incumbent', 'SIGKILL');
   *   const result = await h.handoff();
   *   await killed;
   */
  signalAt(phase: SupervisorPhase, role: Role, signal: Signal, timeoutMs = 30_000): Promise<number> {
    return new Promise((resolve, reject) => {
      const onPhase = (p: SupervisorPhase): void => {
        if (p !== phase) return;
        done();
        try {
          resolve(this.signal(role, signal));
        } catch (err) {
          reject(err as Error);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new BatonError('E_TIMEOUT', `phase ${phase} not reached in ${timeoutMs} ms; ${signal} not sent`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.supervisor.off('phase', onPhase);
      };
      this.supervisor.on('phase', onPhase);
    });
  }

  /** Pid that answers on the listener now (probe.pid). */
  servingPid(timeoutMs = PROBE_TIMEOUT_MS): Promise<number | undefined> {
    return this.probe.pid(this.url, timeoutMs);
  }

  /**
   * The end state baton promises whatever happened (ARCHITECTURE.md invariants 1, 3, 7):
   * no handoff running; exactly one live process holds the data-dir lock, it is the
   * supervisor's incumbent, and it answers on the listener; every write the test saw
   * acknowledged reads back (`readBack`); no other process of this harness is alive
   * (the holder's own children excepted). Polls until all hold or `timeoutMs`, then
   * throws InvariantViolation listing every one that did not.
   */
  async checkInvariants(opts: InvariantOptions = {}): Promise<InvariantReport> {
    const until = Date.now() + (opts.timeoutMs ?? 20_000);
    let violations: string[];
    let holderPid: number | undefined;
    for (;;) {
      ({ violations, holderPid } = await this.worldViolations());
      if (violations.length === 0 || Date.now() > until) break;
      await sleep(100);
    }
    if (violations.length === 0 && opts.readBack) {
      try {
        const lost = await opts.readBack(this.url);
        if (lost.length > 0) violations.push(`${lost.length} acknowledged write(s) not readable: ${lost.slice(0, 20).join(', ')}${lost.length > 20 ? ', …' : ''}`);
      } catch (err) {
        violations.push(`read-back failed: ${errorMessage(err)}`);
      }
    }
    if (violations.length > 0) throw new InvariantViolation(violations);
    return { pid: holderPid! };
  }

  private async worldViolations(): Promise<{ violations: string[]; holderPid: number | undefined }> {
    const violations: string[] = [];
    if (this.supervisor.phase !== 'idle') violations.push(`a handoff is still running (phase ${this.supervisor.phase})`);
    const holder = await lockHolder(this.dataDir).catch((err: unknown) => {
      violations.push(`cannot read the data-dir lock: ${errorMessage(err)}`);
      return undefined;
    });
    const holderPid = holder?.alive ? holder.owner.pid : undefined;
    if (!holder) violations.push('nobody holds the data-dir lock');
    else if (!holder.alive) violations.push(`the data-dir lock is held by pid ${holder.owner.pid}, which is dead`);
    const incumbent = this.supervisor.incumbent;
    if (!incumbent?.alive) violations.push('the supervisor has no live incumbent');
    else if (holderPid !== undefined && incumbent.pid !== holderPid) violations.push(`the supervisor's incumbent is pid ${incumbent.pid}, but pid ${holderPid} holds the lock`);
    try {
      const answering = await this.probe.pid(this.url, PROBE_TIMEOUT_MS);
      if (answering !== undefined && holderPid !== undefined && answering !== holderPid) {
        violations.push(`pid ${answering} answers on the listener, but pid ${holderPid} holds the lock`);
      }
    } catch (err) {
      violations.push(`nobody answers on the listener (${this.url}): ${errorMessage(err)}`);
    }
    const procs: TaggedProcess[] = await taggedProcesses(this.tag);
    const keep = new Set<number>(holderPid === undefined ? [] : [holderPid]);
    // The holder's own children (helpers it spawned) are its business.
    for (let grew = true; grew; ) {
      grew = false;
      for (const p of procs) if (!keep.has(p.pid) && keep.has(p.ppid)) keep.add(p.pid), (grew = true);
    }
    const leftovers = procs.filter((p) => !keep.has(p.pid));
    if (leftovers.length > 0) {
      violations.push(`leftover process(es): ${leftovers.map((p) => `pid ${p.pid} (generation ${p.env.BATON_GENERATION ?? '?'}, ${p.env.BATON_ROLE ?? '?'})`).join(', ')}`);
    }
    return { violations, holderPid };
  }


  /**
   * Stops everything this harness started and removes its temp dir: continues stopped
   * processes, stops the supervisor (the app drains, seals and exits), kills whatever
   * carries the tag after 5 s, closes the listener. Safe after a failed or timed-out
   * test; idempotent. Resolves with the pids that had to be killed.
   */
  close(): Promise<{ leftovers: number[] }> {
    return (this.closing ??= this.doClose());
  }

  private async doClose(): Promise<{ leftovers: number[] }> {
    for (const pid of this.stopped) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // Gone.
      }
    }
    this.stopped.clear();
    await withTimeout(this.supervisor.stop(5_000), 15_000).catch(() => undefined);
    let leftovers: number[] = [];
    const until = Date.now() + 5_000;
    for (;;) {
      const live = await taggedProcesses(this.tag);
      if (live.length === 0) break;
      if (Date.now() > until) {
        leftovers = await killTagged(this.tag);
        await sleep(100);
        break;
      }
      await sleep(50);
    }
    this.listener.close();
    rmSync(this.dir, { recursive: true, force: true });
    open.delete(this);
    return { leftovers };
  }

  /** The 'exit' hook's clean-up: synchronous, no grace. */
  closeSync(): void {
    killTaggedSync(this.tag);
    try {
      this.listener.close();
    } catch {
      // Already closed.
    }
    rmSync(this.dir, { recursive: true, force: true });
    open.delete(this);
  }
}

/**
 * Starts your app under a real Supervisor on a fresh 127.0.0.1 listener in a temp dir
 * and cold-starts generation 1 (unless `start: false`). Always `await h.close()`
 * (afterEach / t.after): it cleans up also after a failed test.
 */
export async function createHarness(options: HarnessOptions): Promise<Harness> {
  const h = new Harness(options);
  if (options.start === false) return h;
  try {
    const cold = await h.start();
    if (cold.outcome !== 'committed') throw new BatonError('E_COLD_START_FAILED', `the app did not start under baton: ${cold.code}: ${cold.reason}`);
  } catch (err) {
    await h.close();
    throw err;
  }
  return h;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms).unref())]);
}
