/**
 * Each schedule's last run on disk (src/daemon/schedule-runs.ts), with real files: it reloads,
 * a run cut off by an exit loads as FAILED, runs of deleted schedules are dropped, a
 * corrupt file is set aside without stopping the load, a failed write is logged and
 * never thrown. The Scheduler writes a run's progress after each task. The restart of a
 * real supervisor is in test/schedules.test.ts.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { INTERRUPTED_RUN_REASON, ScheduleRunLog, type RunSummary } from '../src/daemon/schedule-runs.js';
import { Scheduler } from '../src/daemon/scheduler.js';
import { ScheduleStore } from '../src/daemon/schedules.js';
import type { JobRecord } from '../src/daemon/jobs.js';
import { Harness } from './support/harness.js';

const h = new Harness();
afterEach(() => h.cleanup());

function capture() {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { log, events: () => lines.map((l) => l.event), lines };
}

const onDisk = (file: string): RunSummary[] => (JSON.parse(readFileSync(file, 'utf8')) as { version: number; runs: RunSummary[] }).runs;

const done = (schedule: string, outcome: RunSummary['outcome'] = 'SUCCEEDED'): RunSummary => ({
  schedule,
  trigger: 'schedule',
  startedAt: '2026-12-01T02:30:00.000Z',
  endedAt: '2026-12-01T02:30:05.000Z',
  outcome,
  jobs: [{ id: `${schedule}-1`, task: 'compaction', state: outcome === 'SUCCEEDED' ? 'SUCCEEDED' : 'FAILED' }],
});

describe('ScheduleRunLog', () => {
  it('keeps the last run per schedule across a reload; forget removes it from the file', async () => {
    const file = path.join(h.tempDir('runs-'), 'schedule-runs.json');
    const a = new ScheduleRunLog(file);
    await a.load(() => true); // no file yet
    expect(existsSync(file)).toBe(false);
    await a.record(done('nightly', 'FAILED'));
    await a.record(done('nightly')); // replaces the earlier one
    await a.record(done('weekly'));
    const b = new ScheduleRunLog(file);
    await b.load(() => true);
    expect(b.get('nightly')).toEqual(done('nightly'));
    expect(b.get('weekly')).toEqual(done('weekly'));
    expect(b.get('other')).toBeUndefined();
    await b.forget('weekly');
    expect(onDisk(file).map((r) => r.schedule)).toEqual(['nightly']);
  });

  it('a run left RUNNING becomes FAILED (interrupted) and is written back; runs of unknown schedules are dropped', async () => {
    const file = path.join(h.tempDir('runs-'), 'schedule-runs.json');
    const cut: RunSummary = { schedule: 'nightly', trigger: 'admin', startedAt: '2026-12-01T02:30:00.000Z', outcome: 'RUNNING', jobs: [{ id: 'j1', task: 'compaction', state: 'SUCCEEDED' }] };
    writeFileSync(file, JSON.stringify({ version: 1, runs: [cut, done('deleted')] }));
    const c = capture();
    const runs = new ScheduleRunLog(file, c.log);
    await runs.load((name) => name !== 'deleted');
    const expected = { ...cut, outcome: 'FAILED', reason: INTERRUPTED_RUN_REASON };
    expect(runs.get('nightly')).toEqual(expected);
    expect(runs.get('deleted')).toBeUndefined();
    expect(onDisk(file)).toEqual([expected]);
    expect(c.lines.find((l) => l.event === 'schedule.interrupted')).toMatchObject({ level: 40, schedule: 'nightly', startedAt: cut.startedAt });
  });

  it('a corrupt file is set aside and the list starts empty; a failed write is logged, never thrown', async () => {
    const dir = h.tempDir('runs-');
    const file = path.join(dir, 'schedule-runs.json');
    writeFileSync(file, '{"version": 1, "runs": [trunc');
    const c = capture();
    const runs = new ScheduleRunLog(file, c.log);
    await runs.load(() => true);
    expect(c.events()).toContain('schedules.runs_corrupt');
    const aside = readdirSync(dir).filter((f) => f.startsWith('schedule-runs.json.corrupt-'));
    expect(aside).toHaveLength(1);
    expect(readFileSync(path.join(dir, aside[0]!), 'utf8')).toBe('{"version": 1, "runs": [trunc');
    await runs.record(done('nightly'));
    expect(onDisk(file)).toEqual([done('nightly')]);

    const c2 = capture();
    const nowhere = new ScheduleRunLog(path.join(dir, 'no-such-dir', 'schedule-runs.json'), c2.log);
    await expect(nowhere.record(done('nightly'))).resolves.toBeUndefined();
    expect(nowhere.get('nightly')).toEqual(done('nightly')); // still answered from memory
    expect(c2.lines.find((l) => l.event === 'schedules.runs_write_failed')).toMatchObject({ level: 50, err: expect.stringContaining('ENOENT') });
  });

  it('the Scheduler writes the run when it starts, after each task and at its end', async () => {
    const dir = h.tempDir('runs-');
    const file = path.join(dir, 'schedule-runs.json');
    const store = new ScheduleStore(path.join(dir, 'schedules.json'));
    await store.create({ name: 'two', cron: '@daily', tasks: [{ task: 'compaction' }, { task: 'verification' }] });
    const runs = new ScheduleRunLog(file);
    const gates: (() => void)[] = [];
    let n = 0;
    const scheduler = new Scheduler({
      store,
      runs,
      runTask: async () => {
        await new Promise<void>((r) => gates.push(r));
        return { id: `job-${++n}`, kind: 'maintenance', state: 'SUCCEEDED', trigger: 'schedule', createdAt: new Date().toISOString() } satisfies JobRecord;
      },
      skipTask: () => Promise.reject(new Error('nothing is skipped here')),
    });
    const run = scheduler.runNow('two');
    const wrote = async (want: (r: RunSummary | undefined) => boolean): Promise<RunSummary | undefined> => {
      for (let i = 0; i < 200; i++) {
        await runs.flushed();
        const r = existsSync(file) ? onDisk(file)[0] : undefined;
        if (want(r)) return r;
        await new Promise((res) => setTimeout(res, 5));
      }
      throw new Error('the expected run was never written');
    };
    expect(await wrote((r) => r?.outcome === 'RUNNING')).toMatchObject({ schedule: 'two', trigger: 'admin', jobs: [] });
    gates.shift()!();
    expect(await wrote((r) => r?.jobs.length === 1)).toMatchObject({ outcome: 'RUNNING', jobs: [{ id: 'job-1', task: 'compaction', state: 'SUCCEEDED' }] });
    await wrote(() => gates.length === 1);
    gates.shift()!();
    expect((await run).outcome).toBe('SUCCEEDED');
    expect(onDisk(file)).toEqual([await run]);
  });
});
