/**
 * The supervisor's full GC after a handoff (src/supervisor/memory.ts): that it really collects,
 * and that `baton run` runs it after an upgrade (the RSS effect is a benchmark figure,
 * BENCHMARKS.md, not a test).
 */
import { setImmediate as tick } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/os/log.js';
import { HeapCompactor } from '../src/supervisor/memory.js';
import { Harness, pollUntil } from './support/harness.js';
import { useCliWorlds } from './support/cli.js';

const h = new Harness();
const worlds = useCliWorlds(h);

describe('HeapCompactor', () => {
  it('compact() runs a full GC: an unreachable object only a WeakRef points to is gone', async () => {
    let big: number[] | undefined = new Array<number>(100_000).fill(1);
    const ref = new WeakRef(big);
    big = undefined;
    await tick(); // a WeakRef's target is kept until the end of the job that created it
    new HeapCompactor(createLogger('test-memory')).compact();
    expect(ref.deref()).toBeUndefined();
  });

  it('baton run compacts once after an upgrade and logs memory.compacted with the RSS before and after', async () => {
    const d = await worlds.w.startDaemon({ env: { BATON_LOG_LEVEL: 'debug' } });
    const compacted = (): { rssBefore: number; rssAfter: number; gcMs: number }[] =>
      d.out.stderr
        .split('\n')
        .filter((l) => l.includes('"memory.compacted"'))
        .map((l) => JSON.parse(l) as { rssBefore: number; rssAfter: number; gcMs: number });
    expect(compacted()).toHaveLength(0); // not on a cold start
    const up = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    expect(up.code, up.stderr).toBe(0);
    const [entry] = await pollUntil(() => (compacted().length > 0 ? compacted() : undefined), 'memory.compacted after the upgrade', 15_000);
    expect(entry!.rssBefore).toBeGreaterThan(10 * 2 ** 20);
    expect(entry!.rssAfter).toBeGreaterThan(10 * 2 ** 20);
    expect(entry!.gcMs).toBeGreaterThanOrEqual(0);
    const r = await worlds.w.baton(['stop', '--state-dir', d.stateDir]);
    expect(r.code, r.stderr).toBe(0);
  });
});
