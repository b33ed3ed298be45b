/**
 * Supervisor lifecycle records (issue 8: "the supervisor records shutdown completed
 * (duration)"), through the real binary: run → stop → run shows the previous run's
 * shutdown (reason, duration) in `baton status` and GET /v1/lifecycle; a SIGTERM stop
 * says so; a supervisor SIGKILLed leaves a run without a completed shutdown. The list
 * is bounded and survives a reload.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { adminRequest } from '../src/daemon/admin.js';
import { adminSocketPath } from '../src/daemon/daemon.js';
import { LifecycleLog, MAX_LIFECYCLE_RECORDS, type LifecycleRecord, type PreviousShutdown } from '../src/daemon/lifecycle.js';
import { createLogger } from '../src/os/log.js';
import { exitOf, Harness } from './support/harness.js';
import { useCliWorlds, type DaemonHandle } from './support/cli.js';

const h = new Harness();
const worlds = useCliWorlds(h);

async function previous(d: DaemonHandle): Promise<PreviousShutdown | null> {
  return ((await worlds.w.status(d)) as unknown as { previousShutdown: PreviousShutdown | null }).previousShutdown;
}

async function lifecycle(d: DaemonHandle): Promise<{ runId: string; previousShutdown: PreviousShutdown | null; records: LifecycleRecord[] }> {
  const r = await adminRequest(adminSocketPath(d.stateDir), 'GET', '/v1/lifecycle', undefined, { timeoutMs: 10_000 });
  expect(r.status).toBe(200);
  return r.body as unknown as { runId: string; previousShutdown: PreviousShutdown | null; records: LifecycleRecord[] };
}

describe('lifecycle records', () => {
  it('run → stop → run: status shows the previous shutdown with its reason and duration; SIGTERM and SIGKILL are told apart', async () => {
    const first = await worlds.w.startDaemon();
    expect(await previous(first)).toBeNull();
    const firstText = await worlds.w.baton(['status', '--state-dir', first.stateDir]);
    expect(firstText.stdout).toMatch(/last stop +none recorded/);
    const firstPid = (await worlds.w.status(first)).supervisor.pid;
    const stop = await worlds.w.baton(['stop', '--state-dir', first.stateDir, '--timeout', '20']);
    expect(stop.code, stop.stderr).toBe(0);
    expect(await exitOf(first.child)).toEqual({ code: 0, signal: null });

    // 2nd run: the first one's shutdown, requested over the admin API, completed.
    const second = await worlds.w.startDaemon({ dir: first.dir });
    const p = await previous(second);
    expect(p).toMatchObject({ pid: firstPid, completed: true, reason: 'admin', timeoutS: 20, exitCode: 0 });
    expect(p!.durationMs).toBeGreaterThanOrEqual(0);
    expect(Date.parse(p!.completedAt!)).toBeGreaterThanOrEqual(Date.parse(p!.requestedAt!));
    const text = await worlds.w.baton(['status', '--state-dir', second.stateDir]);
    expect(text.stdout).toMatch(new RegExp(`last stop +completed in \\d+ ms at \\S+ \\(admin; supervisor pid ${firstPid}, exit 0\\)`));
    const l = await lifecycle(second);
    expect(l.records.map((r) => r.event)).toEqual(['startup.completed', 'shutdown.completed', 'shutdown.requested', 'startup.completed']);
    expect(l.records[0]).toMatchObject({ runId: l.runId, components: ['listeners', 'journal', 'app', 'admin'] });
    expect(l.records[0]!.durationMs).toBeGreaterThan(0);
    expect(l.records[3]!.runId).toBe(p!.runId);
    expect(l.records[1]!.durationMs).toBe(p!.durationMs);

    // SIGTERM: reason signal.
    second.child.kill('SIGTERM');
    expect(await exitOf(second.child)).toEqual({ code: 0, signal: null });
    const third = await worlds.w.startDaemon({ dir: first.dir });
    expect(await previous(third)).toMatchObject({ completed: true, reason: 'signal', signal: 'SIGTERM', timeoutS: 30 });

    // SIGKILL: no shutdown recorded; the next supervisor says so (and re-adopts the app).
    const thirdPid = (await worlds.w.status(third)).supervisor.pid;
    third.child.kill('SIGKILL');
    await exitOf(third.child);
    const fourth = await worlds.w.startDaemon({ dir: first.dir });
    const killed = await previous(fourth);
    expect(killed).toMatchObject({ pid: thirdPid, completed: false });
    expect(killed!.durationMs).toBeUndefined();
    expect((await worlds.w.baton(['status', '--state-dir', fourth.stateDir])).stdout).toMatch(new RegExp(`last stop +did not complete: supervisor pid ${thirdPid} ended without recording its shutdown`));
    expect((await worlds.w.baton(['stop', '--state-dir', fourth.stateDir])).code).toBe(0);
    expect(await exitOf(fourth.child)).toEqual({ code: 0, signal: null });
  });

  it('keeps the newest 50 records, rewritten whole (a reload sees them), and sets an unreadable file aside', async () => {
    const dir = h.tempDir('baton-lifecycle-');
    const file = path.join(dir, 'lifecycle.json');
    const log = createLogger('test', {});
    const a = new LifecycleLog(file, log);
    await a.load();
    for (let i = 0; i < 30; i++) {
      await a.record('startup.completed', { durationMs: i });
      await a.record('shutdown.requested', { reason: 'admin' });
    }
    await a.record('shutdown.completed', { durationMs: 7, exitCode: 0 });
    expect(a.list()).toHaveLength(MAX_LIFECYCLE_RECORDS);
    const b = new LifecycleLog(file, log);
    await b.load();
    expect(b.list()).toEqual(a.list());
    expect(b.previousShutdown).toMatchObject({ runId: a.runId, completed: true, durationMs: 7 });
    expect(b.runId).not.toBe(a.runId);

    writeFileSync(file, '{"version":1,"records":[{"event":"startup.comp'); // torn by hand
    const c = new LifecycleLog(file, log);
    await c.load();
    expect(c.previousShutdown).toBeUndefined();
    await c.record('startup.completed', { durationMs: 1 });
    expect((JSON.parse(readFileSync(file, 'utf8')) as { records: unknown[] }).records).toHaveLength(1);
  });
});
