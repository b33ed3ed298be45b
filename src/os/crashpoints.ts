import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * Named crash points: places in each role where a test can make the process die
 * hard (SIGKILL to itself, after writing a marker file) to prove the invariants
 * hold whatever dies when.
 *
 * Selection: env `BATON_CRASH_POINT=<name>` in the process that should crash, and
 * `BATON_CRASH_MARKER_DIR=<dir>` for the marker `<dir>/<name>.<pid>`. The supervisor
 * never passes its own BATON_CRASH_* variables on to the apps it spawns; a crash in
 * a successor is requested explicitly per handoff (HandoffSpec.successorCrashPoint).
 */
export const CRASH_POINTS = {
  // Supervisor (the process running Supervisor)
  'supervisor.after_spawn': 'successor spawned, before its Hello',
  'supervisor.after_successor_hello': 'successor said Hello, incumbent not yet contacted',
  'supervisor.after_prepare': 'PrepareHandoff sent to the incumbent',
  'supervisor.after_drained': 'incumbent reported Drained',
  'supervisor.after_seal_request': 'SealRequest sent',
  'supervisor.after_seal_complete': 'incumbent sealed and released the lock',
  'supervisor.after_begin': 'Begin sent to the successor',
  'supervisor.after_ready': 'successor sent Ready, checks not yet run',
  'supervisor.after_commit_incumbent': 'incumbent answered Committed, successor not yet told',
  'supervisor.after_commit_successor': 'Commit sent to the successor',
  'supervisor.during_abort': 'abort started: successor being killed, incumbent not yet resumed',
  // Incumbent (the serving app, inside its baton worker)
  'incumbent.on_hello': 'supervisor connected; before Hello is sent',
  'incumbent.on_prepare': 'PrepareHandoff received, drain not started',
  'incumbent.mid_drain': 'drain running in the app',
  'incumbent.after_drained': 'Drained sent',
  'incumbent.on_seal_request': 'SealRequest received, seal not started',
  'incumbent.mid_seal': 'seal running in the app',
  'incumbent.after_seal_before_release': 'seal done, lock still held',
  'incumbent.after_lock_release': 'lock released, SealComplete not yet sent',
  'incumbent.after_seal_complete': 'SealComplete sent',
  'incumbent.on_commit': 'Commit received, Committed not yet sent',
  'incumbent.after_committed': 'Committed sent, before exit',
  'incumbent.on_resume': 'ResumeAfterAbort received, before re-taking the lock',
  'incumbent.after_relock': 'lock re-taken during resume, app not yet resumed',
  // Successor (the new app, inside its baton worker)
  'successor.before_hello': 'started, before Hello',
  'successor.after_hello': 'Hello sent',
  'successor.on_begin': 'Begin received, lock not taken',
  'successor.after_lock': 'lock taken, data not yet opened',
  'successor.before_ready': 'app opened the data and serves, Ready not yet sent',
  'successor.after_ready': 'Ready sent',
  'successor.on_commit': 'Commit received, Committed not yet sent',
  'successor.after_committed': 'Committed sent, control path not yet bound',
  'successor.after_bind_control': 'control path bound: it is the incumbent now',
  'successor.on_abort': 'Abort received',
} as const;

/**
 * The supervisor's own handover (`baton upgrade --self`), kept apart from CRASH_POINTS:
 * those are dealt out over app handoffs (the chaos runner, the recovery suite), these are
 * reached only during a self-upgrade. The new supervisor inherits the old one's env, so
 * one selection reaches whichever side the point is on.
 */
export const HANDOVER_CRASH_POINTS = {
  'handover.new_after_prepared': 'new supervisor said prepared, the old one not yet quiet',
  'handover.new_after_go': 'new supervisor told go (the old one is quiet), before it serves',
  'handover.old_after_go': 'old supervisor sent go, before the new one said serving',
} as const;

export type CrashPoint = keyof typeof CRASH_POINTS;
export type HandoverCrashPoint = keyof typeof HANDOVER_CRASH_POINTS;
export const CRASH_POINT_NAMES = Object.keys(CRASH_POINTS) as CrashPoint[];

export const CRASH_ENV = 'BATON_CRASH_POINT';
export const CRASH_MARKER_ENV = 'BATON_CRASH_MARKER_DIR';

/**
 * `BATON_STALL_POINTS=<name>:<ms>[,<name>:<ms>...]`: instead of dying, the thread stops
 * dead for that long at each named point (a synchronous sleep: no timer, no I/O, as if
 * the scheduler had taken the CPU away). For races that need one side to be slow at an
 * exact place (test/chained.test.ts). Unlike BATON_CRASH_POINT it is passed on to the
 * apps a supervisor spawns (point names say which role stalls).
 */
export const STALL_ENV = 'BATON_STALL_POINTS';

/** Crash-point settings in effect for this process (read once; workers get them passed in). */
export interface CrashConfig {
  point?: string | undefined;
  markerDir?: string | undefined;
  /** Point name → ms to stall there. */
  stalls?: Record<string, number> | undefined;
}

export function crashConfigFromEnv(env: NodeJS.ProcessEnv = process.env): CrashConfig {
  const stalls: Record<string, number> = {};
  for (const item of (env[STALL_ENV] ?? '').split(',')) {
    const m = /^([a-z_.]+):(\d+)$/.exec(item.trim());
    if (m) stalls[m[1]!] = Number(m[2]);
  }
  return { point: env[CRASH_ENV], markerDir: env[CRASH_MARKER_ENV], stalls };
}

/** Dies here (SIGKILL to the whole process, from any thread) if `name` is the selected point; stalls if asked to. */
export function crashPoint(config: CrashConfig, name: CrashPoint | HandoverCrashPoint): void {
  const stallMs = config.stalls?.[name];
  if (stallMs) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, stallMs);
  if (config.point !== name) return;
  if (config.markerDir) {
    mkdirSync(config.markerDir, { recursive: true });
    writeFileSync(path.join(config.markerDir, `${name}.${process.pid}`), `${Date.now()}\n`);
  }
  process.kill(process.pid, 'SIGKILL');
}

/** Env without any crash-point selection, for children that must not inherit ours. */
export function withoutCrashEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const copy = { ...env };
  delete copy[CRASH_ENV];
  delete copy[CRASH_MARKER_ENV];
  return copy;
}
