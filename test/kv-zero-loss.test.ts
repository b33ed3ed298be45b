/**
 * Zero-loss test (issue 6): fixtures/kv under a real Supervisor, 32 keep-alive client
 * connections doing reads, writes and deletes while the service is handed off 20 times.
 * The bar: every handoff commits, 0 failed requests of any kind (a reset on a
 * keep-alive connection, a hang-up, a timeout, a 503, a stale read all count), 0 lost
 * acknowledged writes (every acknowledged value reads back, every acknowledged delete
 * reads 404), and the shard revisions account for exactly the acknowledged writes.
 */
import { phaseMeans } from './support/engine.js';
import { describe, expect, it } from 'vitest';
import { KV, KvLoad, kvHealth } from './support/kv-load.js';
import { useWorlds } from './support/world.js';

process.env.BATON_LOG_LEVEL ??= 'warn';

const HANDOFFS = Number(process.env.KV_ZERO_LOSS_HANDOFFS ?? 20);
const CONNS = 32;
const SHARDS = 4;
/** Load runs on each generation for a while before the next handoff. */
const BETWEEN_MS = 200;

const worlds = useWorlds();

describe('kv zero-loss: handoffs under mixed keep-alive load', () => {
  it(`${HANDOFFS} handoffs under ${CONNS} keep-alive connections (GET/PUT/DELETE): no failed request, no lost write`, { timeout: 120_000 }, async () => {
    const w = worlds.create({ supervisor: { command: KV }, appEnv: { KV_SHARDS: String(SHARDS) } });
    const cold = await w.sup.start();
    expect(cold.outcome, cold.reason).toBe('committed');
    await w.settledServer();

    const load = new KvLoad(w.port, { conns: CONNS });
    const { results, elapsedMs: elapsed } = await w.handoffsUnderLoad(load, HANDOFFS, BETWEEN_MS);

    const durations = results.map((r) => r.endedAt - r.startedAt);
    const blackouts = results.map((r) => load.writeBlackout(r.oldPid!, r.newPid!)).filter((b): b is number => b !== undefined);
    const health = await kvHealth(w.port);
    const revSum = Object.values(health.revisions).reduce((a, r) => a + BigInt(r), 0n);
    console.log(
      [
        `kv zero-loss: ${load.requests} requests in ${elapsed} ms over ${results.length} handoffs, ${load.failureCount} failed ${JSON.stringify(load.failures)}`,
        `ops: ${JSON.stringify(load.ops)}; acknowledged writes ${load.ackedWrites}; keys known ${load.expected.size}; revision sum ${revSum}`,
        `latency ms: p50 ${load.latencyPercentile(50).toFixed(1)} p99 ${load.latencyPercentile(99).toFixed(1)} max ${load.latencyPercentile(100).toFixed(1)}`,
        `handoff ms: ${stats(durations)}; each: ${durations.join(' ')}`,
        `write blackout ms (last ack by old → first ack by new): ${stats(blackouts)}; each: ${blackouts.map((b) => b.toFixed(1)).join(' ')}`,
        `phase ms (mean): ${phaseMeans(results)}`,
      ].join('\n'),
    );

    await w.expectCleanHandoffs(results, HANDOFFS, load);
    expect(load.ops.deletes).toBeGreaterThan(0);
    expect(load.ops.gets).toBeGreaterThan(0);
    expect(health.ok, health.problems.join('; ')).toBe(true);
    // Each acknowledged PUT/DELETE advanced one shard by exactly one revision: none lost, none doubled.
    expect(revSum).toBe(BigInt(load.ackedWrites));
    const { checked, lost, resurrected } = await load.verify();
    expect(checked).toBe(load.expected.size);
    expect(lost.length, `lost writes (first 10): ${lost.slice(0, 10).join(', ')}`).toBe(0);
    expect(resurrected.length, `deleted keys readable again (first 10): ${resurrected.slice(0, 10).join(', ')}`).toBe(0);
  });
});

function stats(xs: number[]): string {
  if (xs.length === 0) return 'n/a';
  const s = [...xs].sort((a, b) => a - b);
  const at = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return `min ${s[0]!.toFixed(1)} p50 ${at(0.5).toFixed(1)} p99 ${at(0.99).toFixed(1)} max ${s[s.length - 1]!.toFixed(1)} mean ${mean.toFixed(1)}`;
}
