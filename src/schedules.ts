import { writeFileAtomic } from './atomic-file.js';
import { readStateFile } from './secure-fs.js';
import { ConfigError, errorMessage } from './errors.js';
import { MAX_PARAMS_BYTES, MAX_PARAMS_DEPTH, valueDepth } from './json-limits.js';
import type { JobRecord, MaintenanceSummary } from './jobs.js';
import type { Logger } from './log.js';
import { ScheduleRunLog, type RunSummary } from './schedule-runs.js';

export type { RunSummary } from './schedule-runs.js';

/**
 * Schedules (issue 8): named, cron-timed sequences of maintenance tasks, optionally
 * confined to a maintenance window. One concept, three parts, none of which knows the
 * daemon:
 *
 * - cron: a classic 5-field expression, evaluated in UTC (`parseCron`, `nextFire`);
 * - the Schedule record, its validation and its store (`<stateDir>/schedules.json`,
 *   rewritten atomically; the store is the source of truth);
 * - the Scheduler: timers (injectable clock), windows, halt-on-failure, no overlap.
 *   It runs tasks through a callback (the daemon's runMaintenance).
 *
 * Semantics (also ARCHITECTURE.md "Schedules"): a fire outside the window records ONE
 * SKIPPED job and runs nothing; with haltOnFailure a task that ends FAILED, CANCELLED
 * or SKIPPED stops the run and every remaining task is recorded SKIPPED
 * (`halted: <task> <state>`); a fire while the previous run of the same schedule still
 * runs is SKIPPED; fires missed while the supervisor was down (or asleep) are not
 * replayed: after a wake-up the next fire is computed from "now".
 */

// ---- errors ---------------------------------------------------------------------------

/**
 * A schedule problem. `code`: E_SCHEDULE_INVALID (bad field; 400), E_SCHEDULE_EXISTS
 * (409), E_NO_SUCH_SCHEDULE (404), E_SCHEDULES_FILE (the persisted file is unreadable
 * or invalid: the supervisor refuses to start). `details.field` names the path.
 */
export class ScheduleError extends ConfigError {}

function invalid(field: string, message: string): ScheduleError {
  return new ScheduleError('E_SCHEDULE_INVALID', `${field}: ${message}`, { field });
}

// ---- cron -------------------------------------------------------------------------------

interface FieldDef {
  name: string;
  min: number;
  max: number;
  names?: readonly string[];
}

const FIELDS: readonly FieldDef[] = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day-of-month', min: 1, max: 31 },
  { name: 'month', min: 1, max: 12, names: ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'] },
  // 0 and 7 are both Sunday.
  { name: 'day-of-week', min: 0, max: 7, names: ['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'] },
];

const ALIASES: Record<string, string> = {
  '@hourly': '0 * * * *',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@weekly': '0 0 * * 0',
  '@monthly': '0 0 1 * *',
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
};

/** A parsed expression: for each field, which values match (indexed by value). */
export interface CronSpec {
  readonly text: string;
  readonly minutes: readonly boolean[];
  readonly hours: readonly boolean[];
  readonly doms: readonly boolean[];
  readonly months: readonly boolean[];
  /** 0..6, Sunday = 0 (a 7 in the text is folded into 0). */
  readonly dows: readonly boolean[];
  /** Classic cron: a day field whose text starts with `*` is "unrestricted". */
  readonly domStar: boolean;
  readonly dowStar: boolean;
}

const DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]; // Feb: 29 in some year

/**
 * Parses a 5-field cron expression (minute hour day-of-month month day-of-week) or an
 * alias (@hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually). Per field:
 * `*`, `N`, `A-B`, `*∕S`, `A-B/S`, `N/S` (= N-max/S), comma lists of these; month and
 * day-of-week also take names (JAN, MON; any case). When day-of-month and day-of-week
 * are both restricted (neither starts with `*`), a day matches if EITHER does (classic
 * cron); otherwise both must. An expression that can never fire (`0 0 31 4 *`) is
 * rejected. `field` prefixes every error message (e.g. `schedules[2].cron`).
 */
export function parseCron(expr: string, field = 'cron'): CronSpec {
  if (typeof expr !== 'string') throw invalid(field, `expected a cron expression string (got ${JSON.stringify(expr)})`);
  const trimmed = expr.trim();
  let text = trimmed;
  if (trimmed.startsWith('@')) {
    const alias = ALIASES[trimmed.toLowerCase()];
    if (!alias) throw invalid(field, `unknown alias ${JSON.stringify(trimmed)}; expected one of ${Object.keys(ALIASES).join(', ')}`);
    text = alias;
  }
  const parts = text.split(/\s+/).filter((p) => p !== '');
  if (parts.length !== 5) {
    throw invalid(field, `expected 5 fields (minute hour day-of-month month day-of-week) or an @alias (got ${parts.length} in ${JSON.stringify(expr)})`);
  }
  const sets = parts.map((p, i) => parseField(p, FIELDS[i]!, field));
  const dows = sets[4]!.slice(0, 7);
  if (sets[4]![7]) dows[0] = true;
  const spec: CronSpec = {
    text: trimmed,
    minutes: sets[0]!,
    hours: sets[1]!,
    doms: sets[2]!,
    months: sets[3]!,
    dows,
    domStar: parts[2]!.startsWith('*'),
    dowStar: parts[4]!.startsWith('*'),
  };
  // Only a day-of-month restriction alone (no day-of-week to fall back on) can be impossible.
  if (spec.dowStar && !spec.domStar) {
    const possible = spec.months.some((on, m) => on && spec.doms.some((d, day) => d && day <= DAYS_IN_MONTH[m - 1]!));
    if (!possible) throw invalid(field, `day-of-month field ${JSON.stringify(parts[2])}: never matches in month field ${JSON.stringify(parts[3])} (no such day)`);
  }
  return spec;
}

function parseField(text: string, def: FieldDef, field: string): boolean[] {
  const set = new Array<boolean>(def.max + 1).fill(false);
  const bad = (token: string, why: string): ScheduleError => invalid(field, `${def.name} field ${JSON.stringify(token)}: ${why}`);
  const range = `${def.min}-${def.max}${def.names ? ` or a name (${def.names[0]}-${def.names[def.names.length - 1]})` : ''}`;
  const value = (s: string, token: string): number => {
    if (/^\d+$/.test(s)) {
      const n = Number(s);
      if (n < def.min || n > def.max) throw bad(token, `expected ${range}`);
      return n;
    }
    const i = def.names?.indexOf(s.toUpperCase()) ?? -1;
    if (i < 0) throw bad(token, `expected ${range}`);
    return i + (def.name === 'month' ? 1 : 0);
  };
  for (const token of text.split(',')) {
    if (token === '') throw bad(text, 'empty list element');
    const [base, stepText, extra] = token.split('/');
    if (extra !== undefined) throw bad(token, 'more than one "/"');
    let step = 1;
    if (stepText !== undefined) {
      if (!/^\d+$/.test(stepText) || Number(stepText) < 1 || Number(stepText) > def.max) throw bad(token, `step: expected an integer in 1-${def.max}`);
      step = Number(stepText);
    }
    let lo: number;
    let hi: number;
    if (base === '*') {
      lo = def.min;
      hi = def.max;
    } else if (base!.includes('-')) {
      const [a, b, more] = base!.split('-');
      if (more !== undefined || a === '' || b === '') throw bad(token, `expected a range A-B with A and B in ${range}`);
      lo = value(a!, token);
      hi = value(b!, token);
      if (lo > hi) throw bad(token, `range start ${lo} is after its end ${hi} (ranges do not wrap)`);
    } else {
      lo = value(base!, token);
      // "N/S" is N through the maximum in steps of S (as in most crons that accept it).
      hi = stepText !== undefined ? def.max : lo;
    }
    for (let v = lo; v <= hi; v += step) set[v] = true;
  }
  return set;
}

/** Does the minute containing `epochMs` match? (UTC) */
export function cronMatches(spec: CronSpec, epochMs: number): boolean {
  const d = new Date(epochMs);
  return (
    spec.minutes[d.getUTCMinutes()] === true &&
    spec.hours[d.getUTCHours()] === true &&
    spec.months[d.getUTCMonth() + 1] === true &&
    dayMatches(spec, d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate())
  );
}

function dayMatches(spec: CronSpec, y: number, m: number, d: number): boolean {
  const dom = spec.doms[d] === true;
  const dow = spec.dows[new Date(Date.UTC(y, m - 1, d)).getUTCDay()] === true;
  return spec.domStar || spec.dowStar ? dom && dow : dom || dow;
}

function daysIn(y: number, m: number): number {
  return new Date(Date.UTC(y, m, 0)).getUTCDate();
}

function nextSet(set: readonly boolean[], from: number): number | undefined {
  for (let i = from; i < set.length; i++) if (set[i]) return i;
  return undefined;
}

/** The Gregorian calendar (weekdays included) repeats every 400 years. */
const GREGORIAN_CYCLE_YEARS = 400;

/**
 * The start (epoch ms) of the first matching minute strictly after `afterEpochMs`.
 * Walks months, then days, then hours, then minutes, jumping over whole units that
 * cannot match (at most a few thousand steps even for `0 0 29 2 *`, never minute by
 * minute). Searches one whole 400-year Gregorian cycle, after which the calendar
 * repeats, so a spec that matches at all is found: with an AND of day fields
 * (day-of-month `*\/7` and weekday 4) the next match can be decades away (June 1 falls on a Thursday
 * after gaps of up to 11 years; Feb 29 on a given weekday up to 40). parseCron
 * already rejects what can never match, so the throw is a guard.
 */
export function nextFire(expr: string | CronSpec, afterEpochMs: number): number {
  const spec = typeof expr === 'string' ? parseCron(expr) : expr;
  const start = new Date(Math.floor(afterEpochMs / 60_000) * 60_000 + 60_000);
  let y = start.getUTCFullYear();
  let mo = start.getUTCMonth() + 1;
  let d = start.getUTCDate();
  let h = start.getUTCHours();
  let mi = start.getUTCMinutes();
  const lastYear = y + GREGORIAN_CYCLE_YEARS;
  const nextMonth = (): void => {
    mo++;
    if (mo > 12) {
      mo = 1;
      y++;
    }
    d = 1;
    h = 0;
    mi = 0;
  };
  while (y <= lastYear) {
    if (!spec.months[mo]) {
      nextMonth();
      continue;
    }
    if (d > daysIn(y, mo)) {
      nextMonth();
      continue;
    }
    if (!dayMatches(spec, y, mo, d)) {
      d++;
      h = 0;
      mi = 0;
      continue;
    }
    const nh = nextSet(spec.hours, h);
    if (nh === undefined) {
      d++;
      h = 0;
      mi = 0;
      continue;
    }
    if (nh !== h) {
      h = nh;
      mi = 0;
    }
    const nm = nextSet(spec.minutes, mi);
    if (nm === undefined) {
      h++;
      mi = 0;
      if (h > 23) {
        d++;
        h = 0;
      }
      continue;
    }
    return Date.UTC(y, mo - 1, d, h, nm);
  }
  throw new ScheduleError('E_SCHEDULE_INVALID', `cron ${JSON.stringify(spec.text)}: no matching minute within ${GREGORIAN_CYCLE_YEARS} years`);
}

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

// ---- the scheduler ------------------------------------------------------------------

export interface SchedulerOptions {
  store: ScheduleStore;
  /** Runs one task now (the daemon: runMaintenance with trigger 'schedule'). */
  runTask: (task: ScheduleTask, schedule: string) => Promise<JobRecord>;
  /** Records a task that was not run (SKIPPED job): outside the window, overlap, halted. */
  skipTask: (task: ScheduleTask, schedule: string, code: string, reason: string) => Promise<JobRecord>;
  /** Where last runs are kept (the daemon: `<stateDir>/schedule-runs.json`); default: in memory. */
  runs?: ScheduleRunLog | undefined;
  log?: Logger | undefined;
  now?: () => number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
}

/** Longest single timer: re-evaluate at least hourly (setTimeout caps at ~24.8 days; clocks jump). */
const MAX_TIMER_MS = 3_600_000;

/**
 * Fires schedules at their cron times. One timer, armed for the earliest next fire of
 * any enabled schedule. Next fires are computed from "now" at start, on every change
 * and after each fire, so fires missed while the supervisor was down or the timer was
 * late are not replayed (at most one fire per schedule per wake-up).
 */
export class Scheduler {
  private readonly next = new Map<string, number>();
  private readonly running = new Map<string, Promise<RunSummary>>();
  private readonly runs: ScheduleRunLog;
  private timer: unknown;
  private started = false;
  private readonly now: () => number;
  private readonly setTimer: (fn: () => void, ms: number) => unknown;
  private readonly clearTimer: (handle: unknown) => void;

  constructor(private readonly opts: SchedulerOptions) {
    this.now = opts.now ?? Date.now;
    this.runs = opts.runs ?? new ScheduleRunLog();
    this.setTimer =
      opts.setTimer ??
      ((fn, ms) => {
        const t = setTimeout(fn, ms);
        t.unref();
        return t;
      });
    this.clearTimer = opts.clearTimer ?? ((h) => clearTimeout(h as NodeJS.Timeout));
    opts.store.onChange((name) => this.changed(name));
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    const now = this.now();
    for (const s of this.opts.store.list()) if (s.enabled) this.next.set(s.name, nextFire(s.cron, now));
    this.arm();
  }

  /** No more fires; a run in progress goes on (its tasks see the supervisor stopping). */
  stop(): void {
    this.started = false;
    if (this.timer !== undefined) this.clearTimer(this.timer);
    this.timer = undefined;
  }

  /** Resolves once no run is in progress. */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()]);
  }

  /** Next fire (epoch ms) of an enabled schedule, else undefined. */
  nextFireAt(name: string): number | undefined {
    if (this.started) return this.next.get(name);
    const s = this.opts.store.get(name);
    return s?.enabled ? nextFire(s.cron, this.now()) : undefined;
  }

  lastRun(name: string): RunSummary | undefined {
    return this.runs.get(name);
  }

  isRunning(name: string): boolean {
    return this.running.has(name);
  }

  /** Fires one schedule now (window, halt and overlap rules as for a timed fire). */
  runNow(name: string): Promise<RunSummary> {
    const s = this.opts.store.get(name);
    if (!s) return Promise.reject(new ScheduleError('E_NO_SUCH_SCHEDULE', `no schedule named ${JSON.stringify(name)}`, { field: 'name' }));
    return this.fire(s, 'admin');
  }

  private changed(name: string): void {
    const s = this.opts.store.get(name);
    if (!this.started) return;
    if (s?.enabled) this.next.set(name, nextFire(s.cron, this.now()));
    else this.next.delete(name);
    if (!s) void this.runs.forget(name);
    this.arm();
  }

  private arm(): void {
    if (this.timer !== undefined) this.clearTimer(this.timer);
    this.timer = undefined;
    if (!this.started || this.next.size === 0) return;
    const soonest = Math.min(...this.next.values());
    const delay = Math.min(Math.max(0, soonest - this.now()), MAX_TIMER_MS);
    this.timer = this.setTimer(() => this.tick(), delay);
  }

  private tick(): void {
    this.timer = undefined;
    if (!this.started) return;
    const now = this.now();
    for (const [name, at] of [...this.next]) {
      if (at > now) continue;
      const s = this.opts.store.get(name);
      if (!s?.enabled) {
        this.next.delete(name);
        continue;
      }
      this.next.set(name, nextFire(s.cron, now));
      void this.fire(s, 'schedule').catch((err: unknown) =>
        this.opts.log?.error({ event: 'schedule.error', schedule: name, err: errorMessage(err) }, `schedule ${name}: ${errorMessage(err)}`),
      );
    }
    this.arm();
  }

  private async fire(s: Schedule, trigger: RunSummary['trigger']): Promise<RunSummary> {
    const log = this.opts.log;
    const startedAt = new Date(this.now()).toISOString();
    const first = s.tasks[0]!;
    const skipAll = async (code: string, reason: string): Promise<RunSummary> => {
      log?.warn({ event: 'schedule.skipped', schedule: s.name, trigger, code, reason }, `schedule ${s.name} skipped: ${reason}`);
      const job = await this.opts.skipTask(first, s.name, code, reason);
      return { schedule: s.name, trigger, startedAt, endedAt: new Date(this.now()).toISOString(), outcome: 'SKIPPED', reason, jobs: [{ id: job.id, task: first.task, state: job.state }] };
    };
    const previous = this.running.get(s.name);
    if (previous) {
      const cur = this.runs.get(s.name);
      // Not recorded as the last run: the one still running is.
      return skipAll('E_SCHEDULE_RUNNING', `the previous run of schedule ${s.name}${cur ? ` (started ${cur.startedAt})` : ''} is still running`);
    }
    if (s.window && !inWindow(s.window, this.now())) {
      const run = await skipAll('E_OUTSIDE_WINDOW', `outside window ${windowText(s.window)} UTC`);
      await this.runs.record(run);
      return run;
    }
    const run: RunSummary = { schedule: s.name, trigger, startedAt, outcome: 'RUNNING', jobs: [] };
    const p = this.runTasks(s, run).finally(() => this.running.delete(s.name));
    this.running.set(s.name, p);
    return p;
  }

  private async runTasks(s: Schedule, run: RunSummary): Promise<RunSummary> {
    const log = this.opts.log;
    log?.info({ event: 'schedule.fire', schedule: s.name, trigger: run.trigger, tasks: s.tasks.map((t) => t.task) }, `schedule ${s.name}: running ${s.tasks.map((t) => t.task).join(', ')}`);
    await this.runs.record(run); // RUNNING, and after each task: a restart then shows how far it got
    let failed = false;
    for (const [i, t] of s.tasks.entries()) {
      let job: JobRecord;
      try {
        job = await this.opts.runTask(t, s.name);
      } catch (err) {
        // The callback should not throw; if it does, treat the task as failed (and still record it).
        log?.error({ event: 'schedule.error', schedule: s.name, task: t.task, err: errorMessage(err) }, `schedule ${s.name}: task ${t.task}: ${errorMessage(err)}`);
        job = await this.opts.skipTask(t, s.name, 'E_INTERNAL', `could not run: ${errorMessage(err)}`);
      }
      run.jobs.push({ id: job.id, task: t.task, state: job.state });
      await this.runs.record(run);
      if (job.state === 'SUCCEEDED') continue;
      failed = true;
      if (!s.haltOnFailure) continue;
      const rest = s.tasks.slice(i + 1);
      const reason = `halted: ${t.task} ${job.state}`;
      log?.warn({ event: 'schedule.halted', schedule: s.name, task: t.task, state: job.state, jobId: job.id, skipped: rest.map((x) => x.task) }, `schedule ${s.name} ${reason}${rest.length ? `; skipping ${rest.map((x) => x.task).join(', ')}` : ''}`);
      for (const r of rest) {
        const skipped = await this.opts.skipTask(r, s.name, 'E_HALTED', reason);
        run.jobs.push({ id: skipped.id, task: r.task, state: skipped.state });
      }
      run.outcome = 'HALTED';
      run.reason = reason;
      break;
    }
    if (run.outcome === 'RUNNING') run.outcome = failed ? 'FAILED' : 'SUCCEEDED';
    run.endedAt = new Date(this.now()).toISOString();
    await this.runs.record(run);
    log?.info({ event: 'schedule.done', schedule: s.name, outcome: run.outcome, jobs: run.jobs }, `schedule ${s.name} ${run.outcome}`);
    return run;
  }
}
