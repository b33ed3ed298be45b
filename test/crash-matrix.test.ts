/**
 * Crash matrix (invariants 7 and 9): for every crash point in the incumbent and the
 * successor, with writes in flight (a keep-alive load runs through the crash), the test
 * asserts what the handoff REPORTED against the expected outcome of that point, which
 * process serves afterwards, that no acknowledged write is lost, and that no request
 * failed unless the killed process was holding client connections at that point. Then
 * a follow-up handoff from whoever serves must commit.
 *
 * Who brings the service back: the supervisor. An incumbent that dies mid-handoff is
 * replaced by promoting the successor; one that dies while resuming after an abort, or
 * a successor that dies after the incumbent committed, by a cold start within the same
 * handoff (`restoredBy`); a committed successor that dies right after its Committed by
 * the restart policy.
 */
import { existsSync, readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { CRASH_POINT_NAMES } from '../src/os/crashpoints.js';
import { crashEnv } from '../src/supervisor/generation.js';
import { waitForExit } from '../src/os/proc.js';
import { Load, lostWrites, request } from './support/engine.js';
import { pollUntil } from './support/harness.js';
import { useWorlds, type World } from './support/world.js';

const worlds = useWorlds();

/** Who serves once the service has settled after the crash. */
type Serves =
  | 'old' // the incumbent serves on (the handoff aborted)
  | 'new' // the successor (committed, possibly by promotion)
  | 'cold' // a cold start within the same handoff (HandoffResult.restoredBy)
  | 'restarted'; // a generation the restart policy started after the committed successor died

interface Expectation {
  outcome: 'committed' | 'aborted';
  /** 'either': the incumbent's last frame and its death race (promotion or not, the same end). */
  promoted?: boolean | 'either';
  /** Abort code, when the outcome is decided by one. */
  code?: string;
  /** Alternatives only where a race decides, explained in `race`. */
  serves: Serves | readonly Serves[];
  race?: string;
  /**
   * The killed process holds client connections at that point (it accepts, or serves ones
   * it accepted): requests on them may fail with a connection error. Everywhere else a
   * failed request is a violation.
   */
  killedHoldsConnections: boolean;
  /** The point is reached only when the handoff aborts: the successor reports unhealthy. */
  needsAbort?: boolean;
}

/** The expected outcome of every app crash point (PROTOCOL.md 7.3-7.6). */
const EXPECTED: Record<string, Expectation> = {
  // The incumbent dies before its SealComplete: the successor is promoted.
  'incumbent.on_hello': { outcome: 'committed', promoted: true, serves: 'new', killedHoldsConnections: true },
  'incumbent.on_prepare': { outcome: 'committed', promoted: true, serves: 'new', killedHoldsConnections: true },
  'incumbent.mid_drain': { outcome: 'committed', promoted: true, serves: 'new', killedHoldsConnections: true },
  'incumbent.after_drained': { outcome: 'committed', promoted: true, serves: 'new', killedHoldsConnections: false },
  'incumbent.on_seal_request': { outcome: 'committed', promoted: true, serves: 'new', killedHoldsConnections: false },
  'incumbent.mid_seal': { outcome: 'committed', promoted: true, serves: 'new', killedHoldsConnections: false },
  'incumbent.after_seal_before_release': { outcome: 'committed', promoted: true, serves: 'new', killedHoldsConnections: false },
  'incumbent.after_lock_release': { outcome: 'committed', promoted: true, serves: 'new', killedHoldsConnections: false },
  // After SealComplete it had nothing left to do but wait for Commit: the handoff goes on.
  // Its SealComplete (or Committed) and its death race at the supervisor: seen dead first, it is promoted.
  'incumbent.after_seal_complete': { outcome: 'committed', promoted: 'either', serves: 'new', killedHoldsConnections: false },
  'incumbent.on_commit': { outcome: 'committed', promoted: true, serves: 'new', killedHoldsConnections: false },
  'incumbent.after_committed': { outcome: 'committed', promoted: 'either', serves: 'new', killedHoldsConnections: false },
  // The incumbent dies while resuming after an abort: nobody can serve but a new generation.
  'incumbent.on_resume': { outcome: 'aborted', code: 'E_READY_REJECTED', serves: 'cold', killedHoldsConnections: false, needsAbort: true },
  'incumbent.after_relock': { outcome: 'aborted', code: 'E_READY_REJECTED', serves: 'cold', killedHoldsConnections: false, needsAbort: true },
  // The successor dies before Commit went to the incumbent: abort, the incumbent serves on.
  'successor.before_hello': { outcome: 'aborted', code: 'E_PEER_DIED', serves: 'old', killedHoldsConnections: false },
  'successor.after_hello': { outcome: 'aborted', code: 'E_PEER_DIED', serves: 'old', killedHoldsConnections: false },
  'successor.on_begin': { outcome: 'aborted', code: 'E_PEER_DIED', serves: 'old', killedHoldsConnections: false },
  'successor.after_lock': { outcome: 'aborted', code: 'E_PEER_DIED', serves: 'old', killedHoldsConnections: false },
  'successor.before_ready': { outcome: 'aborted', code: 'E_PEER_DIED', serves: 'old', killedHoldsConnections: true },
  'successor.after_ready': {
    outcome: 'aborted',
    serves: ['old', 'cold'],
    race: 'it kills itself right after writing Ready; if its death shows only after Commit went to the incumbent, the incumbent has committed and a cold start follows (E_SUCCESSOR_LOST)',
    killedHoldsConnections: true,
  },
  // The incumbent had committed (it exits): never a commit, a cold start within the handoff.
  'successor.on_commit': { outcome: 'aborted', code: 'E_SUCCESSOR_LOST', serves: 'cold', killedHoldsConnections: true },
  // It said Committed: a real commit, then the death of the new incumbent (restart policy).
  'successor.after_committed': { outcome: 'committed', serves: 'restarted', killedHoldsConnections: true },
  'successor.after_bind_control': { outcome: 'committed', serves: 'restarted', killedHoldsConnections: true },
  'successor.on_abort': { outcome: 'aborted', code: 'E_READY_REJECTED', serves: 'old', killedHoldsConnections: true, needsAbort: true },
};

/** Connection errors a client sees when the process holding its connection is killed. */
const CONNECTION_LOSS = new Set(['ECONNRESET', 'EPIPE']);
const LOAD_CONNS = 8;

const appPoints = CRASH_POINT_NAMES.filter((p) => p.startsWith('incumbent.') || p.startsWith('successor.'));

describe('crash matrix', () => {
  it('covers at least 30 named points across the three roles, and states the outcome of every app point', () => {
    expect(CRASH_POINT_NAMES.length).toBeGreaterThanOrEqual(30);
    for (const role of ['supervisor.', 'incumbent.', 'successor.']) {
      expect(CRASH_POINT_NAMES.some((p) => p.startsWith(role))).toBe(true);
    }
    expect(Object.keys(EXPECTED).sort()).toEqual([...appPoints].sort());
  });

  for (const point of appPoints) {
    const want = EXPECTED[point]!;
    it(`${point} → ${want.outcome}${want.promoted === true ? ' (promoted)' : want.promoted === 'either' ? ' (promoted or not)' : ''}, ${[want.serves].flat().join(' or ')} serves`, async () => {
      // A slow start under load must not be cut short by the hello timeout before the crash point is reached.
      const w = worlds.create({ restartBaseMs: 50, timeouts: { helloMs: 30_000 } });
      const inIncumbent = point.startsWith('incumbent.');
      // The incumbent's crash point is set when it is started (generation 1).
      const cold = await w.sup.start({ successorEnv: inIncumbent ? crashEnv(point, w.markers) : {} });
      expect(cold.outcome, cold.reason).toBe('committed');
      const gen1 = cold.newPid!;
      const acked = new Map<string, string>();
      for (let i = 0; i < 12; i++) {
        const r = await request(w.port, 'PUT', `/kv/k${i}`, `v${i}`);
        expect(r.status).toBe(200);
        acked.set(`k${i}`, `v${i}`);
      }

      // Writes in flight through the crash.
      const load = new Load(w.port, LOAD_CONNS);
      let successorPid: number | undefined;
      w.sup.once('spawned', (pid: number) => (successorPid = pid));
      let result;
      try {
        await sleep(200);
        result = await w.sup.performHandoff({
          ...(!inIncumbent && { successorCrashPoint: point, crashMarkerDir: w.markers }),
          successorEnv: want.needsAbort ? { PRIM_HEALTHZ_FALSE: '1' } : {},
        });
        // The crash really happened, in the process it names (a committed successor may reach it just after we return).
        const crashedPid = await pollUntil(() => crashedAt(w, point), `the crash marker of ${point}`, 10_000);
        expect(crashedPid).toBe(inIncumbent ? gen1 : successorPid);
        expect(await waitForExit(crashedPid, 5_000)).toBe(true);
        await w.settledServer(30_000);
        await sleep(200); // requests go on against whoever serves now
      } finally {
        await load.stop();
      }

      // What the handoff reported.
      expect(result.outcome, `${result.code}: ${result.reason}`).toBe(want.outcome);
      if (want.promoted !== 'either') expect(Boolean(result.promoted)).toBe(Boolean(want.promoted));
      if (want.code) expect(result.code, result.reason).toBe(want.code);
      if (result.outcome === 'committed') expect(result.newPid).toBe(successorPid);
      else expect(result.newPid).not.toBe(successorPid); // never the dead successor

      // Who serves.
      const server = await w.settledServer(30_000);
      const who: Serves =
        server === gen1 ? 'old' : server === successorPid ? 'new' : server === result.restoredBy?.pid ? 'cold' : 'restarted';
      expect([want.serves].flat(), `pid ${server} serves (old ${gen1}, successor ${successorPid}, restoredBy ${result.restoredBy?.pid})`).toContain(who);
      if (who === 'cold') expect(result.newPid).toBeUndefined();
      if (who === 'restarted') expect(server).not.toBe(result.restoredBy?.pid);
      expect(w.sup.incumbent?.pid).toBe(server);

      // No request failed where the promise says none may; where the killed process held connections, only those broke.
      const failures = Object.entries(load.failures);
      if (want.killedHoldsConnections) {
        expect(failures.filter(([kind]) => !CONNECTION_LOSS.has(kind)), `failed requests: ${JSON.stringify(load.failures)}`).toEqual([]);
        expect(load.failureCount, 'at most one broken request per client connection').toBeLessThanOrEqual(LOAD_CONNS);
      } else {
        expect(load.failures, 'no request may fail: the killed process held no client connection').toEqual({});
      }
      expect(load.requests).toBeGreaterThan(20);
      for (const [k, v] of load.acked) acked.set(k, v);
      expect(await lostWrites(w.port, acked)).toEqual([]);

      const next = await pollUntil(
        async () => {
          const r = await w.sup.performHandoff().catch(() => undefined);
          return r?.outcome === 'committed' ? r : undefined;
        },
        'a follow-up handoff to commit',
        30_000,
        200,
      );
      expect(next.oldPid).toBe(server);
      expect(await w.settledServer()).toBe(next.newPid);
      expect(await lostWrites(w.port, acked)).toEqual([]);
    });
  }
});

/** The pid that wrote the crash marker of `point`, if any. */
function crashedAt(w: World, point: string): number | undefined {
  if (!existsSync(w.markers)) return undefined;
  const marker = readdirSync(w.markers).find((f) => f.startsWith(`${point}.`));
  return marker === undefined ? undefined : Number(marker.slice(point.length + 1));
}
