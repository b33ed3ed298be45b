/**
 * The app-side API (src/app/app.ts) through real handoffs of the primitive app: the
 * warm-up an app runs before its Hello (BatonAppOptions.warmUp).
 */
import { describe, expect, it } from 'vitest';
import { useWorlds } from './support/world.js';

const worlds = useWorlds();

describe('app: warmUp runs before Hello', () => {
  it('a successor says Hello only after its warm-up: the incumbent starts draining after it ended', async () => {
    let successorPid = 0;
    let atDrain: string[] = [];
    const w = await worlds.start({
      supervisor: {
        phaseGate: async (phase) => {
          if (phase === 'draining' && successorPid) atDrain = w.hooks(successorPid);
        },
      },
    });
    w.sup.on('spawned', (pid: number) => (successorPid = pid));
    const result = await w.sup.performHandoff({ successorEnv: { PRIM_WARMUP_MS: '400' } });
    expect(result.outcome, result.reason).toBe('committed');
    expect(successorPid).toBe(result.newPid);
    // Without the gate the worker's Hello would be in long before 400 ms and the drain
    // would start with the warm-up still running.
    expect(atDrain).toEqual(expect.arrayContaining(['warmup-start', 'warmup-end']));
    expect(result.phases.find((p) => p.phase === 'hello')!.ms).toBeGreaterThanOrEqual(300);
  });

  it('a warm-up that throws only costs speed: the successor starts and the handoff commits', async () => {
    const w = await worlds.start();
    // Its expected warn line is kept off the test output.
    const result = await w.sup.performHandoff({ successorEnv: { PRIM_WARMUP_FAIL: '1', BATON_LOG_LEVEL: 'error' } });
    expect(result.outcome, result.reason).toBe('committed');
    const hooks = w.hooks(result.newPid!);
    expect(hooks).toContain('warmup-start');
    expect(hooks).not.toContain('warmup-end');
    expect(await w.settledServer()).toBe(result.newPid);
  });
});
