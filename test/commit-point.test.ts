/**
 * The commit point and the rules around it (issue 18, PROTOCOL.md 7.3, 7.4, 7.7, 7.9, 9):
 * a successor that dies after Ready is never reported committed; the old incumbent
 * never outlives its Committed by more than its exit grace; an aborted successor that
 * served finishes its requests before it exits; Drained is checked; seal progress and
 * the Shutdown reason reach their peers. Each test drives a real Supervisor with the
 * primitive app (real processes, sockets, locks, signals).
 */
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isAlive, waitForExit } from '../src/os/proc.js';
import { Load, lostWrites } from './support/engine.js';
import { pollUntil } from './support/harness.js';
import { putAll, useWorlds, type World } from './support/world.js';

const worlds = useWorlds();

/** The pid of the successor the next handoff spawns. */
function nextSpawn(w: World): Promise<number> {
  return new Promise((resolve) => w.sup.once('spawned', (pid: number) => resolve(pid)));
}

describe('commit point: a dead successor is never committed', () => {
  it('a successor that dies right after sending Ready: three handoffs in a row, each aborted, never committed', async () => {
    const w = await worlds.start({ restartBaseMs: 50 });
    const acked = await putAll(w, 8, 'a');
    for (let i = 0; i < 3; i++) {
      const serving = await w.settledServer();
      const spawned = nextSpawn(w);
      const r = await w.sup.performHandoff({ successorCrashPoint: 'successor.after_ready', crashMarkerDir: w.markers });
      const successor = await spawned;
      expect(await waitForExit(successor, 5_000)).toBe(true);
      expect(r.outcome, `handoff ${i}: ${r.reason}`).toBe('aborted');
      expect(r.newPid).not.toBe(successor);
      // The old incumbent serves on, or (when the death was seen only after Commit had gone to it) a
      // cold start within this handoff; either way the result says which pid serves, and it is alive.
      const server = await w.settledServer();
      if (r.restoredBy) {
        expect(r.code).toBe('E_SUCCESSOR_LOST');
        expect(r.newPid).toBeUndefined();
        expect(server).toBe(r.restoredBy.pid);
      } else {
        expect(r.newPid).toBe(serving);
        expect(server).toBe(serving);
      }
      expect(w.sup.incumbent?.pid).toBe(server);
      expect(await lostWrites(w.port, acked)).toEqual([]);
    }
  });

  it('a successor that dies on Commit after the incumbent committed: reported aborted (E_SUCCESSOR_LOST), nothing named as serving, restored by a cold start', async () => {
    const w = await worlds.start({ restartBaseMs: 50 });
    const gen1 = w.sup.incumbent!.pid;
    const acked = await putAll(w, 8, 'b');
    const spawned = nextSpawn(w);
    const r = await w.sup.performHandoff({ successorCrashPoint: 'successor.on_commit', crashMarkerDir: w.markers });
    const successor = await spawned;
    expect(r.outcome).toBe('aborted');
    expect(r.code).toBe('E_SUCCESSOR_LOST');
    expect(r.reason).toMatch(new RegExp(`successor \\(pid ${successor}\\) died after the incumbent \\(pid ${gen1}\\) had committed`));
    expect(r.newPid).toBeUndefined();
    expect(r.restoredBy?.outcome).toBe('committed');
    expect(r.restoredBy?.lostIncumbent).toMatch(/answered Commit with Committed/);
    expect(isAlive(gen1)).toBe(false);
    expect(await w.settledServer()).toBe(r.restoredBy!.pid);
    expect(await lostWrites(w.port, acked)).toEqual([]);
  });
});

describe('commit point: the old incumbent', () => {
  it('one that lingers after Committed is SIGKILLed after its 1 s exit grace, its group swept, and stop() waits for it', async () => {
    const w = worlds.create();
    const cold = await w.sup.start({ successorEnv: { PRIM_LINGER_ON_EXIT: '1' } });
    expect(cold.outcome, cold.reason).toBe('committed');
    const retired: [number, boolean][] = [];
    w.sup.on('retired', (pid: number, killed: boolean) => retired.push([pid, killed]));
    const r = await w.sup.performHandoff({ successorEnv: { PRIM_LINGER_ON_EXIT: '' } });
    expect(r.outcome, r.reason).toBe('committed');
    // Its own worker would SIGKILL it 3 s after Committed; the supervisor does it after 1 s.
    await pollUntil(() => retired.length > 0 || undefined, 'the old incumbent retired', 2_500, 20);
    expect(retired).toEqual([[cold.newPid, true]]);
    expect(isAlive(cold.newPid!)).toBe(false);

    // The new one lingers too (gen 2 had the knob off; gen 3 gets it): stop() right after a commit waits for the kill.
    const r2 = await w.sup.performHandoff({ successorEnv: { PRIM_LINGER_ON_EXIT: '1' } });
    expect(r2.outcome, r2.reason).toBe('committed');
    await pollUntil(() => retired.some(([pid, killed]) => pid === r.newPid && !killed) || undefined, 'gen 2 exiting by itself within the grace', 5_000, 20);
    const r3 = await w.sup.performHandoff({ successorEnv: { PRIM_LINGER_ON_EXIT: '' } });
    expect(r3.outcome, r3.reason).toBe('committed');
    await w.sup.stop(5_000);
    expect(isAlive(r2.newPid!)).toBe(false);
    expect(retired.map(([pid]) => pid)).toContain(r2.newPid);
  });
});

describe('abort: a successor that served finishes its requests before it exits', () => {
  it('Abort after Ready (unhealthy) under keep-alive load: the successor drains, no request fails, no write is lost', async () => {
    const w = await worlds.start();
    const load = new Load(w.port, 16);
    try {
      await new Promise((r) => setTimeout(r, 300));
      for (let i = 0; i < 2; i++) {
        const spawned = nextSpawn(w);
        const r = await w.sup.performHandoff({ successorEnv: { PRIM_HEALTHZ_FALSE: '1' } });
        expect(r.outcome).toBe('aborted');
        expect(r.code).toBe('E_READY_REJECTED');
        const successor = await spawned;
        // It served between Begin and the abort (the load reached it) and drained before exiting.
        expect(w.hooks(successor)).toEqual(expect.arrayContaining(['begin', 'drain']));
      }
    } finally {
      await load.stop();
    }
    expect(load.requests).toBeGreaterThan(100);
    expect(load.failures, `failed requests: ${JSON.stringify(load.failures)}`).toEqual({});
    expect(await lostWrites(w.port, load.acked)).toEqual([]);
  });
});

describe('a bounded blackout: a successor that hangs after Begin', () => {
  it('is aborted after the Begin → Ready budget (not the 300 s deadline); requests queued meanwhile complete; none fails', async () => {
    const w = await worlds.start();
    const gen1 = w.sup.incumbent!.pid;
    const load = new Load(w.port, 16);
    let r;
    const t0 = Date.now();
    try {
      await new Promise((res) => setTimeout(res, 300));
      r = await w.sup.performHandoff({ readyMs: 2_000, successorEnv: { PRIM_NEVER_READY: '1' } });
      await new Promise((res) => setTimeout(res, 300)); // the old incumbent serves again
    } finally {
      await load.stop();
    }
    expect(r.outcome).toBe('aborted');
    expect(r.code, r.reason).toBe('E_READY_TIMEOUT');
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(r.phases.find((p) => p.phase === 'await_ready')!.ms).toBeLessThan(3_000);
    expect(await w.settledServer()).toBe(gen1);
    expect(load.failures, `failed requests: ${JSON.stringify(load.failures)}`).toEqual({});
    expect(await lostWrites(w.port, load.acked)).toEqual([]);
  });
});

describe('Drained, seal progress, Shutdown', () => {
  it('Drained with openConnsRemaining > 0 commits and is reported (openConnsAtDrain)', async () => {
    const w = worlds.create();
    const cold = await w.sup.start({ successorEnv: { PRIM_DRAIN_REPORT_OPEN: '7' } });
    expect(cold.outcome).toBe('committed');
    const r = await w.sup.performHandoff({ successorEnv: { PRIM_DRAIN_REPORT_OPEN: '' } });
    expect(r.outcome, r.reason).toBe('committed');
    expect(r.openConnsAtDrain).toBe(7);
    const again = await w.sup.performHandoff();
    expect(again.openConnsAtDrain).toBeUndefined();
  });

  it('SealProgress from the app reaches the supervisor (sealProgress events, newest wins, at most every 200 ms)', async () => {
    const w = worlds.create({ shards: 4 });
    const cold = await w.sup.start({ successorEnv: { PRIM_SEAL_STEP_MS: '250' } });
    expect(cold.outcome).toBe('committed');
    const progress: [number, number][] = [];
    w.sup.on('sealProgress', (done: number, total: number) => progress.push([done, total]));
    const r = await w.sup.performHandoff({ successorEnv: { PRIM_SEAL_STEP_MS: '' } });
    expect(r.outcome, r.reason).toBe('committed');
    expect(progress.length).toBeGreaterThanOrEqual(2);
    expect(progress[0]).toEqual([1, 4]);
    for (const [done, total] of progress) expect(done <= total && total === 4).toBe(true);
  });

  for (const reason of ['admin', 'signal', 'error'] as const) {
    it(`Shutdown{reason: ${reason}} reaches the app, and the app hears that the stop completed`, async () => {
      const w = await worlds.start();
      const pid = w.sup.incumbent!.pid;
      await w.sup.stop(10_000, reason);
      expect(await waitForExit(pid, 5_000)).toBe(true);
      const hooks = readdirSync(w.markers).filter((f) => f.startsWith(`${pid}.shutdown-`)).map((f) => f.slice(`${pid}.`.length));
      expect(hooks.sort()).toEqual([`shutdown-completed-${reason}`, 'shutdown-requested', `shutdown-requested-${reason}`].sort());
    });
  }
});
