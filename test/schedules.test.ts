/**
 * Schedules (issue 8): the cron parser and nextFire (table cases and a fast-check
 * property against an independent oracle), maintenance windows, validation and JSON
 * round trip, the persisted store, and the Scheduler on a fake clock (no real waiting).
 * Then through the real binary with fixtures/kv: CRUD with `baton schedules`, persistence
 * across a supervisor restart, a corrupt file refusing the start, "run now" with
 * halt-on-failure and the window.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { JobRecord, JobState } from '../src/daemon/jobs.js';
import { cronMatches, nextFire, parseCron } from '../src/daemon/cron.js';
import type { RunSummary } from '../src/daemon/schedule-runs.js';
import { ScheduleError } from '../src/daemon/schedule-error.js';
import { Scheduler } from '../src/daemon/scheduler.js';
import { inWindow, parseWindowText, ScheduleStore, scheduleToJson, validateSchedule, validateScheduleSpec, type ScheduleTask } from '../src/daemon/schedules.js';
import { resolveRunConfig } from '../src/daemon/config.js';
import { ROOT } from './support/engine.js';
import { exitOf, Harness, pollUntil } from './support/harness.js';
import { collect, useCliWorlds, type DaemonHandle } from './support/cli.js';

const h = new Harness();
const worlds = useCliWorlds(h);

const utc = (y: number, mo: number, d: number, hh = 0, mm = 0, ss = 0): number => Date.UTC(y, mo - 1, d, hh, mm, ss);
const iso = (t: number): string => new Date(t).toISOString();

function thrown(fn: () => unknown): ScheduleError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ScheduleError);
    return err as ScheduleError;
  }
  throw new Error('expected a ScheduleError');
}

describe('cron expressions', () => {
  it('parses lists, ranges, steps, names and aliases', () => {
    const s = parseCron('*/15 9-17/4 1,15 JAN-mar mon-FRI');
    expect(s.minutes.flatMap((on, i) => (on ? [i] : []))).toEqual([0, 15, 30, 45]);
    expect(s.hours.flatMap((on, i) => (on ? [i] : []))).toEqual([9, 13, 17]);
    expect(s.doms.flatMap((on, i) => (on ? [i] : []))).toEqual([1, 15]);
    expect(s.months.flatMap((on, i) => (on ? [i] : []))).toEqual([1, 2, 3]);
    expect(s.dows.flatMap((on, i) => (on ? [i] : []))).toEqual([1, 2, 3, 4, 5]);
    expect(parseCron('0 0 * * 7').dows.flatMap((on, i) => (on ? [i] : []))).toEqual([0]); // 7 = Sunday
    expect(parseCron('5/20 * * * *').minutes.flatMap((on, i) => (on ? [i] : []))).toEqual([5, 25, 45]);
    expect(parseCron('@daily')).toMatchObject({ domStar: true, dowStar: true });
    expect(nextFire('@hourly', utc(2026, 1, 1, 10, 30))).toBe(utc(2026, 1, 1, 11, 0));
    expect(nextFire('@weekly', utc(2026, 11, 23, 12))).toBe(utc(2026, 11, 29)); // the next Sunday
    expect(nextFire(' @Monthly ', utc(2026, 11, 23))).toBe(utc(2026, 12, 1));
  });

  it('rejects bad expressions with a message naming the field and the token', () => {
    const cases: [string, string][] = [
      ['61 * * * *', 'cron: minute field "61": expected 0-59'],
      ['* 24 * * *', 'cron: hour field "24": expected 0-23'],
      ['* * 0 * *', 'cron: day-of-month field "0": expected 1-31'],
      ['* * * 13 *', 'cron: month field "13": expected 1-12 or a name (JAN-DEC)'],
      ['* * * * FUN', 'cron: day-of-week field "FUN": expected 0-7 or a name (SUN-SAT)'],
      ['*/0 * * * *', 'cron: minute field "*/0": step: expected an integer in 1-59'],
      ['5-3 * * * *', 'cron: minute field "5-3": range start 5 is after its end 3 (ranges do not wrap)'],
      ['1,,2 * * * *', 'cron: minute field "1,,2": empty list element'],
      ['1-2-3 * * * *', 'cron: minute field "1-2-3": expected a range A-B with A and B in 0-59'],
      ['x * * * *', 'cron: minute field "x": expected 0-59'],
      ['* * * *', 'cron: expected 5 fields (minute hour day-of-month month day-of-week) or an @alias (got 4 in "* * * *")'],
      ['@often', 'cron: unknown alias "@often"; expected one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually'],
      ['0 0 31 4,6 *', 'cron: day-of-month field "31": never matches in month field "4,6" (no such day)'],
    ];
    for (const [expr, message] of cases) {
      const err = thrown(() => parseCron(expr));
      expect(err.message, expr).toBe(message);
      expect(err.code).toBe('E_SCHEDULE_INVALID');
    }
    expect(thrown(() => parseCron('61 * * * *', 'schedules[2].cron')).message).toBe('schedules[2].cron: minute field "61": expected 0-59');
    // Feb 30 never exists, but "30 in Feb or any Monday" does (either day field may match).
    expect(() => parseCron('0 0 30 2 *')).toThrow(/never matches/);
    expect(nextFire('0 0 30 2 MON', utc(2026, 1, 1))).toBe(utc(2026, 2, 2));
  });

  it('nextFire: strictly after, month ends, leap days, year ends, day-of-week and the either-day rule', () => {
    expect(nextFire('* * * * *', utc(2026, 1, 1, 10, 0))).toBe(utc(2026, 1, 1, 10, 1)); // on a boundary: the next one
    expect(nextFire('* * * * *', utc(2026, 1, 1, 10, 0) + 59_999)).toBe(utc(2026, 1, 1, 10, 1));
    expect(nextFire('0 0 1 * *', utc(2026, 1, 31, 12))).toBe(utc(2026, 2, 1));
    expect(nextFire('0 0 31 * *', utc(2026, 1, 31, 0, 0))).toBe(utc(2026, 3, 31)); // February and its 28 days skipped
    expect(nextFire('0 0 29 2 *', utc(2025, 3, 1))).toBe(utc(2028, 2, 29));
    expect(nextFire('0 0 29 2 *', utc(2096, 3, 1))).toBe(utc(2104, 2, 29)); // 2100 is not a leap year
    // Both day fields ANDed (day-of-month starts with *): June 1/8/15/… on a Thursday
    // skips 2035-2044 (found by the property test below; the search once stopped at 10 years).
    expect(nextFire('0 0 */7 6 4', utc(2034, 6, 29))).toBe(utc(2045, 6, 1));
    expect(nextFire('59 23 31 12 *', utc(2026, 12, 31, 23, 59))).toBe(utc(2027, 12, 31, 23, 59));
    expect(nextFire('0 0 1 1 *', utc(2026, 12, 31, 23, 59))).toBe(utc(2027, 1, 1));
    // 2026-11-23 is a Monday.
    expect(nextFire('0 12 * * MON', utc(2026, 11, 22, 18))).toBe(utc(2026, 11, 23, 12));
    expect(nextFire('0 12 * * MON', utc(2026, 11, 23, 12))).toBe(utc(2026, 11, 30, 12));
    expect(nextFire('30 4 * * SAT,SUN', utc(2026, 11, 23))).toBe(utc(2026, 11, 28, 4, 30));
    // Both day fields restricted: the 13th OR a Friday, whichever comes first.
    expect(nextFire('0 0 13 * FRI', utc(2026, 11, 23))).toBe(utc(2026, 11, 27)); // Friday the 27th
    expect(nextFire('0 0 13 * FRI', utc(2026, 12, 12))).toBe(utc(2026, 12, 13)); // Sunday the 13th
    // A day field starting with "*" counts as unrestricted: both must match (Mondays on odd days).
    expect(nextFire('0 0 */2 * MON', utc(2026, 11, 23))).toBe(utc(2026, 12, 7));
    // Hour rollover inside a matching day; day rollover across a month end.
    expect(nextFire('10,50 8,20 * * *', utc(2026, 11, 30, 20, 50))).toBe(utc(2026, 12, 1, 8, 10));
  });

  it('nextFire is fast: the rarest expressions take well under a millisecond each', () => {
    const t0 = performance.now();
    for (let i = 0; i < 200; i++) nextFire('0 0 29 2 *', utc(2097, 1, 1) + i * 3_600_000);
    expect(performance.now() - t0).toBeLessThan(2_000);
  });

  it('property: nextFire matches, lies strictly after the start, and no matching minute lies in between', () => {
    // Each field as an explicit set of values plus how it is written; the oracle below
    // uses the sets (not the parser) to find every matching minute day by day.
    const field = (min: number, max: number) =>
      fc.oneof(
        fc.constant({ text: '*', values: range(min, max), star: true }),
        fc.integer({ min: 1, max: Math.max(1, Math.floor((max - min) / 2)) }).map((n) => ({ text: `*/${n}`, values: range(min, max).filter((v) => (v - min) % n === 0), star: true })),
        fc.uniqueArray(fc.integer({ min, max }), { minLength: 1, maxLength: 4 }).map((vs) => ({ text: vs.join(','), values: vs, star: false })),
        fc.tuple(fc.integer({ min, max }), fc.integer({ min, max }), fc.integer({ min: 1, max: 5 })).map(([a, b, n]) => {
          const [lo, hi] = a <= b ? [a, b] : [b, a];
          return { text: `${lo}-${hi}/${n}`, values: range(lo, hi).filter((v) => (v - lo) % n === 0), star: false };
        }),
      );
    const expr = fc.record({ mi: field(0, 59), h: field(0, 23), dom: field(1, 31), mo: field(1, 12), dow: field(0, 7) });
    const start = fc.integer({ min: utc(2000, 1, 1), max: utc(2090, 1, 1) });
    fc.assert(
      fc.property(expr, start, (e, t) => {
        const text = [e.mi, e.h, e.dom, e.mo, e.dow].map((f) => f.text).join(' ');
        let spec;
        try {
          spec = parseCron(text);
        } catch (err) {
          // Only an impossible day-of-month/month combination may be refused.
          expect(errText(err)).toMatch(/never matches/);
          return;
        }
        const dows = new Set(e.dow.values.map((v) => v % 7));
        const dayOk = (day: Date): boolean => {
          const dom = e.dom.values.includes(day.getUTCDate());
          const dow = dows.has(day.getUTCDay());
          return e.mo.values.includes(day.getUTCMonth() + 1) && (e.dom.star || e.dow.star ? dom && dow : dom || dow);
        };
        const n = nextFire(spec, t);
        expect(n).toBeGreaterThan(t);
        expect(n % 60_000).toBe(0);
        expect(cronMatches(spec, n)).toBe(true);
        const nd = new Date(n);
        expect(dayOk(nd) && e.h.values.includes(nd.getUTCHours()) && e.mi.values.includes(nd.getUTCMinutes())).toBe(true);
        // No matching minute in (t, n): walk the days in between.
        for (let day = Math.floor(t / 86_400_000) * 86_400_000; day <= n; day += 86_400_000) {
          if (!dayOk(new Date(day))) continue;
          for (const hh of e.h.values) {
            for (const mm of e.mi.values) {
              const c = day + hh * 3_600_000 + mm * 60_000;
              if (c > t && c < n) throw new Error(`${text}: ${iso(c)} matches, between ${iso(t)} and nextFire ${iso(n)}`);
            }
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}
function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

describe('maintenance windows', () => {
  it('end is exclusive; start > end wraps midnight; start == end and bad hours are refused', () => {
    const day = { startHourUtc: 9, endHourUtc: 17 };
    expect(inWindow(day, utc(2026, 1, 1, 8, 59))).toBe(false);
    expect(inWindow(day, utc(2026, 1, 1, 9, 0))).toBe(true);
    expect(inWindow(day, utc(2026, 1, 1, 16, 59))).toBe(true);
    expect(inWindow(day, utc(2026, 1, 1, 17, 0))).toBe(false);
    const night = parseWindowText('22-4');
    expect(night).toEqual({ startHourUtc: 22, endHourUtc: 4 });
    for (const [hh, mm, inside] of [[21, 59, false], [22, 0, true], [23, 59, true], [0, 0, true], [3, 59, true], [4, 0, false], [12, 0, false]] as const) {
      expect(inWindow(night, utc(2026, 1, 1, hh, mm)), `${hh}:${mm}`).toBe(inside);
    }
    expect(thrown(() => parseWindowText('5-5')).message).toMatch(/^window: startHourUtc and endHourUtc are both 5: an empty or all-day window is ambiguous/);
    expect(thrown(() => parseWindowText('22-24')).message).toBe('window.endHourUtc: expected an integer hour 0-23 (got 24)');
    expect(thrown(() => parseWindowText('nightly')).message).toBe('window: expected START-END hours in UTC, e.g. 22-4 (got "nightly")');
  });
});

describe('schedule records', () => {
  const good = { name: 'nightly', cron: '30 2 * * *', window: { startHourUtc: 22, endHourUtc: 4 }, tasks: [{ task: 'compaction' }, { task: 'verification', urgency: 'high', params: { deep: true } }] };

  it('validates with defaults and errors that name the path', () => {
    expect(validateScheduleSpec(good)).toEqual({ ...good, haltOnFailure: true, enabled: true });
    const bad: [unknown, string][] = [
      [{ ...good, name: 'Nightly!' }, 'name: expected a slug: 1-63 of [a-z0-9_-], starting with a letter or digit (got "Nightly!")'],
      [{ ...good, cron: '0 0 * * 8' }, 'cron: day-of-week field "8": expected 0-7 or a name (SUN-SAT)'],
      [{ ...good, cron: 5 }, 'cron: expected a cron expression string, e.g. "0 3 * * *" (got 5)'],
      [{ ...good, tasks: [] }, 'tasks: expected a non-empty array of {"task", "params"?, "urgency"?} (got [])'],
      [{ ...good, tasks: [{ task: 'a' }, { task: '../x' }] }, 'tasks[1].task: expected a task name: 1-64 of [A-Za-z0-9._-] (got "../x")'],
      [{ ...good, tasks: [{ task: 'a', urgency: 'now' }] }, 'tasks[0].urgency: expected one of low, normal, high, critical (got "now")'],
      [{ ...good, tasks: [{ task: 'a', params: [1] }] }, 'tasks[0].params: expected a JSON object (got [1])'],
      [{ ...good, tasks: [{ task: 'a', when: 1 }] }, 'tasks[0].when: unknown field; known: task, params, urgency'],
      [{ ...good, window: { startHourUtc: 1, endHourUtc: 30 } }, 'window.endHourUtc: expected an integer hour 0-23 (got 30)'],
      [{ ...good, haltOnFailure: 'yes' }, 'haltOnFailure: expected true or false (got "yes")'],
      [{ ...good, colour: 'red' }, 'colour: unknown field; known: name, cron, window, tasks, haltOnFailure, enabled'],
    ];
    for (const [raw, message] of bad) expect(thrown(() => validateScheduleSpec(raw)).message).toBe(message);
    expect(thrown(() => validateScheduleSpec({ ...good, cron: '61 * * * *' }, 'schedules[2]')).message).toBe('schedules[2].cron: minute field "61": expected 0-59');
    // What `get --json` prints may be sent back: read-only fields are ignored.
    expect(validateScheduleSpec({ ...good, nextFireAt: 'x', lastRun: null, running: false, createdAt: 'x' }).name).toBe('nightly');
  });

  it('JSON round trip: a stored schedule survives stringify + parse + validate unchanged', () => {
    const s = { ...validateScheduleSpec(good), createdAt: '2026-11-23T10:00:00.000Z', updatedAt: '2026-11-23T11:00:00.000Z' };
    const back = validateSchedule(JSON.parse(JSON.stringify(scheduleToJson(s))));
    expect(back).toEqual(s);
    expect(scheduleToJson(back)).toEqual(scheduleToJson(s));
    expect(thrown(() => validateSchedule({ ...scheduleToJson(s), createdAt: 'yesterday' })).message).toBe('createdAt: expected an ISO time (got "yesterday")');
  });
});

describe('ScheduleStore', () => {
  const spec = { name: 'nightly', cron: '0 3 * * *', tasks: [{ task: 'compaction' }] };

  it('CRUD persisted atomically; a second store reads the same; errors carry codes', async () => {
    const file = path.join(h.tempDir('sched-'), 'schedules.json');
    let clock = Date.parse('2026-11-23T10:00:00Z');
    const store = new ScheduleStore(file, undefined, () => clock);
    await store.load(); // no file: empty
    expect(store.list()).toEqual([]);
    const created = await store.create(spec);
    expect(created).toMatchObject({ ...spec, haltOnFailure: true, enabled: true, createdAt: '2026-11-23T10:00:00.000Z' });
    await expect(store.create(spec)).rejects.toMatchObject({ code: 'E_SCHEDULE_EXISTS' });
    await expect(store.create({ ...spec, name: 'other', cron: '99 * * * *' })).rejects.toMatchObject({ code: 'E_SCHEDULE_INVALID', message: 'cron: minute field "99": expected 0-59' });
    clock += 60_000;
    await store.create({ name: 'weekly', cron: '@weekly', window: { startHourUtc: 1, endHourUtc: 5 }, tasks: [{ task: 'verification' }, { task: 'compaction' }] });
    const patched = await store.patch('nightly', { cron: '15 4 * * *', window: { startHourUtc: 22, endHourUtc: 6 } });
    expect(patched).toMatchObject({ cron: '15 4 * * *', window: { startHourUtc: 22, endHourUtc: 6 }, createdAt: '2026-11-23T10:00:00.000Z', updatedAt: '2026-11-23T10:01:00.000Z' });
    expect((await store.patch('nightly', { window: null })).window).toBeUndefined();
    await expect(store.patch('nightly', { name: 'renamed' })).rejects.toMatchObject({ message: 'name: names cannot change (create a new schedule and delete this one)' });
    await expect(store.patch('nightly', { createdAt: 'x' })).rejects.toMatchObject({ message: 'createdAt: cannot be patched; patchable: cron, window, tasks, haltOnFailure, enabled' });
    await expect(store.patch('nightly', { tasks: [] })).rejects.toMatchObject({ code: 'E_SCHEDULE_INVALID' });
    await expect(store.patch('nope', { enabled: false })).rejects.toMatchObject({ code: 'E_NO_SUCH_SCHEDULE' });
    expect((await store.setEnabled('nightly', false)).enabled).toBe(false);
    const replaced = await store.replace('weekly', { cron: '0 1 * * SUN', tasks: [{ task: 'compaction' }], haltOnFailure: false });
    expect(replaced).toMatchObject({ name: 'weekly', cron: '0 1 * * SUN', haltOnFailure: false, enabled: true });
    expect(replaced.window).toBeUndefined();
    await expect(store.replace('weekly', { ...spec })).rejects.toMatchObject({ message: expect.stringMatching(/^name: "nightly" differs from the schedule being replaced/) });

    const again = new ScheduleStore(file);
    await again.load();
    expect(again.list()).toEqual(store.list());
    expect(again.list().map((s) => s.name)).toEqual(['nightly', 'weekly']);
    expect((await store.delete('nightly')).name).toBe('nightly');
    const third = new ScheduleStore(file);
    await third.load();
    expect(third.list().map((s) => s.name)).toEqual(['weekly']);
  });

  it('initial schedules (config "schedules") are seeded only into a state dir without schedules.json', async () => {
    const dir = h.tempDir('sched-');
    const file = path.join(dir, 'schedules.json');
    const first = new ScheduleStore(file);
    await first.load();
    await first.seed([validateScheduleSpec(spec), validateScheduleSpec({ ...spec, name: 'two' })]);
    expect(first.list().map((s) => s.name)).toEqual(['nightly', 'two']);
    await first.delete('two');
    const second = new ScheduleStore(file);
    await second.load();
    await second.seed([validateScheduleSpec(spec), validateScheduleSpec({ ...spec, name: 'two' })]);
    expect(second.list().map((s) => s.name)).toEqual(['nightly']); // the file is the truth
    // The config validates them like the API, naming the path.
    const cfgFile = path.join(dir, 'baton.json');
    const resolve = (schedules: unknown) => {
      writeFileSync(cfgFile, JSON.stringify({ schedules }));
      return () => resolveRunConfig({ config: cfgFile, dataDir: dir, stateDir: dir, command: ['true'] });
    };
    expect(resolve([spec])().schedules).toEqual([{ ...spec, haltOnFailure: true, enabled: true }]);
    expect(resolve(undefined)().schedules).toBeUndefined();
    expect(resolve([spec, { ...spec, cron: '0 0 * * 9' }])).toThrow(`config ${cfgFile}: schedules[1].cron: day-of-week field "9": expected 0-7 or a name (SUN-SAT)`);
    expect(resolve([spec, spec])).toThrow(`config ${cfgFile}: schedules[1].name: duplicate name "nightly"`);
    expect(resolve({ nightly: spec })).toThrow(`config ${cfgFile}: "schedules": expected an array of schedules`);
  });

  it('a write that fails changes nothing', async () => {
    const store = new ScheduleStore(path.join(h.tempDir('sched-'), 'missing-dir', 'schedules.json'));
    await expect(store.create(spec)).rejects.toThrow(/ENOENT/);
    expect(store.list()).toEqual([]);
  });

  it('load refuses a corrupt or invalid file, naming the file and the field', async () => {
    const dir = h.tempDir('sched-');
    const file = path.join(dir, 'schedules.json');
    const load = async (text: string): Promise<ScheduleError> => {
      writeFileSync(file, text);
      const err = await new ScheduleStore(file).load().then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(ScheduleError);
      expect((err as ScheduleError).code).toBe('E_SCHEDULES_FILE');
      return err as ScheduleError;
    };
    expect((await load('{"version": 1, "schedules": [')).message).toMatch(new RegExp(`^schedules file ${file}: not valid JSON \\(`));
    expect((await load('{"schedules": []}')).message).toBe(`schedules file ${file}: expected {"version": 1, "schedules": [...]}; fix or remove the file`);
    const ok = { ...spec, haltOnFailure: true, enabled: true, createdAt: '2026-11-23T10:00:00.000Z', updatedAt: '2026-11-23T10:00:00.000Z' };
    const bad = await load(JSON.stringify({ version: 1, schedules: [ok, { ...ok, name: 'b' }, { ...ok, name: 'c', cron: '61 * * * *' }] }));
    expect(bad.message).toBe(`schedules file ${file}: schedules[2].cron: minute field "61": expected 0-59; fix or remove the file`);
    expect(bad.details).toMatchObject({ field: 'schedules[2].cron', path: file });
    expect((await load(JSON.stringify({ version: 1, schedules: [ok, ok] }))).message).toBe(`schedules file ${file}: schedules[1].name: duplicate name "nightly"; fix or remove the file`);
  });
});

// ---- the Scheduler on a fake clock ----------------------------------------------------

/** Timers on a fake clock: `advanceTo` runs every due timer in time order, letting the async work it starts settle. */
class FakeClock {
  now: number;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();
  private seq = 0;
  constructor(start: number) {
    this.now = start;
  }
  setTimer = (fn: () => void, ms: number): unknown => {
    const id = ++this.seq;
    this.timers.set(id, { at: this.now + ms, fn });
    return id;
  };
  clearTimer = (id: unknown): void => {
    this.timers.delete(id as number);
  };
  get nextAt(): number | undefined {
    return Math.min(...[...this.timers.values()].map((x) => x.at));
  }
  get pending(): number {
    return this.timers.size;
  }
  async advanceTo(t: number): Promise<void> {
    for (;;) {
      const due = [...this.timers].filter(([, x]) => x.at <= t).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.now = Math.max(this.now, due[1].at);
      due[1].fn();
      await settle();
    }
    this.now = Math.max(this.now, t);
    await settle();
  }
  /** The clock jumps (a suspended machine, a stalled loop): due timers run once, late. */
  async jump(ms: number): Promise<void> {
    this.now += ms;
    await this.advanceTo(this.now);
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

interface Call {
  task: string;
  schedule: string;
  at: string;
}

/** A scheduler world: a store in a temp dir, a fake clock, recorded runTask/skipTask calls and log lines. */
async function world(start: number, opts: { fail?: Record<string, JobState>; hold?: boolean } = {}) {
  const clock = new FakeClock(start);
  const store = new ScheduleStore(path.join(h.tempDir('sched-'), 'schedules.json'), undefined, () => clock.now);
  const ran: Call[] = [];
  const skipped: (Call & { code: string; reason: string })[] = [];
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  let n = 0;
  const job = (task: ScheduleTask, state: JobState): JobRecord => ({ id: `job-${++n}-${task.task}`, kind: 'maintenance', state, trigger: 'schedule', createdAt: iso(clock.now) });
  const held: (() => void)[] = [];
  const scheduler = new Scheduler({
    store,
    log,
    now: () => clock.now,
    setTimer: clock.setTimer,
    clearTimer: clock.clearTimer,
    runTask: async (task, schedule) => {
      ran.push({ task: task.task, schedule, at: iso(clock.now) });
      if (opts.hold) await new Promise<void>((r) => held.push(r));
      return job(task, opts.fail?.[task.task] ?? 'SUCCEEDED');
    },
    skipTask: async (task, schedule, code, reason) => {
      skipped.push({ task: task.task, schedule, at: iso(clock.now), code, reason });
      return job(task, 'SKIPPED');
    },
  });
  return { clock, store, scheduler, ran, skipped, logs, held, events: () => logs.map((l) => l.event) };
}

describe('Scheduler (fake clock)', () => {
  it('fires at the cron times, in task order; a disabled schedule does not fire; changes re-arm', async () => {
    const w = await world(utc(2026, 11, 23, 10, 7, 30));
    await w.store.create({ name: 'quarter', cron: '*/15 * * * *', tasks: [{ task: 'compaction' }, { task: 'verification' }] });
    await w.store.create({ name: 'off', cron: '* * * * *', enabled: false, tasks: [{ task: 'x' }] });
    w.scheduler.start();
    expect(iso(w.scheduler.nextFireAt('quarter')!)).toBe('2026-11-23T10:15:00.000Z');
    expect(w.scheduler.nextFireAt('off')).toBeUndefined();
    await w.clock.advanceTo(utc(2026, 11, 23, 10, 14, 59));
    expect(w.ran).toEqual([]);
    await w.clock.advanceTo(utc(2026, 11, 23, 10, 40));
    expect(w.ran).toEqual([
      { task: 'compaction', schedule: 'quarter', at: '2026-11-23T10:15:00.000Z' },
      { task: 'verification', schedule: 'quarter', at: '2026-11-23T10:15:00.000Z' },
      { task: 'compaction', schedule: 'quarter', at: '2026-11-23T10:30:00.000Z' },
      { task: 'verification', schedule: 'quarter', at: '2026-11-23T10:30:00.000Z' },
    ]);
    expect(w.scheduler.lastRun('quarter')).toMatchObject({ outcome: 'SUCCEEDED', trigger: 'schedule', startedAt: '2026-11-23T10:30:00.000Z', jobs: [{ task: 'compaction', state: 'SUCCEEDED' }, { task: 'verification', state: 'SUCCEEDED' }] });
    expect(w.events().filter((e) => e === 'schedule.fire')).toHaveLength(2);
    // Enabling re-arms; disabling and deleting disarm.
    await w.store.setEnabled('off', true);
    expect(iso(w.scheduler.nextFireAt('off')!)).toBe('2026-11-23T10:41:00.000Z');
    await w.clock.advanceTo(utc(2026, 11, 23, 10, 41));
    expect(w.ran.at(-1)).toEqual({ task: 'x', schedule: 'off', at: '2026-11-23T10:41:00.000Z' });
    await w.store.setEnabled('off', false);
    await w.store.delete('quarter');
    const before = w.ran.length;
    await w.clock.advanceTo(utc(2026, 11, 23, 12));
    expect(w.ran.length).toBe(before);
    expect(w.clock.pending).toBe(0);
    // A patched cron takes effect at once.
    await w.store.create({ name: 'late', cron: '0 23 * * *', tasks: [{ task: 'y' }] });
    await w.store.patch('late', { cron: '5 12 * * *' });
    await w.clock.advanceTo(utc(2026, 11, 23, 12, 5));
    expect(w.ran.at(-1)).toEqual({ task: 'y', schedule: 'late', at: '2026-11-23T12:05:00.000Z' });
  });

  it('outside the window: ONE skipped job, nothing runs; inside: runs', async () => {
    const w = await world(utc(2026, 11, 23, 20, 30));
    await w.store.create({ name: 'nightly', cron: '0 * * * *', window: { startHourUtc: 22, endHourUtc: 4 }, tasks: [{ task: 'compaction' }, { task: 'verification' }] });
    w.scheduler.start();
    await w.clock.advanceTo(utc(2026, 11, 23, 21, 30));
    expect(w.ran).toEqual([]);
    expect(w.skipped).toEqual([{ task: 'compaction', schedule: 'nightly', at: '2026-11-23T21:00:00.000Z', code: 'E_OUTSIDE_WINDOW', reason: 'outside window 22-04 UTC' }]);
    expect(w.scheduler.lastRun('nightly')).toMatchObject({ outcome: 'SKIPPED', reason: 'outside window 22-04 UTC', jobs: [{ task: 'compaction', state: 'SKIPPED' }] });
    expect(w.logs.find((l) => l.event === 'schedule.skipped')).toMatchObject({ schedule: 'nightly', code: 'E_OUTSIDE_WINDOW' });
    await w.clock.advanceTo(utc(2026, 11, 24, 4, 30));
    expect(w.ran.map((c) => `${c.at.slice(11, 16)} ${c.task}`)).toEqual(['22:00 compaction', '22:00 verification', '23:00 compaction', '23:00 verification', '00:00 compaction', '00:00 verification', '01:00 compaction', '01:00 verification', '02:00 compaction', '02:00 verification', '03:00 compaction', '03:00 verification']);
    expect(w.skipped.map((s) => s.at.slice(11, 16))).toEqual(['21:00', '04:00']);
  });

  it('halt on failure: a FAILED task skips the rest ("halted: <task> FAILED"); without it the rest run', async () => {
    const w = await world(utc(2026, 11, 23, 10), { fail: { verification: 'FAILED' } });
    await w.store.create({ name: 'halting', cron: '0 11 * * *', tasks: [{ task: 'compaction' }, { task: 'verification' }, { task: 'reindex' }, { task: 'backup' }] });
    await w.store.create({ name: 'going-on', cron: '0 12 * * *', haltOnFailure: false, tasks: [{ task: 'verification' }, { task: 'reindex' }] });
    w.scheduler.start();
    await w.clock.advanceTo(utc(2026, 11, 23, 11));
    expect(w.ran.map((c) => c.task)).toEqual(['compaction', 'verification']);
    expect(w.skipped.map((s) => [s.task, s.code, s.reason])).toEqual([
      ['reindex', 'E_HALTED', 'halted: verification FAILED'],
      ['backup', 'E_HALTED', 'halted: verification FAILED'],
    ]);
    expect(w.scheduler.lastRun('halting')).toMatchObject({
      outcome: 'HALTED',
      reason: 'halted: verification FAILED',
      jobs: [{ task: 'compaction', state: 'SUCCEEDED' }, { task: 'verification', state: 'FAILED' }, { task: 'reindex', state: 'SKIPPED' }, { task: 'backup', state: 'SKIPPED' }],
    });
    expect(w.logs.find((l) => l.event === 'schedule.halted')).toMatchObject({ schedule: 'halting', task: 'verification', state: 'FAILED', skipped: ['reindex', 'backup'] });
    await w.clock.advanceTo(utc(2026, 11, 23, 12));
    expect(w.ran.map((c) => c.task).slice(2)).toEqual(['verification', 'reindex']);
    expect(w.scheduler.lastRun('going-on')).toMatchObject({ outcome: 'FAILED', jobs: [{ state: 'FAILED' }, { state: 'SUCCEEDED' }] });
  });

  it('a SKIPPED or CANCELLED task halts too', async () => {
    for (const state of ['SKIPPED', 'CANCELLED'] as const) {
      const w = await world(utc(2026, 11, 23, 10), { fail: { first: state } });
      await w.store.create({ name: 's', cron: '0 11 * * *', tasks: [{ task: 'first' }, { task: 'second' }] });
      const run = await w.scheduler.runNow('s');
      expect(run).toMatchObject({ outcome: 'HALTED', trigger: 'admin', reason: `halted: first ${state}` });
      expect(w.skipped.map((s) => s.task)).toEqual(['second']);
    }
  });

  it('never two runs of one schedule at once: a fire while it runs is SKIPPED; the next one after it runs', async () => {
    const w = await world(utc(2026, 11, 23, 10, 0, 30), { hold: true });
    await w.store.create({ name: 'busy', cron: '* * * * *', tasks: [{ task: 'long' }] });
    w.scheduler.start();
    await w.clock.advanceTo(utc(2026, 11, 23, 10, 1));
    expect(w.ran).toHaveLength(1);
    expect(w.scheduler.isRunning('busy')).toBe(true);
    await w.clock.advanceTo(utc(2026, 11, 23, 10, 2));
    expect(w.ran).toHaveLength(1);
    expect(w.skipped).toEqual([{ task: 'long', schedule: 'busy', at: '2026-11-23T10:02:00.000Z', code: 'E_SCHEDULE_RUNNING', reason: 'the previous run of schedule busy (started 2026-11-23T10:01:00.000Z) is still running' }]);
    // "Run now" follows the same rule.
    expect(await w.scheduler.runNow('busy')).toMatchObject({ outcome: 'SKIPPED', jobs: [{ state: 'SKIPPED' }] });
    expect(w.scheduler.lastRun('busy')).toMatchObject({ outcome: 'RUNNING', startedAt: '2026-11-23T10:01:00.000Z' });
    w.held.shift()!();
    await settle();
    expect(w.scheduler.isRunning('busy')).toBe(false);
    expect(w.scheduler.lastRun('busy')).toMatchObject({ outcome: 'SUCCEEDED' });
    await w.clock.advanceTo(utc(2026, 11, 23, 10, 3));
    expect(w.ran.map((c) => c.at)).toEqual(['2026-11-23T10:01:00.000Z', '2026-11-23T10:03:00.000Z']);
    w.held.shift()!();
    await w.scheduler.idle();
  });

  it('missed fires are not replayed: after a 3-hour jump one fire, then the schedule goes on from now', async () => {
    const w = await world(utc(2026, 11, 23, 10, 0, 30));
    await w.store.create({ name: 'min', cron: '*/10 * * * *', tasks: [{ task: 't' }] });
    w.scheduler.start();
    await w.clock.jump(3 * 3_600_000); // 13:00:30; 18 fires were due
    expect(w.ran.map((c) => c.at)).toEqual(['2026-11-23T13:00:30.000Z']);
    expect(iso(w.scheduler.nextFireAt('min')!)).toBe('2026-11-23T13:10:00.000Z');
    await w.clock.advanceTo(utc(2026, 11, 23, 13, 20));
    expect(w.ran.map((c) => c.at.slice(11, 19))).toEqual(['13:00:30', '13:10:00', '13:20:00']);
  });

  it('with the real timers: a clock 80 ms before a minute boundary fires in about 80 ms', async () => {
    const store = new ScheduleStore(path.join(h.tempDir('sched-'), 'schedules.json'));
    await store.create({ name: 'every-minute', cron: '* * * * *', tasks: [{ task: 't' }] });
    const offset = Math.ceil(Date.now() / 60_000) * 60_000 + 60_000 - 80 - Date.now();
    const ran: number[] = [];
    const scheduler = new Scheduler({
      store,
      now: () => Date.now() + offset,
      runTask: async () => (ran.push(Date.now() + offset), { id: 'j', kind: 'maintenance', state: 'SUCCEEDED', trigger: 'schedule', createdAt: iso(Date.now()) }),
      skipTask: () => Promise.reject(new Error('nothing is skipped here')),
    });
    scheduler.start();
    try {
      await pollUntil(() => ran.length > 0, 'the fire', 5_000, 5);
      expect(ran[0]! % 60_000).toBeLessThan(1_000); // at the boundary (on the offset clock), not early
      expect(scheduler.lastRun('every-minute')).toMatchObject({ outcome: 'SUCCEEDED' });
    } finally {
      scheduler.stop();
    }
  });

  it('a timer never waits longer than an hour (re-evaluates), and stop() ends all fires', async () => {
    const w = await world(utc(2026, 11, 23, 10));
    await w.store.create({ name: 'yearly', cron: '@yearly', tasks: [{ task: 't' }] });
    w.scheduler.start();
    expect(w.clock.nextAt).toBe(utc(2026, 11, 23, 11)); // not 2027-01-01
    await w.clock.advanceTo(utc(2027, 1, 1));
    expect(w.ran.map((c) => c.at)).toEqual(['2027-01-01T00:00:00.000Z']);
    w.scheduler.stop();
    expect(w.clock.pending).toBe(0);
    await w.clock.advanceTo(utc(2028, 1, 2));
    expect(w.ran).toHaveLength(1);
  });
});

// ---- through the real binary with fixtures/kv ---------------------------------------

const KV = ['node', path.join(ROOT, 'dist/fixtures/kv/main.js')];

function sched(d: DaemonHandle, args: string[]) {
  return worlds.w.baton(['schedules', ...args, '--state-dir', d.stateDir]);
}

const stopDaemon = (d: DaemonHandle): Promise<void> => worlds.w.stop(d);

interface ScheduleView {
  name: string;
  cron: string;
  enabled: boolean;
  haltOnFailure: boolean;
  window?: { startHourUtc: number; endHourUtc: number };
  tasks: { task: string; params?: unknown }[];
  nextFireAt: string | null;
  lastRun: RunSummary | null;
}

// Many CLI round trips per test: allow for a loaded 2-core machine.
describe('baton schedules (real binary, fixtures/kv)', { timeout: 150_000 }, () => {
  it('CRUD through the CLI; errors exit 1 with the supervisor\'s message naming the field', async () => {
    const d = await worlds.w.startDaemon({ command: KV });
    const c = await sched(d, ['create', '--name', 'nightly', '--cron', '30 2 * * *', '--window', '22-4', '--task', 'compaction', '--task', 'verification']);
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout).toMatch(/^schedule nightly created: "30 2 \* \* \*" in 22-04 UTC: compaction -> verification; next fire \d{4}-\d\d-\d\dT02:30:00\.000Z\n$/);

    const bad = await sched(d, ['create', '--name', 'broken', '--cron', '61 2 * * *', '--task', 'compaction']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe('baton: cron: minute field "61": expected 0-59 (E_SCHEDULE_INVALID)\n');
    const dup = await sched(d, ['create', '--name', 'nightly', '--cron', '@daily', '--task', 'compaction']);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toBe('baton: a schedule named "nightly" already exists; replace or patch it (E_SCHEDULE_EXISTS)\n');
    const badWindow = await sched(d, ['create', '--name', 'w', '--cron', '@daily', '--window', '3-3', '--task', 'compaction']);
    expect(badWindow.code).toBe(1);
    expect(badWindow.stderr).toMatch(/^baton: window: startHourUtc and endHourUtc are both 3/);
    const noTask = await sched(d, ['create', '--name', 'notask', '--cron', '@daily']);
    expect(noTask.code).toBe(1);
    expect(noTask.stderr).toContain('tasks: expected a non-empty array');
    expect((await sched(d, ['get', 'nosuch'])).stderr).toBe('baton: no schedule named "nosuch" (E_NO_SUCH_SCHEDULE)\n');
    expect((await sched(d, ['frobnicate'])).code).toBe(1);
    const help = await worlds.w.baton(['schedules', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: baton schedules list');

    // From a file, with params and urgency; then patch, disable, enable, replace.
    const file = path.join(d.dir, 'weekly.json');
    writeFileSync(file, JSON.stringify({ name: 'weekly', cron: '0 4 * * SUN', tasks: [{ task: 'verification', params: { deep: true }, urgency: 'low' }, { task: 'compaction' }], haltOnFailure: false }));
    expect((await sched(d, ['create', '--file', file])).code).toBe(0);
    const p = await sched(d, ['patch', 'nightly', '--no-window', '--cron', '15 3 * * *', '--json']);
    expect(p.code, p.stderr).toBe(0);
    const patched = JSON.parse(p.stdout) as ScheduleView;
    expect(patched).toMatchObject({ name: 'nightly', cron: '15 3 * * *', haltOnFailure: true, enabled: true });
    expect(patched.window).toBeUndefined();
    expect(patched.nextFireAt).toMatch(/T03:15:00\.000Z$/);
    expect((await sched(d, ['patch', 'nightly', '--cron', '* * * * * *'])).stderr).toContain('cron: expected 5 fields');
    const dis = await sched(d, ['disable', 'weekly']);
    expect(dis.stdout).toBe('schedule weekly disabled: "0 4 * * SUN": verification -> compaction (no halt on failure); disabled\n');

    const list = await sched(d, ['list']);
    expect(list.code).toBe(0);
    const lines = list.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME +ENABLED +CRON +WINDOW +TASKS +NEXT FIRE \(UTC\) +LAST RUN$/);
    expect(lines[1]).toMatch(/^nightly +yes +15 3 \* \* \* +- +compaction,verification +\d{4}-\d\d-\d\d 03:15 +-$/);
    expect(lines[2]).toMatch(/^weekly +no +0 4 \* \* SUN +- +verification,compaction \(no halt\) +- +-$/);
    const listed = (JSON.parse((await sched(d, ['list', '--json'])).stdout) as { schedules: ScheduleView[] }).schedules;
    expect(listed.map((s) => [s.name, s.enabled, s.nextFireAt === null])).toEqual([['nightly', true, false], ['weekly', false, true]]);
    expect(listed[1]!.tasks[0]).toEqual({ task: 'verification', params: { deep: true }, urgency: 'low' });
    expect((await sched(d, ['enable', 'weekly'])).code).toBe(0);

    // replace: `get --json`, edited, sent back (read-only fields are ignored).
    const got = JSON.parse((await sched(d, ['get', 'weekly', '--json'])).stdout) as Record<string, unknown>;
    writeFileSync(file, JSON.stringify({ ...got, cron: '0 5 * * SAT' }));
    const rep = await sched(d, ['replace', 'weekly', '--file', file, '--json']);
    expect(rep.code, rep.stderr).toBe(0);
    expect(JSON.parse(rep.stdout)).toMatchObject({ name: 'weekly', cron: '0 5 * * SAT', enabled: true, createdAt: got.createdAt });
    const g = await sched(d, ['get', 'weekly']);
    expect(g.stdout).toMatch(/^name +weekly\nenabled +true\ncron +0 5 \* \* SAT \(UTC\)\nwindow +any hour\ntasks +verification \(low\) \{"deep":true\} -> compaction\non failure +go on with the next task\nnext fire +\d{4}-.*T05:00:00\.000Z\nlast run +none\n$/);

    expect((await sched(d, ['delete', 'weekly'])).stdout).toBe('schedule weekly deleted\n');
    expect((await sched(d, ['delete', 'weekly'])).code).toBe(1);
    // The file holds what the API says; the audit log has every change.
    const saved = JSON.parse(readFileSync(path.join(d.stateDir, 'schedules.json'), 'utf8')) as { version: number; schedules: { name: string }[] };
    expect(saved.version).toBe(1);
    expect(saved.schedules.map((s) => s.name)).toEqual(['nightly']);
    const audit = readFileSync(path.join(d.stateDir, 'audit.log'), 'utf8');
    expect(audit).toMatch(/"method":"PATCH","path":"\/v1\/schedules\/nightly".*"status":200/);
    expect(audit).toMatch(/"method":"POST","path":"\/v1\/schedules".*"status":400.*"code":"E_SCHEDULE_INVALID"/);
    await stopDaemon(d);
  });

  it('schedules survive a supervisor restart; config schedules seed a new state dir only; a corrupt file refuses the start (exit 1, file and field named)', async () => {
    const dir = h.tempDir('baton-cli-');
    const cfg = path.join(dir, 'baton.json');
    writeFileSync(cfg, JSON.stringify({ schedules: [{ name: 'seeded', cron: '@daily', tasks: [{ task: 'compaction' }] }] }));
    const d = await worlds.w.startDaemon({ command: KV, dir, extraArgs: ['--config', cfg] });
    expect((await sched(d, ['list', '--json'])).stdout).toContain('"name": "seeded"');
    expect((await sched(d, ['create', '--name', 'keep', '--cron', '0 0 1 * *', '--task', 'verification', '--disabled'])).code).toBe(0);
    expect((await sched(d, ['create', '--name', 'also', '--cron', '@hourly', '--window', '1-2', '--task', 'compaction'])).code).toBe(0);
    expect((await sched(d, ['delete', 'seeded'])).code).toBe(0);
    await stopDaemon(d);

    const d2 = await worlds.w.startDaemon({ command: KV, dir, extraArgs: ['--config', cfg] });
    const listed = (JSON.parse((await sched(d2, ['list', '--json'])).stdout) as { schedules: ScheduleView[] }).schedules;
    expect(listed.map((s) => [s.name, s.cron, s.enabled])).toEqual([['keep', '0 0 1 * *', false], ['also', '@hourly', true]]);
    expect(listed[1]!.window).toEqual({ startHourUtc: 1, endHourUtc: 2 });
    expect(listed[1]!.nextFireAt).toMatch(/:00:00\.000Z$/);
    await stopDaemon(d2);

    const file = path.join(d.stateDir, 'schedules.json');
    writeFileSync(file, readFileSync(file, 'utf8').replace('"0 0 1 * *"', '"0 0 32 * *"'));
    const child = worlds.w.spawnBaton(['run', '--listen', 'tcp://127.0.0.1:0', '--data-dir', d.dataDir, '--state-dir', d.stateDir, '--', ...KV]);
    const r = await collect(child, 30_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`baton: schedules file ${file}: schedules[0].cron: day-of-month field "32": expected 1-31; fix or remove the file`);
    // Refused before anything started: no app was spawned (no cold start in the history).
    const jobs = JSON.parse(readFileSync(path.join(d.stateDir, 'jobs.json'), 'utf8')) as { jobs: JobRecord[] };
    expect(jobs.jobs.filter((j) => j.trigger === 'cold-start')).toHaveLength(2);
  });

  it('run now: tasks run in order as maintenance jobs; a failing task halts the rest; outside the window nothing runs', async () => {
    const d = await worlds.w.startDaemon({ command: KV });
    const file = path.join(d.dir, 'halting.json');
    writeFileSync(file, JSON.stringify({ name: 'halting', cron: '@daily', tasks: [{ task: 'compaction' }, { task: 'verification', params: { failOnPurpose: true } }, { task: 'compaction' }] }));
    expect((await sched(d, ['create', '--file', file])).code).toBe(0);
    const r = await sched(d, ['run', 'halting']);
    expect(r.code, r.stdout + r.stderr).toBe(2);
    expect(r.stdout).toMatch(/^[0-9a-f]{8} compaction +SUCCEEDED\n[0-9a-f]{8} verification +FAILED\n[0-9a-f]{8} compaction +SKIPPED\n$/);
    expect(r.stderr).toBe('baton schedules run: schedule halting: HALTED (halted: verification FAILED)\n');
    const jobs = JSON.parse((await worlds.w.baton(['jobs', '--kind', 'maintenance', '--json', '--state-dir', d.stateDir])).stdout) as { jobs: JobRecord[] };
    const [skipped, failed, ok] = jobs.jobs;
    expect(ok).toMatchObject({ state: 'SUCCEEDED', trigger: 'schedule', maintenance: { task: 'compaction', schedule: 'halting', requestReason: 'schedule halting', result: { shards: 4 } } });
    expect(failed).toMatchObject({ state: 'FAILED', trigger: 'schedule', maintenance: { task: 'verification', schedule: 'halting', params: { failOnPurpose: true } } });
    expect(failed!.reason).toContain('verification failed on purpose');
    expect(skipped).toMatchObject({ state: 'SKIPPED', trigger: 'schedule', code: 'E_HALTED', reason: 'halted: verification FAILED', maintenance: { task: 'compaction', schedule: 'halting' } });
    const view = JSON.parse((await sched(d, ['get', 'halting', '--json'])).stdout) as ScheduleView;
    expect(view.lastRun).toMatchObject({ trigger: 'admin', outcome: 'HALTED', jobs: [{ id: ok!.id, state: 'SUCCEEDED' }, { id: failed!.id, state: 'FAILED' }, { id: skipped!.id, state: 'SKIPPED' }] });

    // Without the failure, everything runs (exit 0).
    expect((await sched(d, ['patch', 'halting', '--task', 'verification', '--task', 'compaction'])).code).toBe(0);
    const good = await sched(d, ['run', 'halting', '--json']);
    expect(good.code, good.stderr).toBe(0);
    expect(JSON.parse(good.stdout)).toMatchObject({ outcome: 'SUCCEEDED', jobs: [{ task: 'verification', state: 'SUCCEEDED' }, { task: 'compaction', state: 'SUCCEEDED' }] });

    // A window that excludes this hour and the next: one SKIPPED job, exit 3.
    const hour = new Date().getUTCHours();
    const win = `${(hour + 2) % 24}-${(hour + 3) % 24}`;
    expect((await sched(d, ['patch', 'halting', '--window', win])).code).toBe(0);
    const out = await sched(d, ['run', 'halting']);
    expect(out.code).toBe(3);
    const text = `outside window ${win.split('-').map((x) => x.padStart(2, '0')).join('-')} UTC`;
    expect(out.stderr).toBe(`baton schedules run: schedule halting: SKIPPED (${text})\n`);
    const after = JSON.parse((await worlds.w.baton(['jobs', '--kind', 'maintenance', '--json', '--state-dir', d.stateDir])).stdout) as { jobs: JobRecord[] };
    expect(after.jobs).toHaveLength(6);
    expect(after.jobs[0]).toMatchObject({ state: 'SKIPPED', code: 'E_OUTSIDE_WINDOW', reason: text, maintenance: { task: 'verification', schedule: 'halting' } });
    expect((await sched(d, ['run', 'nosuch'])).stderr).toBe('baton: no schedule named "nosuch" (E_NO_SUCH_SCHEDULE)\n');
    await stopDaemon(d);
    // The daemon logged the run (warn level and up reach stderr in tests).
    await pollUntil(() => d.out.stderr.includes('"event":"schedule.halted"'), 'schedule.halted in the log');
  });

  it('a stop during a run cancels the running task and halts the rest; the supervisor exits 0', async () => {
    const d = await worlds.w.startDaemon(); // fixtures/primitive: task `work` with steps/stepMs
    const file = path.join(d.dir, 'long.json');
    writeFileSync(file, JSON.stringify({ name: 'long', cron: '@daily', tasks: [{ task: 'work', params: { steps: 400, stepMs: 50 } }, { task: 'work' }] }));
    expect((await sched(d, ['create', '--file', file])).code).toBe(0);
    const running = sched(d, ['run', 'long', '--json']);
    await pollUntil(async () => {
      const s = JSON.parse((await sched(d, ['get', 'long', '--json'])).stdout) as ScheduleView & { running: boolean };
      return s.running;
    }, 'the schedule to run', 15_000, 50);
    await pollUntil(async () => {
      const j = (JSON.parse((await worlds.w.baton(['jobs', '--kind', 'maintenance', '--json', '--state-dir', d.stateDir])).stdout) as { jobs: JobRecord[] }).jobs[0];
      return j?.state === 'RUNNING';
    }, 'the first task to run', 15_000, 50);
    await stopDaemon(d);
    const r = await running;
    expect(r.code, r.stderr).toBe(2);
    expect(JSON.parse(r.stdout)).toMatchObject({ outcome: 'HALTED', reason: 'halted: work CANCELLED', jobs: [{ task: 'work', state: 'CANCELLED' }, { task: 'work', state: 'SKIPPED' }] });
  });

  it('last runs survive a restart; a run cut off by SIGKILL of the supervisor shows as FAILED (interrupted)', async () => {
    const d = await worlds.w.startDaemon(); // fixtures/primitive: task `work` with steps/stepMs
    for (const [name, steps] of [['quick', 2], ['long', 400]] as const) {
      writeFileSync(path.join(d.dir, `${name}.json`), JSON.stringify({ name, cron: '@daily', tasks: [{ task: 'work', params: { steps, stepMs: 50 } }, { task: 'work' }] }));
      expect((await sched(d, ['create', '--file', path.join(d.dir, `${name}.json`)])).code).toBe(0);
    }
    const quick = await sched(d, ['run', 'quick', '--json']);
    expect(quick.code, quick.stderr).toBe(0);
    const quickRun = JSON.parse(quick.stdout) as RunSummary;
    expect(quickRun).toMatchObject({ outcome: 'SUCCEEDED', jobs: [{ state: 'SUCCEEDED' }, { state: 'SUCCEEDED' }] });
    const cutOff = sched(d, ['run', 'long', '--json']);
    const working = await pollUntil(async () => {
      const j = (JSON.parse((await worlds.w.baton(['jobs', '--kind', 'maintenance', '--json', '--state-dir', d.stateDir])).stdout) as { jobs: JobRecord[] }).jobs[0];
      return j?.state === 'RUNNING' && j.maintenance?.schedule === 'long' ? j : undefined;
    }, 'the long run\'s first task to run', 15_000, 50);
    d.child.kill('SIGKILL');
    await exitOf(d.child);
    expect((await cutOff).code).not.toBe(0);

    const d2 = await worlds.w.startDaemon({ dir: d.dir, listen: `tcp://127.0.0.1:${d.port}` });
    const view = async (name: string) => JSON.parse((await sched(d2, ['get', name, '--json'])).stdout) as ScheduleView & { running: boolean };
    expect((await view('quick')).lastRun).toEqual(quickRun);
    const long = await view('long');
    expect(long.running).toBe(false);
    expect(long.lastRun).toMatchObject({ schedule: 'long', trigger: 'admin', outcome: 'FAILED', reason: 'interrupted: the supervisor exited during this run', jobs: [] });
    expect((await sched(d2, ['get', 'long'])).stdout).toMatch(/\nlast run +FAILED \(admin\) at \S+Z: interrupted: the supervisor exited during this run\n/);
    // Its task is in the history as the job store leaves every cut-off job.
    const jobs = (JSON.parse((await worlds.w.baton(['jobs', '--kind', 'maintenance', '--json', '--state-dir', d2.stateDir])).stdout) as { jobs: JobRecord[] }).jobs;
    expect(jobs.find((j) => j.id === working.id)).toMatchObject({ state: 'FAILED', code: 'E_SUPERVISOR_RESTARTED' });
    expect(d2.out.stderr).toContain('"event":"schedule.interrupted"');
    await stopDaemon(d2);
  });
});
