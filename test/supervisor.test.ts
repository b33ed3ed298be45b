import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { HandoffError } from '../src/os/errors.js';
import { lockHolder } from '../src/os/lock.js';
import { isAlive } from '../src/os/proc.js';
import type { HandoffSpec } from '../src/supervisor/options.js';
import { crashEnv } from '../src/supervisor/generation.js';
import { healthz, Load, lostWrites } from './support/engine.js';
import { putAll, useWorlds } from './support/world.js';

const worlds = useWorlds();

describe('supervisor: happy path', () => {
  it('cold-starts generation 1, hands off to generation 2, and keeps every write', async () => {
    const w = await worlds.start();
    const old = w.sup.incumbent!;
    const gen1 = old.pid;
    expect(await w.settledServer()).toBe(gen1);
    const acked = await putAll(w, 20, 'a');

    const result = await w.sup.performHandoff();
    expect(result.outcome, result.reason).toBe('committed');
    expect(result.oldPid).toBe(gen1);
    expect(result.phases.map((p) => p.phase)).toEqual(['spawning', 'hello', 'draining', 'sealing', 'begin', 'await_ready', 'committing']);
    const gen2 = result.newPid!;
    expect(gen2).not.toBe(gen1);
    expect(await w.settledServer()).toBe(gen2);
    expect((await healthz(w.port)).generation).toBe(2);
    expect(w.hooks(gen1)).toEqual(expect.arrayContaining(['drain', 'seal']));
    expect(w.hooks(gen1)).not.toContain('resume');
    expect(await lostWrites(w.port, acked)).toEqual([]);
    // The old incumbent exits on its own after Committed, with status 0.
    expect(await old.exited).toEqual({ code: 0, signal: undefined });
    const holder = await lockHolder(w.dataDir);
    expect(holder?.owner.pid).toBe(gen2);
  });

  it('reports spawned, sealed and ready with the handoff\'s values, and waits on a phaseGate', async () => {
    const gated: string[] = [];
    const w = await worlds.start({
      supervisor: {
        phaseGate: async (phase) => {
          gated.push(phase);
          if (phase === 'begin') await new Promise((r) => setTimeout(r, 300));
        },
      },
    });
    await putAll(w, 6, 'e');
    const seen: Record<string, unknown[]> = {};
    for (const ev of ['spawned', 'sealed', 'ready']) w.sup.on(ev, (...args: unknown[]) => (seen[ev] = args));
    gated.length = 0;
    const result = await w.sup.performHandoff();
    expect(result.outcome, result.reason).toBe('committed');
    expect(gated).toEqual(['spawning', 'hello', 'draining', 'sealing', 'begin', 'await_ready', 'committing']);
    expect(result.phases.find((p) => p.phase === 'begin')!.ms).toBeGreaterThanOrEqual(300);
    expect(seen.spawned!.slice(0, 2)).toEqual([result.newPid, 2]);
    const [revisions, fingerprint] = seen.sealed as [Record<string, bigint>, Uint8Array];
    expect(Object.values(revisions).reduce((a, b) => a + b, 0n)).toBe(6n); // six acknowledged writes
    expect(fingerprint).toHaveLength(32);
    const [ready] = seen.ready as [{ healthzOk: boolean; advertisedRevisionPerShard: Record<string, bigint> }];
    expect(ready.healthzOk).toBe(true);
    expect(ready.advertisedRevisionPerShard).toEqual(revisions);
  });

  it('incumbent dies after sealing and the successor\'s Ready is rejected: a cold start brings the service back at once (B2)', async () => {
    const w = worlds.create();
    const cold = await w.sup.start({ successorEnv: crashEnv('incumbent.after_seal_complete', w.markers) });
    expect(cold.outcome, cold.reason).toBe('committed');
    const acked = await putAll(w, 6, 'p');
    const t0 = Date.now();
    const result = await w.sup.performHandoff({ successorEnv: { PRIM_HEALTHZ_FALSE: '1' }, deadlineMs: 60_000 });
    // Not a promotion that waits for a second Ready until the deadline.
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(result.outcome).toBe('aborted');
    expect(result.restoredBy?.outcome).toBe('committed');
    expect(result.restoredBy?.lostIncumbent).toMatch(/^it exited \(code -, signal SIGKILL\)$/);
    expect(await w.settledServer()).toBe(result.restoredBy!.pid);
    expect(await lostWrites(w.port, acked)).toEqual([]);
  });

  it('listenTarget has no cliff: with no spare copies at all, the incumbent serves again after 6 aborted handoffs in a row (fresh copies over IPC), under load', async () => {
    const w = worlds.create({ supervisor: { listenerSpares: 0 } });
    const cold = await w.sup.start();
    expect(cold.outcome, cold.reason).toBe('committed');
    const gen1 = w.sup.incumbent!.pid;
    const load = new Load(w.port, 8);
    try {
      for (let i = 0; i < 6; i++) {
        const r = await w.sup.performHandoff({ successorEnv: { PRIM_HEALTHZ_FALSE: '1' } });
        expect(r.outcome, `handoff ${i + 1}: ${r.reason}`).toBe('aborted');
        expect(r.code).toBe('E_READY_REJECTED');
        expect(r.restoredBy, `handoff ${i + 1} needed a cold start`).toBeUndefined();
        expect(await w.settledServer()).toBe(gen1);
      }
    } finally {
      await load.stop();
    }
    expect(w.hooks(gen1)).toContain('resume');
    expect(load.failures, `failed requests: ${JSON.stringify(load.failures)}`).toEqual({});
    expect(load.acked.size).toBeGreaterThan(0);
    expect(await lostWrites(w.port, load.acked)).toEqual([]);
    // Each resume's copy is owned once (by the app's server): after 6 aborts the app holds
    // exactly one fd of the listening socket, not one per abort.
    expect(w.listenerFdsOf(gen1)).toBe(1);
  });

  it('listenerCopies false: the app gets no IPC channel, so listenTarget falls back to the spares (none here: the second abort cold-starts)', async () => {
    const w = worlds.create({ supervisor: { listenerSpares: 1, listenerCopies: false } });
    expect((await w.sup.start()).outcome).toBe('committed');
    const first = await w.sup.performHandoff({ successorEnv: { PRIM_HEALTHZ_FALSE: '1' } });
    expect(first.restoredBy).toBeUndefined();
    const second = await w.sup.performHandoff({ successorEnv: { PRIM_HEALTHZ_FALSE: '1' } });
    expect(second.restoredBy?.lostIncumbent).toMatch(/all 1 spare copies are used/);
    expect(second.restoredBy?.outcome).toBe('committed');
  });

  it('an app re-listening with listenFd (spare copies only) and none left cannot resume: it exits at once and a cold start brings the service back (no write lost)', async () => {
    // One spare: the first abort re-listens on it, the second finds none (E_NO_SPARE_LISTENER in the app).
    const w = worlds.create({ supervisor: { listenerSpares: 1 }, appEnv: { PRIM_LISTEN_FD: '1' } });
    const cold = await w.sup.start();
    expect(cold.outcome, cold.reason).toBe('committed');
    const gen1 = w.sup.incumbent!.pid;
    const acked = await putAll(w, 4, 'q');
    const first = await w.sup.performHandoff({ successorEnv: { PRIM_HEALTHZ_FALSE: '1' } });
    expect(first.outcome).toBe('aborted');
    expect(first.restoredBy).toBeUndefined();
    expect(await w.settledServer()).toBe(gen1);
    for (const [k, v] of await putAll(w, 4, 'r')) acked.set(k, v);

    const t0 = Date.now();
    const second = await w.sup.performHandoff({ successorEnv: { PRIM_HEALTHZ_FALSE: '1' } });
    expect(second.outcome).toBe('aborted');
    expect(second.code).toBe('E_READY_REJECTED');
    // Restored within this handoff (not by the restart policy later, not after the 30 s resume timeout).
    expect(second.restoredBy?.outcome).toBe('committed');
    expect(second.restoredBy?.lostIncumbent).toMatch(/E_RESUME_FAILED: .*listener l0: all 1 spare copies are used/);
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(isAlive(gen1)).toBe(false);
    expect(await w.settledServer()).toBe(second.restoredBy!.pid);
    expect(await lostWrites(w.port, acked)).toEqual([]);
  });

  it('refuses a second handoff while one runs, at once and with a distinct error', async () => {
    const w = await worlds.start();
    const first = w.sup.performHandoff();
    const t0 = Date.now();
    await expect(w.sup.performHandoff()).rejects.toSatisfy((e: unknown) => e instanceof HandoffError && e.code === 'E_HANDOFF_IN_PROGRESS');
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect((await first).outcome).toBe('committed');
  });
});

describe('supervisor: every failure before Commit aborts and the incumbent serves again', () => {
  interface AbortCase {
    name: string;
    /** Env for generation 1 (the incumbent); the successor gets these knobs switched off. */
    incumbentEnv?: Record<string, string>;
    successorEnv?: Record<string, string>;
    spec?: HandoffSpec;
    code: string;
    /** What the reason must say. */
    reason?: RegExp;
    /** Hook the incumbent must have run (drain/seal) before the abort. */
    hook?: string;
  }
  const cases: AbortCase[] = [
    { name: 'successor exits at start', successorEnv: { PRIM_START_FAIL: '1' }, code: 'E_PEER_DIED' },
    { name: 'drain throws', incumbentEnv: { PRIM_DRAIN_FAIL_ONCE: 'MARKER' }, code: 'E_DRAIN_FAILED', hook: 'drain' },
    { name: 'seal fails once (lock never released)', incumbentEnv: { PRIM_SEAL_FAIL_ONCE: 'MARKER' }, code: 'E_SEAL_FAILED', hook: 'seal' },
    {
      // The supervisor allows the drain grace + 5 s; this drain hangs 8 s past a 500 ms grace.
      name: 'drain overruns its grace',
      incumbentEnv: { PRIM_DRAIN_HANG_ONCE: 'MARKER' },
      spec: { drainGraceMs: 500 },
      code: 'E_TIMEOUT',
      hook: 'drain',
    },
    { name: 'seal overruns the deadline', incumbentEnv: { PRIM_SEAL_BLOCK_MS: '3000' }, spec: { deadlineMs: 1_500 }, code: 'E_TIMEOUT', hook: 'seal' },
    { name: 'successor never sends Ready (deadline)', successorEnv: { PRIM_NEVER_READY: '1' }, spec: { deadlineMs: 3_000 }, code: 'E_TIMEOUT', hook: 'seal' },
    { name: 'successor hangs after Begin (its own Begin → Ready budget, well inside the deadline)', successorEnv: { PRIM_NEVER_READY: '1' }, spec: { readyMs: 1_500 }, code: 'E_READY_TIMEOUT', reason: /did not send Ready within 1500 ms of Begin/, hook: 'seal' },
    { name: 'Ready with healthzOk=false', successorEnv: { PRIM_HEALTHZ_FALSE: '1' }, code: 'E_READY_REJECTED', hook: 'seal' },
    { name: 'Ready with a revision behind the seal', successorEnv: { PRIM_ADVERTISE_BEHIND: '1' }, code: 'E_READY_REJECTED', hook: 'seal' },
    { name: 'Ready from a process whose lock owner record names someone else', successorEnv: { PRIM_FAKE_LOCK_OWNER: '1' }, code: 'E_READY_REJECTED', hook: 'seal' },
    // The record alone is not the lock (PROTOCOL.md 7.3 step 5, section 12): the directory must exist and be the one the record describes.
    { name: 'Ready with only an owner record naming the successor (no lock directory)', successorEnv: { PRIM_FORGE_LOCK: 'no-dir' }, code: 'E_READY_REJECTED', reason: /\.baton\.lock does not exist/, hook: 'seal' },
    { name: 'Ready with an owner record whose lockId is not the lock directory\'s', successorEnv: { PRIM_FORGE_LOCK: 'wrong-lockid' }, code: 'E_READY_REJECTED', reason: /describes lock 12345:0, not the directory there now/, hook: 'seal' },
    { name: 'Drained with acceptClosed=false (a sealed process must not accept)', incumbentEnv: { PRIM_DRAIN_KEEP_ACCEPTING_ONCE: 'MARKER' }, code: 'E_DRAIN_INCOMPLETE', hook: 'drain' },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const knobsOff = Object.fromEntries(Object.keys(c.incumbentEnv ?? {}).map((k) => [k, '']));
      const w = worlds.create({ appEnv: {} });
      const env = Object.fromEntries(
        Object.entries(c.incumbentEnv ?? {}).map(([k, v]) => [k, v === 'MARKER' ? path.join(w.dir, `${k}.marker`) : v]),
      );
      const cold = await w.sup.start({ successorEnv: env });
      expect(cold.outcome, cold.reason).toBe('committed');
      const gen1 = w.sup.incumbent!.pid;
      const acked = await putAll(w, 8, 'b');
      const result = await w.sup.performHandoff({ ...c.spec, successorEnv: { ...knobsOff, ...c.successorEnv } });
      expect(result.outcome).toBe('aborted');
      expect(result.code, result.reason).toBe(c.code);
      if (c.reason) expect(result.reason).toMatch(c.reason);
      if (c.hook) expect(w.hooks(gen1)).toContain(c.hook);
      expect(await w.settledServer()).toBe(gen1);
      expect(await lostWrites(w.port, acked)).toEqual([]);
      // Writes go on after the abort, and the next handoff goes through with them.
      const more = await putAll(w, 4, 'c');
      const next = await w.sup.performHandoff({ successorEnv: knobsOff });
      expect(next.outcome, next.reason).toBe('committed');
      expect(await w.settledServer()).toBe(next.newPid);
      expect(await lostWrites(w.port, new Map([...acked, ...more]))).toEqual([]);
    });
  }
});
