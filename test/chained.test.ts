/**
 * 100 chained handoffs: the supervisor (hosted by this test process) must not leak
 * file descriptors (drift ≤ 16 after a warm-up), no old generation may linger, and at
 * the end generation 106 (cold start + 5 warm-up + 100) is the one serving.
 */
import { describe, expect, it } from 'vitest';
import type { HandoffResult } from '../src/supervisor/results.js';
import type { SupervisorPhase } from '../src/supervisor/phases.js';
import { fdCount, healthz, taggedPids } from './support/engine.js';
import { pollUntil } from './support/harness.js';
import { useWorlds, type World } from './support/world.js';

// The supervisor logs every phase at info; keep the output to the figures below.
process.env.BATON_LOG_LEVEL ??= 'warn';

const WARMUP = 5;
const CHAINED = 100;
const MAX_FD_DRIFT = 16;

const worlds = useWorlds();

/** Runs `n` handoffs; each must commit. */
async function chain(w: World, n: number, into: HandoffResult[]): Promise<void> {
  for (let i = 0; i < n; i++) {
    const r = await w.sup.performHandoff();
    into.push(r);
    // The phases (with their times) say where a failed one stopped.
    expect(r.outcome, `handoff ${into.length}: ${r.code}: ${r.reason}; phases ${r.phases.map((p) => `${p.phase} ${p.ms} ms`).join(', ')}`).toBe('committed');
  }
}

/** Waits until the only process carrying the world's tag is the current incumbent, then counts our fds. */
async function settledFdCount(w: World): Promise<number> {
  const pid = w.sup.incumbent!.pid;
  await pollUntil(
    async () => {
      const pids = await taggedPids(w.tag);
      return pids.length === 1 && pids[0] === pid;
    },
    `only the incumbent (pid ${pid}) left running`,
    10_000,
    20,
  );
  // Closed control channels destroy their socket up to 1 s after close (channel.ts).
  await new Promise((r) => setTimeout(r, 1_200));
  return fdCount('self');
}

describe('chained handoffs', () => {
  it(`${CHAINED} chained handoffs: fd drift ≤ ${MAX_FD_DRIFT}, no leftover process, generation ${1 + WARMUP + CHAINED} serves`, { timeout: 180_000 }, async () => {
    const w = (worlds.create());
    const cold = await w.sup.start();
    expect(cold.outcome, cold.reason).toBe('committed');

    const warm: HandoffResult[] = [];
    await chain(w, WARMUP, warm);
    const fdBefore = await settledFdCount(w);

    const results: HandoffResult[] = [];
    const t0 = Date.now();
    await chain(w, CHAINED, results);
    const elapsed = Date.now() - t0;
    const fdAfter = await settledFdCount(w);

    const durations = results.map((r) => r.endedAt - r.startedAt);
    const sorted = [...durations].sort((a, b) => a - b);
    const pct = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
    const phaseMs = new Map<SupervisorPhase, number[]>();
    for (const r of results) for (const p of r.phases) phaseMs.set(p.phase, [...(phaseMs.get(p.phase) ?? []), p.ms]);
    const mean = (xs: number[]): number => Math.round(xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1));
    console.log(
      [
        `chained: ${CHAINED} handoffs in ${elapsed} ms; fds ${fdBefore} → ${fdAfter} (drift ${fdAfter - fdBefore})`,
        `handoff ms: min ${sorted[0]} p50 ${pct(0.5)} p90 ${pct(0.9)} max ${sorted[sorted.length - 1]} mean ${mean(durations)}`,
        `phase ms (mean/max): ${[...phaseMs]
          .map(([phase, xs]) => `${phase}=${mean(xs)}/${Math.max(...xs)}`)
          .join(' ')}`,
      ].join('\n'),
    );

    expect(Math.abs(fdAfter - fdBefore), `fd count ${fdBefore} → ${fdAfter}`).toBeLessThanOrEqual(MAX_FD_DRIFT);
    const last = results[results.length - 1]!;
    expect(w.sup.generation).toBe(1 + WARMUP + CHAINED);
    expect(last.generation).toBe(1 + WARMUP + CHAINED);
    expect(w.sup.incumbent?.pid).toBe(last.newPid);
    expect(await w.settledServer()).toBe(last.newPid);
    const h = await healthz(w.port);
    expect(h).toMatchObject({ pid: last.newPid, generation: 1 + WARMUP + CHAINED });
    expect(await taggedPids(w.tag)).toEqual([last.newPid]);
  });

  it('the next handoff right after a commit never reaches the old incumbent: it closes its control socket before Committed', { timeout: 60_000 }, async () => {
    // The race the 100-handoff chain hit under load, made certain: after its Committed the
    // old incumbent stalls (as if descheduled) before exiting, and the new one stalls
    // before it renames its socket over the control path. The next handoff starts at once
    // and connects while the path still names the old incumbent's socket. Had the old one
    // still been listening, that connect would have sat in its backlog and been reset
    // when it exited (E_SOCKET ECONNRESET, an aborted handoff); refused, it is retried
    // until the new incumbent's socket is there.
    const w = worlds.create({ appEnv: { BATON_STALL_POINTS: 'incumbent.after_committed:400,successor.after_committed:300' } });
    expect((await w.sup.start()).outcome).toBe('committed');
    const results: HandoffResult[] = [];
    await chain(w, 3, results);
    expect(results.map((r) => r.outcome)).toEqual(['committed', 'committed', 'committed']);
    expect(w.sup.generation).toBe(4);
    expect(await w.settledServer()).toBe(results[2]!.newPid);
  });
});
