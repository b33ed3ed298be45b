import type { BuildRecord } from '../supervisor/builds.js';
import type { JobRecord } from './jobs.js';
import type { PreviousShutdown } from './lifecycle.js';

/**
 * How the `baton` commands print what the admin API answers: the reply shapes they read
 * (status, health, schedules) and one-line renderings of jobs, builds, probes, progress,
 * the previous shutdown and schedule runs.
 */

/** `build abc123 (node /srv/releases/v7/main.js), generation 7`. */
export function buildLine(b: { generation: number; buildId: string; resolved: string[] }): string {
  return `${b.buildId ? `build ${b.buildId}` : 'build'} (${b.resolved.join(' ')}), generation ${b.generation}`;
}

export interface ProbeLine {
  name: string;
  status: string;
  message: string;
  source?: string;
  stale?: boolean;
  ms?: number;
}

export interface HealthBody {
  status: string;
  probes: ProbeLine[];
  supervisor: { generation: number; appPid: number | null; lease: string | null; lock: { pid: number; alive: boolean; since: string } | null; lastHandoff: JobRecord | null };
}

export interface Progress {
  done: number;
  total: number;
  counters?: Record<string, number>;
}

export function progressText(p: Progress): string {
  const pct = p.total > 0 ? ` (${Math.floor((100 * p.done) / p.total)}%)` : '';
  const counters = Object.entries(p.counters ?? {}).map(([k, n]) => `${k}=${n}`).join(' ');
  return `${p.done}/${p.total || '?'}${pct}${counters ? ` ${counters}` : ''}`;
}

export function probeLine(p: ProbeLine): string {
  return `${p.status.padEnd(9)}${(p.source === 'supervisor' ? `${p.name} (supervisor)` : p.name).padEnd(24)}${p.message}${p.ms !== undefined ? ` [${p.ms} ms]` : ''}${p.stale ? ' (stale: a handoff is running)' : ''}`;
}

export function maintenanceLine(j: JobRecord): string {
  const m = j.maintenance;
  const progress = m?.progress ? ` ${progressText(m.progress)}` : '';
  return `${m?.task ?? '?'} ${j.state} ${j.id.slice(0, 8)}${progress}${j.durationMs !== undefined ? ` in ${j.durationMs} ms` : ''}${j.reason ? `: ${j.reason}` : ''}`;
}

export interface StatusBody {
  name: string;
  supervisor: { pid: number; uptimeS: number; stateDir: string };
  app: { pid: number; generation: number } | null;
  /** How the app is run: the handoff protocol, or socket activation (an unmodified server). */
  mode?: 'protocol' | 'socket-activation';
  health: { status: string; detail: string; ms?: number };
  phase: string;
  phaseElapsedMs?: number;
  stopping: boolean;
  listeners: { name: string; address: string }[];
  lock: { pid: number; alive: boolean; since: string } | null;
  lastHandoff: JobRecord | null;
  lastMaintenance?: JobRecord | null;
  runningJob?: JobRecord | null;
  report?: { status: string; probes: ProbeLine[] };
  admin?: { socket: string; tcp: string | null };
  previousShutdown?: PreviousShutdown | null;
  serving?: boolean;
  restartScheduled?: boolean;
  builds?: { current: BuildRecord | null; lastGood: BuildRecord | null };
}

/** The serving build and its verdict: baking (until when), good, or bad (why). */
export function buildState(b: BuildRecord): string {
  const verdict = b.state === 'baking' ? `baking until ${b.bakeEndsAt ?? '?'}` : b.state === 'bad' ? `BAD: ${b.reason ?? 'no reason recorded'}` : 'good';
  return `${buildLine(b)}: ${verdict}`;
}

/** The previous `baton run` on this state dir: how it was asked to stop and how long the stop took. */
export function shutdownLine(p: PreviousShutdown | null): string {
  if (!p) return 'none recorded (first run on this state dir)';
  const why = p.reason ? `${p.reason}${p.signal ? ` ${p.signal}` : ''}` : 'no stop requested';
  if (!p.completed) return `did not complete: supervisor pid ${p.pid} ended without recording its shutdown (${why}${p.requestedAt ? ` at ${p.requestedAt}` : ''})`;
  return `completed in ${p.durationMs} ms at ${p.completedAt} (${why}; supervisor pid ${p.pid}, exit ${p.exitCode ?? '-'})`;
}

export interface ScheduleBody {
  name: string;
  cron: string;
  window?: { startHourUtc: number; endHourUtc: number };
  tasks: { task: string; urgency?: string; params?: unknown }[];
  haltOnFailure: boolean;
  enabled: boolean;
  nextFireAt: string | null;
  running: boolean;
  lastRun: ScheduleRun | null;
}

export interface ScheduleRun {
  trigger: string;
  startedAt: string;
  endedAt?: string;
  outcome: string;
  reason?: string;
  jobs: { id: string; task: string; state: string }[];
}

export function scheduleSummary(s: ScheduleBody): string {
  const window = s.window ? ` in ${pad2(s.window.startHourUtc)}-${pad2(s.window.endHourUtc)} UTC` : '';
  const next = s.enabled ? `next fire ${s.nextFireAt ?? '-'}` : 'disabled';
  return `"${s.cron}"${window}: ${s.tasks.map((t) => t.task).join(' -> ')}${s.haltOnFailure ? '' : ' (no halt on failure)'}; ${next}`;
}

export function runLine(r: ScheduleRun): string {
  return `${r.outcome} (${r.trigger}) at ${r.startedAt}${r.endedAt ? ` in ${Date.parse(r.endedAt) - Date.parse(r.startedAt)} ms` : ''}${r.reason ? `: ${r.reason}` : ''}`;
}

export function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [header, ...rows]) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
}

export function phaseLine(j: JobRecord): string {
  return (j.handoff?.phases ?? []).map((p) => `${p.phase} ${p.ms}ms`).join(', ');
}

export function jobLine(j: JobRecord): string {
  const h = j.handoff;
  const pids = h ? ` (pid ${h.oldPid ?? 'none'} -> ${h.newPid ?? 'none'}, generation ${h.generation})` : '';
  return `${j.state} ${j.trigger} ${j.id.slice(0, 8)} at ${j.endedAt ?? j.createdAt}${j.durationMs !== undefined ? ` in ${j.durationMs} ms` : ''}${pids}${j.reason ? `: ${j.reason}` : ''}`;
}

export function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return ms < 10_000 ? `${(ms / 1000).toFixed(1)}s` : `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}
