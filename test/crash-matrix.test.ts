/**
 * Crash matrix (invariant 7): for every crash point in the incumbent and the successor,
 * the end state has exactly one live process holding the data-dir lock and answering
 * HTTP on the listener, every write acknowledged before the crash is readable, no
 * process is left behind, and a follow-up handoff commits.
 *
 * Who brings the service back: the supervisor. An incumbent that dies mid-handoff is
 * replaced by promoting the successor (or by a cold start if that cannot be done); an
 * incumbent that dies outside a handoff (e.g. a successor dying right after it was
 * committed) is restarted by the supervisor's restart policy.
 */
import { existsSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CRASH_POINT_NAMES, type CrashPoint } from '../src/crashpoints.js';
import { crashEnv } from '../src/generation.js';
import { lostWrites, request } from './support/engine.js';
import { pollUntil } from './support/harness.js';
import { useWorlds, type World } from './support/world.js';

const worlds = useWorlds();

/** Points that are only reached when the handoff aborts: the successor reports unhealthy. */
const NEEDS_ABORT = new Set<CrashPoint>(['incumbent.on_resume', 'incumbent.after_relock', 'successor.on_abort']);

const appPoints = CRASH_POINT_NAMES.filter((p) => p.startsWith('incumbent.') || p.startsWith('successor.'));

describe('crash matrix', () => {
  it('covers at least 30 named points across the three roles', () => {
    expect(CRASH_POINT_NAMES.length).toBeGreaterThanOrEqual(30);
    for (const role of ['supervisor.', 'incumbent.', 'successor.']) {
      expect(CRASH_POINT_NAMES.some((p) => p.startsWith(role))).toBe(true);
    }
  });

  for (const point of appPoints) {
    it(point, async () => {
      // A slow start under load must not be cut short by the hello timeout before the crash point is reached.
      const w = worlds.create({ restartBaseMs: 50, timeouts: { helloMs: 30_000 } });
      const inIncumbent = point.startsWith('incumbent.');
      // The incumbent's crash point is set when it is started (generation 1).
      const cold = await w.sup.start({ successorEnv: inIncumbent ? crashEnv(point, w.markers) : {} });
      expect(cold.outcome, cold.reason).toBe('committed');
      const acked = new Map<string, string>();
      for (let i = 0; i < 12; i++) {
        const r = await request(w.port, 'PUT', `/kv/k${i}`, `v${i}`);
        expect(r.status).toBe(200);
        acked.set(`k${i}`, `v${i}`);
      }

      await w.sup.performHandoff({
        ...(!inIncumbent && { successorCrashPoint: point, crashMarkerDir: w.markers }),
        successorEnv: NEEDS_ABORT.has(point) ? { PRIM_HEALTHZ_FALSE: '1' } : {},
      });

      // The crash really happened at that point (a committed successor may reach it just after we return).
      await pollUntil(() => crashed(w, point), `the crash marker of ${point}`, 10_000);
      const server = await w.settledServer(30_000);
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

function crashed(w: World, point: string): boolean {
  return existsSync(w.markers) && readdirSync(w.markers).some((f) => f.startsWith(`${point}.`));
}
