/**
 * Liveness: a blocked incumbent main thread still looks alive (worker heartbeats);
 * a stopped incumbent is aborted on; a stopped supervisor is survived.
 */
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { lockHolder } from '../src/os/lock.js';
import type { HandoffResult } from '../src/supervisor/results.js';
import { healthz, lostWrites, PRIMITIVE, request, SUPERVISOR_HOST, taggedPids } from './support/engine.js';
import { Harness, LineReader, pollUntil } from './support/harness.js';
import { World } from './support/world.js';

let world: World | undefined;
const h = new Harness();

afterEach(async () => {
  const leftovers = await world?.teardown();
  world = undefined;
  await h.cleanup();
  expect(leftovers ?? []).toEqual([]);
});

describe('liveness', () => {
  it('a 15 s seal that blocks the main thread does not trip the 10 s liveness: heartbeats keep coming every ~2 s', async () => {
    world = new World({ appEnv: { PRIM_SEAL_BLOCK_MS: '15000' } });
    const w = world;
    await w.sup.start();
    // Only this incumbent seals slowly (its successor stops quickly at teardown).
    const successorEnv = { PRIM_SEAL_BLOCK_MS: '0' };
    const gen1 = w.sup.incumbent!.pid;
    const gaps: number[] = [];
    let sealing = false;
    w.sup.on('phase', (phase: string) => (sealing = phase === 'sealing'));
    w.sup.on('heartbeat', (peer: string, gap: number) => {
      if (sealing && peer === 'incumbent') gaps.push(gap);
    });
    const result = await w.sup.performHandoff({ successorEnv });
    expect(result.outcome, result.reason).toBe('committed');
    const seal = result.phases.find((p) => p.phase === 'sealing')!;
    expect(seal.ms).toBeGreaterThanOrEqual(15_000);
    // ~7 heartbeats in 15 s, none late.
    expect(gaps.length).toBeGreaterThanOrEqual(6);
    expect(Math.max(...gaps)).toBeLessThan(3_000);
    expect(result.oldPid).toBe(gen1);
    expect(await w.settledServer()).toBe(result.newPid);
  }, 40_000);

  it('an incumbent SIGSTOPped during drain is aborted on after the liveness timeout; after SIGCONT it resumes and serves', async () => {
    // Default 10 s liveness; an idle keep-alive connection keeps the drain busy meanwhile.
    world = new World({ appEnv: { PRIM_IDLE_GRACE_MS: '15000' } });
    const w = world;
    await w.sup.start();
    const gen1 = w.sup.incumbent!.pid;
    const acked = new Map([['k', 'v']]);
    expect((await request(w.port, 'PUT', '/kv/k', 'v')).status).toBe(200);
    const idle = await import('node:net').then((net) => net.connect(w.port, '127.0.0.1'));
    await new Promise((r) => idle.once('connect', r));
    // Stop it once its drain has really started (the app writes a marker when drain() is called).
    const stopped = pollUntil(() => w.hooks(gen1).includes('drain'), 'drain to start', 20_000, 5).then(() =>
      process.kill(gen1, 'SIGSTOP'),
    );
    const t0 = Date.now();
    const result = await w.sup.performHandoff();
    await stopped;
    expect(result.outcome).toBe('aborted');
    expect(result.code).toBe('E_LIVENESS_TIMEOUT');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(10_000);
    // The successor is gone (killed and reaped).
    expect(w.sup.incumbent!.pid).toBe(gen1);
    process.kill(gen1, 'SIGCONT');
    idle.destroy();
    await pollUntil(() => w.hooks(gen1).includes('resume'), 'the incumbent to resume on its own', 20_000);
    expect(await w.settledServer()).toBe(gen1);
    expect(await lostWrites(w.port, acked)).toEqual([]);
    const next = await w.sup.performHandoff();
    expect(next.outcome, next.reason).toBe('committed');
  }, 40_000);

  it('a supervisor SIGSTOPped during seal: the incumbent resumes on its own and serves; the supervisor recovers after SIGCONT', async () => {
    const dir = h.tempDir('baton-host-');
    const tag = `host-${process.pid}-${Date.now()}`;
    const host = h.node(SUPERVISOR_HOST, [], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: {
        ...process.env,
        BATON_TEST_TAG: tag,
        BATON_LOG_LEVEL: 'warn',
        BATON_HOST_CONFIG: JSON.stringify({
          address: 'tcp://127.0.0.1:0',
          dataDir: path.join(dir, 'data'),
          stateDir: path.join(dir, 'state'),
          command: PRIMITIVE,
          // Apps give up on a silent supervisor after the default 10 s; the seal takes 1.5 s so we can stop the supervisor in it.
          appEnv: { PRIM_SEAL_BLOCK_MS: '1500', BATON_TEST_TAG: tag },
        }),
      },
    });
    const out = new LineReader(host);
    const ready = await out.next<{ event: string; port: number }>((l) => l.event === 'ready', 'host ready', 20_000);
    const cold = await out.next<{ event: string; result: HandoffResult }>((l) => l.event === 'result', 'cold start');
    const gen1 = (await healthz(ready.port)).pid;
    expect((await request(ready.port, 'PUT', '/kv/x', 'y')).status).toBe(200);

    host.stdin!.write(`${JSON.stringify({ op: 'handoff' })}\n`);
    const sealing = await out.next<{ event: string; phase: string; handoffId: string }>(
      (l) => l.event === 'phase' && l.phase === 'sealing' && l.handoffId !== cold.result.id,
      'sealing phase',
    );
    process.kill(host.pid!, 'SIGSTOP');
    try {
      // The incumbent seals, releases the lock, hears nothing for 3 s, re-takes the lock and serves.
      await pollUntil(
        async () => {
          const holder = await lockHolder(path.join(dir, 'data'));
          const serving = await healthz(ready.port).catch(() => undefined);
          return holder?.owner.pid === gen1 && serving?.pid === gen1;
        },
        'incumbent to resume on its own',
        20_000,
        50,
      );
      expect((await request(ready.port, 'GET', '/kv/x')).body).toContain('"y"');
    } finally {
      process.kill(host.pid!, 'SIGCONT');
    }
    const aborted = await out.next<{ event: string; result: HandoffResult }>(
      (l) => l.event === 'result' && l.result.id === sealing.handoffId,
      'the stalled handoff result',
      20_000,
    );
    expect(aborted.result.outcome).toBe('aborted');
    expect((await healthz(ready.port)).pid).toBe(gen1);

    host.stdin!.write(`${JSON.stringify({ op: 'handoff' })}\n`);
    const next = await out.next<{ event: string; result: HandoffResult }>(
      (l) => l.event === 'result' && l.result.oldPid === gen1 && l.result.outcome === 'committed',
      'a follow-up handoff to commit',
      20_000,
    );
    expect((await healthz(ready.port)).pid).toBe(next.result.newPid);
    host.stdin!.write(`${JSON.stringify({ op: 'stop' })}\n`);
    await out.next((l: { event: string }) => l.event === 'stopped', 'host stopped', 20_000);
    await pollUntil(async () => (await taggedPids(tag)).length === 0, 'host apps gone', 10_000);
  }, 60_000);
});
