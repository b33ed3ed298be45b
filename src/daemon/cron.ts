/**
 * Cron for schedules: a classic (Vixie) 5-field expression, evaluated in UTC
 * (`parseCron`, `cronMatches`, `nextFire`). Knows nothing of schedules or the daemon.
 */
import { invalid, ScheduleError } from './schedule-error.js';

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

