/**
 * Handoffs under keep-alive load: 16 client connections doing PUT+GET while the
 * service is handed off 20 times in a row. The bar is zero failed requests of any
 * kind (resets, hang-ups, 503s, timeouts) and zero lost acknowledged writes.
 */
import { describe, expect, it } from 'vitest';
import { Load, lostWrites, phaseMeans } from './support/engine.js';
import { useWorlds } from './support/world.js';

// The supervisor logs every phase at info; keep the output to the figures below.
process.env.BATON_LOG_LEVEL ??= 'warn';

const HANDOFFS = 20;
const CONNS = 16;

const worlds = useWorlds();

describe('load: handoffs under keep-alive traffic', () => {
  it(`${HANDOFFS} handoffs under ${CONNS} keep-alive connections: no failed request, no lost write`, { timeout: 90_000 }, async () => {
    const w = worlds.create();
    const cold = await w.sup.start();
    expect(cold.outcome, cold.reason).toBe('committed');
    await w.settledServer();

    const load = new Load(w.port, CONNS);
    const { results, elapsedMs: elapsed } = await w.handoffsUnderLoad(load, HANDOFFS);

    const durations = results.map((r) => r.endedAt - r.startedAt);
    const sorted = [...durations].sort((a, b) => a - b);
    console.log(
      [
        `load: ${load.requests} requests in ${elapsed} ms over ${results.length} handoffs, ` +
          `${load.failureCount} failed ${JSON.stringify(load.failures)}, ${load.acked.size} acknowledged writes`,
        `handoff ms: min ${sorted[0]} p50 ${sorted[Math.floor(sorted.length / 2)]} max ${sorted[sorted.length - 1]} ` +
          `mean ${Math.round(durations.reduce((a, b) => a + b, 0) / Math.max(durations.length, 1))}`,
        `handoff ms each: ${durations.join(' ')}`,
        `phase ms (mean): ${phaseMeans(results)}`,
      ].join('\n'),
    );

    await w.expectCleanHandoffs(results, HANDOFFS, load);
    expect(load.acked.size).toBeGreaterThan(0);
    const lost = await lostWrites(w.port, load.acked);
    expect(lost.length, `lost writes (first 10): ${lost.slice(0, 10).join(', ')}`).toBe(0);
  });
});
