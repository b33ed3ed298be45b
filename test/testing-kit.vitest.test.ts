/**
 * baton/testing from vitest: the harness against fixtures/primitive (handoffs, crash
 * points, signals at a phase, the invariant check catching a broken end state), the
 * conformance check (primitive passes every rule; fixtures/sloppy and a misconfigured
 * primitive fail exactly the rule they break), and the node:test example of
 * examples/testing-kit run as a child process (it is the example in docs/testing.md).
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  checkDrainableConformance,
  createHarness,
  CRASH_POINTS,
  httpRequest,
  InvariantViolation,
  taggedPids,
  type ConformanceReport,
  type CrashPoint,
  type Harness,
} from '../src/testing.js';
import { PRIMITIVE, ROOT } from './support/engine.js';
import { pollUntil } from './support/harness.js';

const SLOPPY = [process.execPath, path.join(ROOT, 'dist/fixtures/sloppy/app.js')];

let h: Harness | undefined;
afterEach(async () => {
  const closed = await h?.close();
  h = undefined;
  expect(closed?.leftovers ?? []).toEqual([]);
});

/** The test's own record of acknowledged writes, and the read-back the kit calls. */
function writes(harness: Harness): { put(key: string, value: string): Promise<void>; readBack(url: string): Promise<string[]> } {
  const acked = new Map<string, string>();
  return {
    async put(key, value) {
      const r = await httpRequest(harness.url, { method: 'PUT', path: `/kv/${key}`, body: value });
      expect(r.status, r.body).toBe(200);
      acked.set(key, value);
    },
    async readBack(url) {
      const lost: string[] = [];
      for (const [key, value] of acked) {
        const r = await httpRequest(url, { method: 'GET', path: `/kv/${key}`, body: '' });
        if (r.status !== 200 || JSON.parse(r.body).value !== value) lost.push(key);
      }
      return lost;
    },
  };
}

describe('baton/testing harness (vitest)', () => {
  it('runs the app on a free 127.0.0.1 port in a temp dir; a handoff commits; the invariants hold; close() removes everything, twice', async () => {
    h = await createHarness({ command: PRIMITIVE });
    expect(h.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const w = writes(h);
    for (let i = 0; i < 10; i++) await w.put(`k${i}`, `v${i}`);
    const result = await h.handoff();
    expect(result.outcome, result.reason).toBe('committed');
    expect((await h.checkInvariants({ readBack: w.readBack })).pid).toBe(result.newPid);
    const { dir, tag } = h;
    expect(await h.close()).toEqual({ leftovers: [] });
    expect(await h.close()).toEqual({ leftovers: [] }); // idempotent
    expect(existsSync(dir)).toBe(false);
    expect(await taggedPids(tag)).toEqual([]);
  });

  // One point of each kind: plain incumbent and successor points, and the ones only reached on an abort the kit provokes.
  const points: CrashPoint[] = ['incumbent.after_lock_release', 'successor.after_ready', 'incumbent.after_relock', 'successor.on_abort'];
  for (const point of points) {
    it(`handoffWithCrash('${point}'): ${CRASH_POINTS[point]}; the world settles with nothing lost`, async () => {
      h = await createHarness({ command: PRIMITIVE });
      const w = writes(h);
      await w.put('before', point);
      const { crashedPid, result } = await h.handoffWithCrash(point);
      if (point.startsWith('incumbent.')) expect(crashedPid).toBe(result.oldPid);
      else expect(crashedPid).not.toBe(result.oldPid);
      await h.checkInvariants({ readBack: w.readBack });
      // The world is usable afterwards: the next handoff commits.
      const next = await h.handoff();
      expect(next.outcome, next.reason).toBe('committed');
      await h.checkInvariants({ readBack: w.readBack });
    });
  }

  it('handoffWithCrash three times in a row reports each handoff\'s own crashed process, not an earlier marker (#18)', async () => {
    h = await createHarness({ command: PRIMITIVE });
    const harness = h;
    // Incumbent point: the process that crashed is the handoff's old incumbent.
    const incumbents: number[] = [];
    for (let i = 0; i < 3; i++) {
      const { crashedPid, result } = await harness.handoffWithCrash('incumbent.after_lock_release');
      expect(crashedPid, `handoff ${i + 1}`).toBe(result.oldPid);
      incumbents.push(crashedPid);
    }
    expect(new Set(incumbents).size).toBe(3);
    // Successor point: the process that crashed is the successor spawned in that handoff.
    let spawned: number | undefined;
    harness.supervisor.on('phase', (phase: string) => {
      if (phase === 'hello') spawned = harness.pids().successor;
    });
    const successors: number[] = [];
    for (let i = 0; i < 3; i++) {
      spawned = undefined;
      const { crashedPid } = await harness.handoffWithCrash('successor.before_ready');
      expect(spawned, `handoff ${i + 1}: successor seen at hello`).toBeDefined();
      expect(crashedPid, `handoff ${i + 1}`).toBe(spawned);
      successors.push(crashedPid);
    }
    expect(new Set(successors).size).toBe(3);
    // A fourth whose successor exits before reaching the point: the old markers are no answer.
    const exits = [process.execPath, '-e', 'process.exit(3)'];
    await expect(harness.handoffWithCrash('successor.before_ready', { command: exits }, 500)).rejects.toThrow(/was not reached/);
  });

  it('exports every crash point with its meaning, and ARCHITECTURE.md lists them all', () => {
    const doc = readFileSync(path.join(ROOT, 'ARCHITECTURE.md'), 'utf8');
    for (const [point, meaning] of Object.entries(CRASH_POINTS)) expect(doc).toContain(`| \`${point}\` | ${meaning} |`);
  });

  it('refuses supervisor points: they would kill the test process', async () => {
    h = await createHarness({ command: PRIMITIVE });
    await expect(h.handoffWithCrash('supervisor.after_drained')).rejects.toThrow(/test\/recovery\.test\.ts/);
  });

  it('signalAt: the incumbent SIGKILLed as sealing starts → the successor is promoted', async () => {
    h = await createHarness({ command: PRIMITIVE });
    const w = writes(h);
    await w.put('a', '1');
    const old = h.pids().incumbent;
    const killed = h.signalAt('sealing', 'incumbent', 'SIGKILL');
    const result = await h.handoff();
    expect(await killed).toBe(old);
    expect(result.outcome, result.reason).toBe('committed');
    expect(result.reason).toMatch(/promoted/);
    const { pid } = await h.checkInvariants({ readBack: w.readBack });
    expect(pid).toBe(result.newPid);
  });

  it('signalAt SIGSTOP + waitForPhase + signal SIGCONT: a successor stopped from draining to await_ready is waited out; the handoff commits', async () => {
    h = await createHarness({ command: PRIMITIVE });
    const stopped = h.signalAt('draining', 'successor', 'SIGSTOP');
    const handoff = h.handoff();
    const pid = await stopped;
    await h.waitForPhase('await_ready');
    await new Promise((r) => setTimeout(r, 300));
    expect(h.signal('successor', 'SIGCONT')).toBe(pid);
    const result = await handoff;
    expect(result.outcome, result.reason).toBe('committed');
    expect((await h.checkInvariants()).pid).toBe(pid);
  });

  it('checkInvariants throws InvariantViolation naming every broken invariant', async () => {
    h = await createHarness({ command: PRIMITIVE, restart: { enabled: false } });
    const w = writes(h);
    await w.put('x', 'y');
    // A lost write the test knows about …
    const err1 = await h.checkInvariants({ readBack: async () => ['x'] }).catch((e: unknown) => e);
    expect(err1).toBeInstanceOf(InvariantViolation);
    expect((err1 as InvariantViolation).violations).toEqual(['1 acknowledged write(s) not readable: x']);
    // … and nobody serving (the incumbent killed, no restart).
    h.signal('incumbent', 'SIGKILL');
    const sup = h.supervisor;
    await pollUntil(() => sup.incumbent?.alive !== true, 'the supervisor to notice the kill', 10_000);
    const err2 = (await h.checkInvariants({ timeoutMs: 1_000 }).catch((e: unknown) => e)) as InvariantViolation;
    expect(err2).toBeInstanceOf(InvariantViolation);
    expect(err2.violations, err2.message).toContain('the supervisor has no live incumbent');
    expect(err2.violations.some((v) => v.startsWith('nobody answers on the listener'))).toBe(true);
    expect(err2.violations.some((v) => /^the data-dir lock is held by pid \d+, which is dead$|^nobody holds the data-dir lock$/.test(v)), err2.message).toBe(true);
  });
});

function rule(report: ConformanceReport, name: string): ConformanceReport['rules'][number] {
  const r = report.rules.find((x) => x.rule === name);
  if (!r) throw new Error(`no rule ${name} in the report`);
  return r;
}

describe('checkDrainableConformance', () => {
  it('fixtures/primitive passes every rule (seal blocked 4.5 s for the heartbeat rule)', async () => {
    const report = await checkDrainableConformance({ command: PRIMITIVE, sealBlock: { env: { PRIM_SEAL_BLOCK_MS: '4500' }, ms: 4_500 } });
    expect(report.rules.filter((r) => !r.ok), JSON.stringify(report, null, 2)).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.rules.map((r) => r.rule)).toHaveLength(6);
    expect(report.rules.every((r) => !r.skipped)).toBe(true);
    expect(report.leftovers).toEqual([]);
  }, 90_000);

  it('an app that keeps accepting after drain fails drain-stops-accepting, saying the incumbent served', async () => {
    const report = await checkDrainableConformance({ command: SLOPPY, env: { SLOPPY_BUGS: 'keep-accepting' }, rules: ['drain-stops-accepting'] });
    expect(report.ok).toBe(false);
    expect(rule(report, 'drain-stops-accepting').detail).toMatch(/served by the incumbent \(pid \d+\): it still accepts after drain\(\) returned/);
  });

  it('an app that writes after seal fails nothing-written-after-seal, naming the file and the acknowledged late write', async () => {
    const report = await checkDrainableConformance({ command: SLOPPY, env: { SLOPPY_BUGS: 'write-after-seal' }, rules: ['nothing-written-after-seal'] });
    const r = rule(report, 'nothing-written-after-seal');
    expect(r.ok).toBe(false);
    expect(r.detail).toMatch(/the data dir changed in the 500 ms after SealComplete: log \d+ → \d+ bytes/);
    expect(r.detail).toMatch(/acknowledged with HTTP 200/);
  });

  it('an app that under-reports open connections fails drain-reports-honestly', async () => {
    const report = await checkDrainableConformance({ command: SLOPPY, env: { SLOPPY_BUGS: 'lie-drained' }, rules: ['drain-reports-honestly'] });
    expect(rule(report, 'drain-reports-honestly')).toMatchObject({ ok: false, detail: expect.stringMatching(/^Drained said 0 connection\(s\) open, but .* 1 were still open at Drained/) });
  });

  it('a successor advertising revisions behind the seal fails readiness-reports-sealed-revisions with the supervisor\'s reason', async () => {
    const report = await checkDrainableConformance({ command: SLOPPY, env: { SLOPPY_BUGS: 'stale-ready' }, rules: ['readiness-reports-sealed-revisions'] });
    expect(rule(report, 'readiness-reports-sealed-revisions')).toMatchObject({ ok: false, detail: expect.stringMatching(/^the supervisor rejected Ready: successor shard \d+ at revision \d+, behind sealed \d+/) });
  });

  it('fixtures/sloppy without bugs passes (the heartbeat rule is skipped without a sealBlock knob)', async () => {
    const report = await checkDrainableConformance({ command: SLOPPY });
    expect(report.ok, JSON.stringify(report, null, 2)).toBe(true);
    expect(rule(report, 'heartbeats-while-main-thread-blocks')).toMatchObject({ ok: true, skipped: true });
  }, 60_000);
});

describe('node:test example (examples/testing-kit/kv.test.mjs)', () => {
  const example = path.join(ROOT, 'examples/testing-kit/kv.test.mjs');

  it('is the example in docs/testing.md, verbatim', () => {
    expect(readFileSync(path.join(ROOT, 'docs/testing.md'), 'utf8')).toContain(readFileSync(example, 'utf8'));
  });

  it('passes under `node --test`, importing baton/testing by the package name', async () => {
    const child = spawn(process.execPath, ['--test', example], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c));
    child.stderr.on('data', (c: Buffer) => (out += c));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    expect(code, out).toBe(0);
    expect(out).toMatch(/# pass 3\n# fail 0/);
  });
});
