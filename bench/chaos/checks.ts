/**
 * The chaos runner's judgements beyond "the world settled" (issue #18):
 *
 * - Every failed request is a violation unless the process that held its connection is
 *   one this run killed (SIGKILL, a crash point) or stopped (SIGSTOP): `attribute`.
 * - What a handoff reported must be true when its result arrives: `judgeResult` (a
 *   commit to a process that is dead or does not hold the lock is a false commit; an
 *   abort whose incumbent is gone with nothing restored is a false abort).
 * - Every crash point is reached in a long run: `Coverage`.
 */
import { CRASH_POINT_NAMES } from '../../src/os/crashpoints.js';
import type { FailureRecord } from '../lib/load-loops.js';

/** A process this run killed or stopped (or that died at a crash point it armed). */
export interface Casualty {
  pid: number;
  /** `SIGKILL`, `SIGSTOP`, or `crash:<point>`. */
  how: string;
  /** Date.now() of the signal, or the time the crash marker holds. */
  at: number;
  /** SIGSTOP: how long it stayed stopped. */
  stopMs?: number;
  step: number;
  /** Start of the step it happened in: a failure on its connection from then on is the step's doing. */
  stepStartedAt: number;
}

export class Casualties {
  private readonly byPid = new Map<number, Casualty[]>();
  count = 0;

  add(c: Casualty): void {
    const list = this.byPid.get(c.pid) ?? [];
    list.push(c);
    this.byPid.set(c.pid, list);
    this.count++;
  }

  of(pid: number): Casualty[] {
    return this.byPid.get(pid) ?? [];
  }

  /** The first time this run killed `pid` (SIGKILL or a crash point), if it did. */
  deathOf(pid: number): Casualty | undefined {
    return this.of(pid).find((c) => c.how !== 'SIGSTOP');
  }

  all(): Casualty[] {
    return [...this.byPid.values()].flat();
  }
}

export interface StepFailure extends FailureRecord {
  step: number;
}

export interface Attribution {
  casualty: Casualty;
  /** `pid`: the connection's server pid is the casualty; `window`: a connection that never answered failed right after a kill. */
  by: 'pid' | 'window';
}

export interface AttributionOptions {
  /** The load's request timeout: a SIGSTOP at least this long explains a timeout. */
  requestTimeoutMs: number;
  /** A connection that never answered and failed within this long after a kill is put down to it. */
  windowMs: number;
  alive: (pid: number) => boolean;
}

/** Clock slack between the marker/signal time and the client's record of the failure. */
const SLACK_MS = 20;

/** Which of this run's kills or stops explains a failed request, if one does. */
export function attribute(f: FailureRecord, casualties: Casualties, opts: AttributionOptions): Attribution | undefined {
  // The runner holds the listener for the whole run: a refused connect is never a kill's doing.
  if (f.kind === 'ECONNREFUSED') return undefined;
  const stopExplains = (c: Casualty): boolean =>
    // A stopped process the supervisor then gave up on and killed; or a stop past the client's patience.
    !opts.alive(c.pid) || (f.kind === 'ETIMEDOUT' && (c.stopMs ?? 0) >= opts.requestTimeoutMs);
  if (f.pid !== undefined) {
    for (const c of casualties.of(f.pid)) {
      if (f.at < c.stepStartedAt) continue; // failed before the step that hit it
      if (c.how === 'SIGSTOP' ? stopExplains(c) : true) return { casualty: c, by: 'pid' };
    }
    return undefined;
  }
  for (const c of casualties.all()) {
    if (c.how === 'SIGSTOP') {
      if (f.at >= c.at && f.at <= c.at + (c.stopMs ?? 0) + opts.windowMs && stopExplains(c)) return { casualty: c, by: 'window' };
    } else if (f.at >= c.at - SLACK_MS && f.at <= c.at + opts.windowMs) {
      return { casualty: c, by: 'window' };
    }
  }
  return undefined;
}

/** One line of the supervisor host's `result` event (HandoffResult). */
export interface HandoffResultLine {
  id: string;
  outcome: 'committed' | 'aborted';
  code?: string;
  reason?: string;
  promoted?: boolean;
  startedAt: number;
  endedAt: number;
  oldPid?: number;
  newPid?: number;
  restoredBy?: { outcome: string; pid?: number; lostIncumbent?: string };
}

/** What was true when a result line arrived. */
export interface Truth {
  at: number;
  alive: Map<number, boolean>;
  /** The data-dir lock's owner record (pid), and whether that process lives. */
  lockPid: number | undefined;
  lockAlive: boolean;
}

/**
 * `unjudged`: not a violation, but not judged true either (counted in the summary): a
 * commit to a process SIGKILLed shortly before the result's end, which may have sent its
 * Committed before the signal.
 */
export type ResultVerdict = { kind: 'false-commit' | 'false-abort' | 'unjudged'; message: string } | undefined;

/**
 * Crash points past the successor's Committed: it was the incumbent when it died there (the
 * restart policy's business), so its death does not make the commit false, however close to
 * the result's end its marker time is (seen: the same millisecond).
 */
export const AFTER_COMMITTED = new Set(['crash:successor.after_committed', 'crash:successor.after_bind_control']);
/**
 * A successor SIGKILLed at most this long before the result's end may have sent Committed
 * before the signal: the frame waits in the socket until the supervisor reads it, and the
 * result's end is stamped right after that read. Such a commit cannot be judged from
 * outside (reported as `unjudged`); the crash points settle the question exactly.
 */
export const COMMIT_READ_SLACK_MS = 50;

/** Is what the handoff reported true? A process this run killed after the result's end does not count against it. */
export function judgeResult(r: HandoffResultLine, truth: Truth, casualties: Casualties): ResultVerdict {
  const diedAfterEnd = (pid: number): boolean => {
    const d = casualties.deathOf(pid);
    return d !== undefined && d.at > r.endedAt;
  };
  const howDied = (pid: number): string => {
    const d = casualties.deathOf(pid);
    if (!d) return 'not killed by this run';
    return `${d.how} at step ${d.step}, ${r.endedAt - d.at} ms before the handoff ended`;
  };
  const lock = truth.lockPid === undefined ? 'nobody' : `${truth.lockPid}${truth.lockAlive ? '' : ' (dead)'}`;
  const dead = (pid: number): boolean => truth.alive.get(pid) === false && !diedAfterEnd(pid);
  const reported = `${r.outcome}${r.promoted ? ' (promoted)' : ''}${r.code ? ` ${r.code}` : ''}`;

  if (r.outcome === 'committed') {
    const n = r.newPid;
    if (n === undefined) return { kind: 'false-commit', message: `${reported} with no new pid` };
    if (dead(n)) {
      const d = casualties.deathOf(n);
      if (d && AFTER_COMMITTED.has(d.how)) return undefined;
      if (d && d.how === 'SIGKILL' && r.endedAt - d.at <= COMMIT_READ_SLACK_MS) {
        return { kind: 'unjudged', message: `${reported} to ${n}, SIGKILLed by this run at step ${d.step}, ${r.endedAt - d.at} ms before the handoff ended (it may have sent Committed first)` };
      }
      return { kind: 'false-commit', message: `${reported} to ${n}, which was dead when the result arrived (${howDied(n)}); lock holder ${lock}` };
    }
    if (truth.alive.get(n) && truth.lockPid !== n) return { kind: 'false-commit', message: `${reported} to ${n} (alive), but the lock holder is ${lock}` };
    return undefined;
  }
  // Restored by a cold start within the handoff: the old incumbent is gone (it died, could not
  // resume, or — E_SUCCESSOR_LOST, #18 — had answered Committed before the successor died, and
  // exits). True when the cold start committed and its process serves: alive, holding the lock.
  if (r.restoredBy) {
    const p = r.restoredBy.pid;
    if (r.restoredBy.outcome !== 'committed' || p === undefined) {
      return { kind: 'false-abort', message: `${reported}: nothing restored (the cold start ${r.restoredBy.outcome}); old incumbent ${r.oldPid ?? '-'}` };
    }
    if (dead(p)) return { kind: 'false-abort', message: `${reported}: restored by ${p}, which was dead when the result arrived (${howDied(p)}); lock holder ${lock}` };
    if (truth.alive.get(p) && truth.lockPid !== p) return { kind: 'false-abort', message: `${reported}: restored by ${p} (alive), but the lock holder is ${lock}` };
    return undefined;
  }
  const o = r.oldPid;
  if (o === undefined) return undefined; // nothing served before this handoff: nothing to restore
  if (dead(o)) return { kind: 'false-abort', message: `${reported}, but the incumbent ${o} is dead (${howDied(o)}) and nothing was restored; lock holder ${lock}` };
  if (truth.alive.get(o) && truth.lockPid !== o) return { kind: 'false-abort', message: `${reported}: incumbent ${o} serves on, but the lock holder is ${lock}` };
  return undefined;
}

/** Per crash point: how often the schedule dealt it and how often its marker was seen. */
export class Coverage {
  readonly dealt = new Map<string, number>(CRASH_POINT_NAMES.map((p) => [p, 0]));
  readonly reached = new Map<string, number>(CRASH_POINT_NAMES.map((p) => [p, 0]));

  deal(point: string): void {
    this.dealt.set(point, (this.dealt.get(point) ?? 0) + 1);
  }

  reach(point: string): void {
    this.reached.set(point, (this.reached.get(point) ?? 0) + 1);
  }

  /** Points never reached (of those dealt; with `all`, of every point). */
  missing(all: boolean): string[] {
    return CRASH_POINT_NAMES.filter((p) => (all || (this.dealt.get(p) ?? 0) > 0) && (this.reached.get(p) ?? 0) === 0);
  }

  table(): string[] {
    const width = Math.max(...CRASH_POINT_NAMES.map((p) => p.length));
    return CRASH_POINT_NAMES.map((p) => {
      const d = this.dealt.get(p) ?? 0;
      const r = this.reached.get(p) ?? 0;
      return `${p.padEnd(width)}  dealt ${String(d).padStart(3)}  reached ${String(r).padStart(3)}${r === 0 ? '  ← never reached' : ''}`;
    });
  }

  toJSON(): Record<string, { dealt: number; reached: number }> {
    return Object.fromEntries(CRASH_POINT_NAMES.map((p) => [p, { dealt: this.dealt.get(p) ?? 0, reached: this.reached.get(p) ?? 0 }]));
  }
}
