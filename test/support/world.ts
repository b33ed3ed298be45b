/**
 * A supervised world for engine tests: a temp dir (data, state, markers), one TCP
 * listener on 127.0.0.1 held by a real Supervisor, the primitive app as the service,
 * and a teardown that stops everything and proves nothing was left behind.
 */
import { existsSync, readdirSync, readlinkSync } from 'node:fs';
import { afterEach, expect } from 'vitest';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { bindListener, parseListenAddress, type HeldListener } from '../../src/os/listeners.js';
import { lockHolder } from '../../src/os/lock.js';
import { createLogger } from '../../src/os/log.js';
import type { LoadLoops } from '../../bench/lib/load-loops.js';
import { Supervisor } from '../../src/supervisor/supervisor.js';
import type { SupervisorOptions, Timeouts } from '../../src/supervisor/options.js';
import type { HandoffResult } from '../../src/supervisor/results.js';
import { healthz, killTagged, newTag, PRIMITIVE, request, taggedPids } from './engine.js';
import { Harness, pollUntil } from './harness.js';

export interface WorldOptions {
  /** Env for every app generation (failure knobs). */
  appEnv?: Record<string, string>;
  timeouts?: Partial<Timeouts>;
  shards?: number;
  supervisor?: Partial<SupervisorOptions>;
  /** First restart delay of the supervisor's restart policy (tests keep it short). */
  restartBaseMs?: number;
}

/** Expected aborts would flood the output at info/warn; BATON_TEST_LOG_LEVEL=info shows them. */
function testLogger(): ReturnType<typeof createLogger> {
  const log = createLogger('test-supervisor', { test: true });
  log.level = process.env.BATON_TEST_LOG_LEVEL ?? 'error';
  return log;
}

export class World {
  readonly h = new Harness();
  readonly tag = newTag();
  readonly dir: string;
  readonly dataDir: string;
  readonly stateDir: string;
  readonly markers: string;
  readonly listener: HeldListener;
  readonly sup: Supervisor;

  constructor(opts: WorldOptions = {}) {
    this.dir = this.h.tempDir('baton-engine-');
    this.dataDir = path.join(this.dir, 'data');
    this.stateDir = path.join(this.dir, 'state');
    this.markers = path.join(this.dir, 'markers');
    this.listener = bindListener(parseListenAddress('tcp://127.0.0.1:0'));
    this.sup = new Supervisor({
      command: PRIMITIVE,
      listeners: [this.listener],
      dataDir: this.dataDir,
      stateDir: this.stateDir,
      env: {
        ...process.env,
        BATON_TEST_TAG: this.tag,
        BATON_LOG_LEVEL: process.env.BATON_LOG_LEVEL ?? 'warn',
        PRIM_MARKERS: this.markers,
        PRIM_SHARDS: String(opts.shards ?? 4),
        ...opts.appEnv,
      },
      timeouts: opts.timeouts,
      restart: { baseMs: opts.restartBaseMs ?? 100 },
      appStdout: 'ignore',
      log: testLogger(),
      ...opts.supervisor,
    });
  }

  get port(): number {
    return Number(new URL(this.listener.address.replace(/^tcp:/, 'http:')).port);
  }

  /** How many fds of this world's listening socket process `pid` holds (the listener and its copies). */
  listenerFdsOf(pid: number): number {
    const socket = readlinkSync(`/proc/self/fd/${this.listener.fd}`);
    return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`) === socket;
      } catch {
        return false; // closed meanwhile
      }
    }).length;
  }

  /** Pid that answers /healthz right now. */
  async servingPid(): Promise<number> {
    return (await healthz(this.port)).pid;
  }

  /** Waits until exactly one live process holds the lock and it is the one answering HTTP. */
  async settledServer(timeoutMs = 30_000): Promise<number> {
    return pollUntil(
      async () => {
        const holder = await lockHolder(this.dataDir);
        if (!holder?.alive) return undefined;
        const pid = await this.servingPid().catch(() => undefined);
        return pid === holder.owner.pid ? pid : undefined;
      },
      'one live lock holder answering HTTP',
      timeoutMs,
      50,
    );
  }

  /**
   * `count` handoffs in a row under `load` (already running; it is stopped at the end),
   * `betweenMs` apart, stopping at the first one that does not commit. The load gets
   * 300 ms first so that every loop has a connection and traffic before the first handoff.
   */
  async handoffsUnderLoad(load: LoadLoops, count: number, betweenMs = 0): Promise<{ results: HandoffResult[]; elapsedMs: number }> {
    const results: HandoffResult[] = [];
    const t0 = Date.now();
    try {
      await sleep(300);
      for (let i = 0; i < count; i++) {
        const result = await this.sup.performHandoff();
        results.push(result);
        if (result.outcome !== 'committed') break;
        if (betweenMs > 0) await sleep(betweenMs);
      }
    } finally {
      await load.stop();
    }
    return { results, elapsedMs: Date.now() - t0 };
  }

  /** The bar of a handoffs-under-load test: all `count` committed, no failed request, the last successor serves alone. */
  async expectCleanHandoffs(results: readonly HandoffResult[], count: number, load: LoadLoops): Promise<void> {
    expect(
      results.filter((r) => r.outcome !== 'committed').map((r) => `${r.code}: ${r.reason}`),
      'every handoff commits',
    ).toEqual([]);
    expect(results).toHaveLength(count);
    expect(load.failures, `failed requests: ${JSON.stringify(load.failures)}`).toEqual({});
    expect(await this.settledServer()).toBe(results[results.length - 1]!.newPid);
  }

  /** Names of hooks the app called, from its marker files: `${pid}.${hook}`. */
  hooks(pid: number): string[] {
    if (!existsSync(this.markers)) return [];
    return readdirSync(this.markers)
      .filter((f) => f.startsWith(`${pid}.`))
      .map((f) => f.slice(String(pid).length + 1));
  }

  /** Stops the service, closes the listener, removes the dir; returns pids that had to be killed. */
  async teardown(): Promise<number[]> {
    await this.sup.stop(10_000).catch(() => undefined);
    const leftovers = await pollUntil(
      async () => ((await taggedPids(this.tag)).length === 0 ? [] : undefined),
      'tagged processes to exit',
      5_000,
    ).catch(() => killTagged(this.tag));
    this.listener.close();
    await this.h.cleanup();
    return leftovers;
  }
}

/**
 * One World per test: `create` makes it, `start` also cold-starts generation 1; an
 * afterEach tears it down and fails the test if any process was left behind.
 */
export function useWorlds(): { create(opts?: WorldOptions): World; start(opts?: WorldOptions): Promise<World> } {
  let current: World | undefined;
  afterEach(async () => {
    const leftovers = await current?.teardown();
    current = undefined;
    expect(leftovers ?? []).toEqual([]);
  });
  const create = (opts?: WorldOptions): World => (current = new World(opts));
  return {
    create,
    async start(opts?: WorldOptions): Promise<World> {
      const w = create(opts);
      const cold = await w.sup.start();
      expect(cold.outcome, cold.reason).toBe('committed');
      return w;
    },
  };
}

/** `n` acknowledged writes `<prefix><i>` → `value-<prefix><i>` (each must answer 200), added to `acked`. */
export async function putAll(w: World, n: number, prefix: string, acked = new Map<string, string>()): Promise<Map<string, string>> {
  for (let i = 0; i < n; i++) {
    const r = await request(w.port, 'PUT', `/kv/${prefix}${i}`, `value-${prefix}${i}`);
    expect(r.status, r.body).toBe(200);
    acked.set(`${prefix}${i}`, `value-${prefix}${i}`);
  }
  return acked;
}
