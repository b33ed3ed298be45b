import { afterEach, describe, expect, it } from 'vitest';
import { HandoffError } from '../src/errors.js';
import { lockHolder } from '../src/lock.js';
import { healthz, lostWrites, request } from './support/engine.js';
import { World, type WorldOptions } from './support/world.js';

let world: World | undefined;

async function startWorld(opts: WorldOptions = {}): Promise<World> {
  world = new World(opts);
  const cold = await world.sup.start();
  expect(cold.outcome, cold.reason).toBe('committed');
  return world;
}

afterEach(async () => {
  const leftovers = await world?.teardown();
  world = undefined;
  expect(leftovers ?? []).toEqual([]);
});

async function putAll(w: World, n: number, prefix: string): Promise<Map<string, string>> {
  const acked = new Map<string, string>();
  for (let i = 0; i < n; i++) {
    const r = await request(w.port, 'PUT', `/kv/${prefix}${i}`, `value-${prefix}${i}`);
    expect(r.status).toBe(200);
    acked.set(`${prefix}${i}`, `value-${prefix}${i}`);
  }
  return acked;
}

describe('supervisor: happy path', () => {
  it('cold-starts generation 1, hands off to generation 2, and keeps every write', async () => {
    const w = await startWorld();
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

  it('refuses a second handoff while one runs, at once and with a distinct error', async () => {
    const w = await startWorld();
    const first = w.sup.performHandoff();
    const t0 = Date.now();
    await expect(w.sup.performHandoff()).rejects.toSatisfy((e: unknown) => e instanceof HandoffError && e.code === 'E_HANDOFF_IN_PROGRESS');
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect((await first).outcome).toBe('committed');
  });
});

describe('supervisor: every failure before Commit aborts and the incumbent serves again', () => {
  const cases: { name: string; successorEnv: Record<string, string>; code: string }[] = [
    { name: 'successor exits at start', successorEnv: { PRIM_START_FAIL: '1' }, code: 'E_PEER_DIED' },
    { name: 'Ready with healthzOk=false', successorEnv: { PRIM_HEALTHZ_FALSE: '1' }, code: 'E_READY_REJECTED' },
    { name: 'Ready with a revision behind the seal', successorEnv: { PRIM_ADVERTISE_BEHIND: '1' }, code: 'E_READY_REJECTED' },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const w = await startWorld();
      const gen1 = w.sup.incumbent!.pid;
      const acked = await putAll(w, 8, 'b');
      const result = await w.sup.performHandoff({ successorEnv: c.successorEnv });
      expect(result.outcome).toBe('aborted');
      expect(result.code, result.reason).toBe(c.code);
      expect(await w.settledServer()).toBe(gen1);
      expect(await lostWrites(w.port, acked)).toEqual([]);
      // And the next handoff goes through.
      const next = await w.sup.performHandoff();
      expect(next.outcome, next.reason).toBe('committed');
      expect(await w.settledServer()).toBe(next.newPid);
    });
  }
});
