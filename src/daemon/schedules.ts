import { writeFileAtomic } from '../os/atomic-file.js';
import { readStateFile } from '../os/secure-fs.js';
import { ConfigError, errorMessage } from '../os/errors.js';
import { parseCron } from './cron.js';
import { invalid, ScheduleError } from './schedule-error.js';
import { MAX_PARAMS_BYTES, MAX_PARAMS_DEPTH, valueDepth } from '../os/json-limits.js';
import type { MaintenanceSummary } from './jobs.js';
import type { Logger } from '../os/log.js';

/**
 * Schedules (issue 8): named, cron-timed sequences of maintenance tasks, optionally
 * confined to a maintenance window. One concept, three parts, none of which knows the
 * daemon:
 *
 * - cron: a classic 5-field expression, evaluated in UTC (`parseCron`, `nextFire`; cron.ts);
 * - maintenance windows, the Schedule record, its validation and its store
 *   (`<stateDir>/schedules.json`, rewritten atomically; the store is the source of
 *   truth): this file;
 * - the Scheduler: timers (injectable clock), windows, halt-on-failure, no overlap.
 *   It runs tasks through a callback (the daemon's runMaintenance; scheduler.ts).
 *
 * Semantics (also ARCHITECTURE.md "Schedules"): a fire outside the window records ONE
 * SKIPPED job and runs nothing; with haltOnFailure a task that ends FAILED, CANCELLED
 * or SKIPPED stops the run and every remaining task is recorded SKIPPED
 * (`halted: <task> <state>`); a fire while the previous run of the same schedule still
 * runs is SKIPPED; fires missed while the supervisor was down (or asleep) are not
 * replayed: after a wake-up the next fire is computed from "now".
 */

// ---- maintenance windows -------------------------------------------------------------

/**
 * Hours (UTC) in which a schedule may run: [startHourUtc, endHourUtc), wrapping
 * midnight when start > end (22→4 is 22:00-03:59). start == end is rejected: it would
 * be ambiguous (empty or all day?); no window means all day.
 */
export interface MaintenanceWindow {
  startHourUtc: number;
  endHourUtc: number;
}

export function inWindow(w: MaintenanceWindow, epochMs: number): boolean {
  const h = new Date(epochMs).getUTCHours();
  return w.startHourUtc < w.endHourUtc ? h >= w.startHourUtc && h < w.endHourUtc : h >= w.startHourUtc || h < w.endHourUtc;
}

/** "22-04" */
export function windowText(w: MaintenanceWindow): string {
  return `${String(w.startHourUtc).padStart(2, '0')}-${String(w.endHourUtc).padStart(2, '0')}`;
}

/** "22-4" (CLI form) → window; errors name `field`. */
export function parseWindowText(text: string, field = 'window'): MaintenanceWindow {
  const m = /^(\d{1,2})-(\d{1,2})$/.exec(text.trim());
  if (!m) throw invalid(field, `expected START-END hours in UTC, e.g. 22-4 (got ${JSON.stringify(text)})`);
  return validateWindow({ startHourUtc: Number(m[1]), endHourUtc: Number(m[2]) }, field);
}

function validateWindow(raw: unknown, field: string): MaintenanceWindow {
  if (!isObject(raw)) throw invalid(field, `expected {"startHourUtc": 0-23, "endHourUtc": 0-23} (got ${JSON.stringify(raw)})`);
  for (const k of Object.keys(raw)) if (k !== 'startHourUtc' && k !== 'endHourUtc') throw invalid(`${field}.${k}`, 'unknown field; known: startHourUtc, endHourUtc');
  for (const k of ['startHourUtc', 'endHourUtc'] as const) {
    const v = raw[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 23) throw invalid(`${field}.${k}`, `expected an integer hour 0-23 (got ${JSON.stringify(v)})`);
  }
  const w = { startHourUtc: raw.startHourUtc as number, endHourUtc: raw.endHourUtc as number };
  if (w.startHourUtc === w.endHourUtc) {
    throw invalid(field, `startHourUtc and endHourUtc are both ${w.startHourUtc}: an empty or all-day window is ambiguous (the end is exclusive; omit "window" to run at any hour)`);
  }
  return w;
}

// ---- the schedule record -------------------------------------------------------------

export const URGENCY_LEVELS = ['low', 'normal', 'high', 'critical'] as const;
export type TaskUrgency = MaintenanceSummary['urgency'];

export interface ScheduleTask {
  task: string;
  params?: Record<string, unknown> | undefined;
  /** Default normal. */
  urgency?: TaskUrgency | undefined;
}

/** What a client sends (create / replace) and what PATCH merges into. */
export interface ScheduleSpec {
  name: string;
  cron: string;
  window?: MaintenanceWindow | undefined;
  tasks: ScheduleTask[];
  haltOnFailure: boolean;
  enabled: boolean;
}

export interface Schedule extends ScheduleSpec {
  /** ISO times. */
  createdAt: string;
  updatedAt: string;
}

export const MAX_SCHEDULES = 256;
export const MAX_TASKS = 32;
const NAME_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const TASK_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const SPEC_KEYS = ['name', 'cron', 'window', 'tasks', 'haltOnFailure', 'enabled'];
/** Read-only fields a client may send back unchanged (e.g. `get --json` edited and replaced): ignored. */
const READ_ONLY_KEYS = ['createdAt', 'updatedAt', 'nextFireAt', 'lastRun', 'running'];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function validateName(v: unknown, field = 'name'): string {
  if (typeof v !== 'string' || !NAME_RE.test(v)) throw invalid(field, `expected a slug: 1-63 of [a-z0-9_-], starting with a letter or digit (got ${JSON.stringify(v)})`);
  return v;
}

function validateTasks(raw: unknown, field: string): ScheduleTask[] {
  if (!Array.isArray(raw) || raw.length === 0) throw invalid(field, `expected a non-empty array of {"task", "params"?, "urgency"?} (got ${JSON.stringify(raw)})`);
  if (raw.length > MAX_TASKS) throw invalid(field, `at most ${MAX_TASKS} tasks (got ${raw.length})`);
  return raw.map((t: unknown, i) => {
    const f = `${field}[${i}]`;
    if (!isObject(t)) throw invalid(f, `expected {"task", "params"?, "urgency"?} (got ${JSON.stringify(t)})`);
    for (const k of Object.keys(t)) if (!['task', 'params', 'urgency'].includes(k)) throw invalid(`${f}.${k}`, 'unknown field; known: task, params, urgency');
    if (typeof t.task !== 'string' || !TASK_RE.test(t.task)) throw invalid(`${f}.task`, `expected a task name: 1-64 of [A-Za-z0-9._-] (got ${JSON.stringify(t.task)})`);
    const out: ScheduleTask = { task: t.task };
    if (t.params !== undefined) {
      if (!isObject(t.params)) throw invalid(`${f}.params`, `expected a JSON object (got ${JSON.stringify(t.params)})`);
      if (valueDepth(t.params, MAX_PARAMS_DEPTH) > MAX_PARAMS_DEPTH) throw invalid(`${f}.params`, `nested at most ${MAX_PARAMS_DEPTH} levels deep`);
      if (JSON.stringify(t.params).length > MAX_PARAMS_BYTES) throw invalid(`${f}.params`, `at most ${MAX_PARAMS_BYTES} bytes of JSON`);
      out.params = t.params;
    }
    if (t.urgency !== undefined) {
      if (typeof t.urgency !== 'string' || !URGENCY_LEVELS.includes(t.urgency as TaskUrgency)) throw invalid(`${f}.urgency`, `expected one of ${URGENCY_LEVELS.join(', ')} (got ${JSON.stringify(t.urgency)})`);
      out.urgency = t.urgency as TaskUrgency;
    }
    return out;
  });
}

/**
 * Validates a client's schedule (create / replace): unknown fields are errors, read-only
 * ones (createdAt, updatedAt, nextFireAt, lastRun, running) are ignored; haltOnFailure
 * and enabled default to true. Errors name the path under `field` (e.g. `tasks[1].task`).
 */
export function validateScheduleSpec(raw: unknown, field = ''): ScheduleSpec {
  const at = (k: string): string => (field ? `${field}.${k}` : k);
  if (!isObject(raw)) throw invalid(field || 'schedule', `expected a JSON object with ${SPEC_KEYS.join(', ')} (got ${JSON.stringify(raw)})`);
  for (const k of Object.keys(raw)) {
    if (!SPEC_KEYS.includes(k) && !READ_ONLY_KEYS.includes(k)) throw invalid(at(k), `unknown field; known: ${SPEC_KEYS.join(', ')}`);
  }
  const name = validateName(raw.name, at('name'));
  if (typeof raw.cron !== 'string') throw invalid(at('cron'), `expected a cron expression string, e.g. "0 3 * * *" (got ${JSON.stringify(raw.cron)})`);
  parseCron(raw.cron, at('cron'));
  const spec: ScheduleSpec = {
    name,
    cron: raw.cron.trim(),
    tasks: validateTasks(raw.tasks, at('tasks')),
    haltOnFailure: bool(raw.haltOnFailure, at('haltOnFailure')) ?? true,
    enabled: bool(raw.enabled, at('enabled')) ?? true,
  };
  // null = no window (lets PATCH remove one).
  if (raw.window !== undefined && raw.window !== null) spec.window = validateWindow(raw.window, at('window'));
  return spec;
}

function bool(v: unknown, field: string): boolean | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw invalid(field, `expected true or false (got ${JSON.stringify(v)})`);
  return v;
}

/** A stored schedule (the file): a spec plus its ISO createdAt/updatedAt. */
export function validateSchedule(raw: unknown, field = ''): Schedule {
  const spec = validateScheduleSpec(raw, field);
  const r = raw as Record<string, unknown>;
  const at = (k: string): string => (field ? `${field}.${k}` : k);
  const time = (k: 'createdAt' | 'updatedAt'): string => {
    const v = r[k];
    if (typeof v !== 'string' || Number.isNaN(Date.parse(v))) throw invalid(at(k), `expected an ISO time (got ${JSON.stringify(v)})`);
    return v;
  };
  return { ...spec, createdAt: time('createdAt'), updatedAt: time('updatedAt') };
}

/** The fields PATCH may change. */
export const PATCHABLE = ['cron', 'window', 'tasks', 'haltOnFailure', 'enabled'] as const;

/** JSON form (stable key order; no undefined). */
export function scheduleToJson(s: Schedule): Schedule {
  return {
    name: s.name,
    cron: s.cron,
    ...(s.window && { window: { startHourUtc: s.window.startHourUtc, endHourUtc: s.window.endHourUtc } }),
    tasks: s.tasks.map((t) => ({ task: t.task, ...(t.params && { params: t.params }), ...(t.urgency && { urgency: t.urgency }) })),
    haltOnFailure: s.haltOnFailure,
    enabled: s.enabled,
    createdAt: s.createdAt,
    updatedAt: s.updatedAt,
  };
}

// ---- the store ----------------------------------------------------------------------

interface FileFormat {
  version: 1;
  schedules: Schedule[];
}

/**
 * `<stateDir>/schedules.json`, rewritten atomically on every change (temp + fsync +
 * rename + dir fsync). Unlike the job history, a file that is unreadable or invalid
 * is NOT set aside: `load` throws E_SCHEDULES_FILE naming the file and the field, and
 * the supervisor refuses to start (exit 1), because silently dropping schedules would
 * silently stop maintenance. Mutations are serialized; one whose write fails changes
 * nothing and rejects.
 */
export class ScheduleStore {
  private schedules: Schedule[] = [];
  private chain: Promise<unknown> = Promise.resolve();
  private readonly listeners: ((name: string) => void)[] = [];
  /** Whether `load` found a file (initial schedules from the config are seeded only when not). */
  fileExisted = false;

  constructor(
    readonly filePath: string,
    private readonly log?: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  async load(): Promise<void> {
    let text: string;
    try {
      const read = await readStateFile(this.filePath, 16 * 1024 * 1024);
      if (read.kind === 'missing') return;
      if (read.kind === 'untrusted') throw this.fileError(`cannot be trusted: it ${read.reason}`);
      text = read.text;
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw this.fileError(`cannot read it (${errorMessage(err)})`);
    }
    this.fileExisted = true;
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw this.fileError(`not valid JSON (${errorMessage(err)})`);
    }
    if (!isObject(data) || data.version !== 1 || !Array.isArray(data.schedules)) throw this.fileError('expected {"version": 1, "schedules": [...]}');
    const seen = new Set<string>();
    const out: Schedule[] = [];
    for (const [i, raw] of (data.schedules as unknown[]).entries()) {
      let s: Schedule;
      try {
        s = validateSchedule(raw, `schedules[${i}]`);
      } catch (err) {
        throw this.fileError(errorMessage(err), (err as ScheduleError).details?.field as string | undefined);
      }
      if (seen.has(s.name)) throw this.fileError(`schedules[${i}].name: duplicate name ${JSON.stringify(s.name)}`, `schedules[${i}].name`);
      seen.add(s.name);
      out.push(s);
    }
    this.schedules = out;
    this.log?.info({ event: 'schedules.loaded', path: this.filePath, count: out.length }, `${out.length} schedule(s) loaded`);
  }

  private fileError(why: string, field?: string): ScheduleError {
    return new ScheduleError('E_SCHEDULES_FILE', `schedules file ${this.filePath}: ${why}; fix or remove the file`, { path: this.filePath, ...(field && { field }) });
  }

  /** Called with the schedule's name after every change (the Scheduler re-arms). */
  onChange(fn: (name: string) => void): void {
    this.listeners.push(fn);
  }

  list(): Schedule[] {
    return this.schedules.map(scheduleToJson);
  }

  get(name: string): Schedule | undefined {
    const s = this.schedules.find((x) => x.name === name);
    return s && scheduleToJson(s);
  }

  create(raw: unknown): Promise<Schedule> {
    return this.mutate(() => {
      const spec = validateScheduleSpec(raw);
      if (this.schedules.some((s) => s.name === spec.name)) throw new ScheduleError('E_SCHEDULE_EXISTS', `a schedule named ${JSON.stringify(spec.name)} already exists; replace or patch it`, { field: 'name' });
      if (this.schedules.length >= MAX_SCHEDULES) throw new ScheduleError('E_SCHEDULE_INVALID', `at most ${MAX_SCHEDULES} schedules`);
      const at = new Date(this.now()).toISOString();
      const s: Schedule = { ...spec, createdAt: at, updatedAt: at };
      return { next: [...this.schedules, s], result: s, name: s.name };
    });
  }

  /** Replaces a whole schedule (the body's name, if given, must be the same). */
  replace(name: string, raw: unknown): Promise<Schedule> {
    return this.mutate(() => {
      const old = this.require(name);
      const body = isObject(raw) && raw.name === undefined ? { ...raw, name } : raw;
      const spec = validateScheduleSpec(body);
      if (spec.name !== name) throw invalid('name', `${JSON.stringify(spec.name)} differs from the schedule being replaced (${JSON.stringify(name)}); names cannot change`);
      const s: Schedule = { ...spec, createdAt: old.createdAt, updatedAt: new Date(this.now()).toISOString() };
      return { next: this.schedules.map((x) => (x.name === name ? s : x)), result: s, name };
    });
  }

  /** Merges the given top-level fields (cron, window (null removes it), tasks, haltOnFailure, enabled), then re-validates. */
  patch(name: string, raw: unknown): Promise<Schedule> {
    return this.mutate(() => {
      const old = this.require(name);
      if (!isObject(raw)) throw invalid('schedule', `expected a JSON object with some of ${PATCHABLE.join(', ')}`);
      for (const k of Object.keys(raw)) {
        if (k === 'name' && raw.name === name) continue;
        if (!(PATCHABLE as readonly string[]).includes(k)) throw invalid(k, k === 'name' ? 'names cannot change (create a new schedule and delete this one)' : `cannot be patched; patchable: ${PATCHABLE.join(', ')}`);
      }
      const merged: Record<string, unknown> = { ...scheduleToJson(old), ...raw };
      const spec = validateScheduleSpec(merged);
      const s: Schedule = { ...spec, createdAt: old.createdAt, updatedAt: new Date(this.now()).toISOString() };
      return { next: this.schedules.map((x) => (x.name === name ? s : x)), result: s, name };
    });
  }

  delete(name: string): Promise<Schedule> {
    return this.mutate(() => {
      const old = this.require(name);
      return { next: this.schedules.filter((x) => x.name !== name), result: old, name };
    });
  }

  /**
   * Initial schedules (the config's "schedules"), written as the file's first content.
   * Only into a store whose file did not exist: afterwards the file is the truth (a
   * schedule deleted over the API does not come back at the next start).
   */
  async seed(specs: readonly ScheduleSpec[]): Promise<void> {
    if (this.fileExisted || specs.length === 0) return;
    for (const spec of specs) await this.create(spec);
    this.log?.info({ event: 'schedules.seeded', path: this.filePath, names: specs.map((x) => x.name) }, `${specs.length} initial schedule(s) from the config`);
  }

  setEnabled(name: string, enabled: boolean): Promise<Schedule> {
    return this.patch(name, { enabled });
  }

  private require(name: string): Schedule {
    const s = this.schedules.find((x) => x.name === name);
    if (!s) throw new ScheduleError('E_NO_SUCH_SCHEDULE', `no schedule named ${JSON.stringify(name)}`, { field: 'name' });
    return s;
  }

  /** One change at a time: compute, write the file, then (only then) switch to it. */
  private mutate(change: () => { next: Schedule[]; result: Schedule; name: string }): Promise<Schedule> {
    const run = this.chain.then(async () => {
      const { next, result, name } = change();
      const text = `${JSON.stringify({ version: 1, schedules: next.map(scheduleToJson) } satisfies FileFormat, null, 2)}\n`;
      await writeFileAtomic(this.filePath, text);
      this.schedules = next;
      for (const fn of this.listeners) fn(name);
      return scheduleToJson(result);
    });
    this.chain = run.catch(() => undefined);
    return run;
  }
}

