/**
 * Safe deploys (issue 20): no build, however broken, takes the service down. Through
 * the real `baton` binary and the kv fixture, with releases side by side behind a
 * symlink (`current -> releases/vN`, the command is `current/app.sh`), keep-alive load
 * with writes running through every fault, and the outcome asserted: what the upgrade
 * said and its exit code, which process and which build serve, the history, and that
 * no request failed and no acknowledged write was lost.
 */
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { isAlive } from '../src/os/proc.js';
import type { BuildRecord } from '../src/supervisor/builds.js';
import type { JobRecord } from '../src/daemon/jobs.js';
import { useCliWorlds, type DaemonHandle } from './support/cli.js';
import { Harness, pollUntil } from './support/harness.js';
import { KvLoad, verifyLoad } from './support/kv-load.js';
import { Releases, type Release } from './support/releases.js';

const h = new Harness();
const worlds = useCliWorlds(h);

interface StatusJson {
  app: { pid: number; alive: boolean; generation: number } | null;
  serving: boolean;
  restartScheduled: boolean;
  builds: { current: BuildRecord | null; lastGood: BuildRecord | null };
}

async function status(d: DaemonHandle): Promise<StatusJson> {
  return (await worlds.w.status(d)) as unknown as StatusJson;
}

const history = (d: DaemonHandle): Promise<JobRecord[]> => worlds.w.history(d);

/** Starts `baton run` on release v1 with `config`; waits until v1 has lasted its bake window when one is set. */
async function startOnV1(config: Record<string, unknown>, v1: Release = { name: 'v1' }): Promise<{ d: DaemonHandle; rel: Releases }> {
  const dir = h.tempDir('baton-deploys-');
  const rel = new Releases(dir);
  rel.deploy(v1);
  const configFile = path.join(dir, 'baton.json');
  writeFileSync(configFile, JSON.stringify(config));
  const d = await worlds.w.startDaemon({ dir, command: rel.command, extraArgs: ['--config', configFile] });
  return { d, rel };
}

async function waitGood(d: DaemonHandle, generation: number): Promise<void> {
  await pollUntil(async () => ((await status(d)).builds.current?.generation === generation && (await status(d)).builds.current?.state === 'good') || undefined, `generation ${generation}'s build to be known good`, 30_000, 200);
}

function upgrade(d: DaemonHandle, ...args: string[]): ReturnType<typeof worlds.w.baton> {
  return worlds.w.baton(['upgrade', '--state-dir', d.stateDir, ...args], {}, 90_000);
}


describe('safe deploys: a broken build never takes the service down', () => {
  it('six upgrades in a row to a build that dies after Begin, with no listener spares: each aborts with the exception it printed, the old process serves on, no request fails, no write is lost', { timeout: 180_000 }, async () => {
    const { d, rel } = await startOnV1({ handoff: { listenerSpares: 0, bakeS: 0 } });
    const v1Pid = (await status(d)).app!.pid;
    const load = new KvLoad(d.port, { conns: 16 });
    try {
      rel.deploy({ name: 'broken', env: { KV_FAIL_AFTER_BEGIN: '1' } });
      for (let i = 1; i <= 6; i++) {
        const r = await upgrade(d);
        expect(r.code, `upgrade ${i}: ${r.stdout}${r.stderr}`).toBe(2);
        expect(r.stderr).toMatch(/aborted: successor \(pid \d+\) exited \(code 1, signal -\) during (begin|await_ready); its stderr says: .*migration 0042 failed/);
        expect(r.stderr).toMatch(/the new process's stderr ended with:\n(\s+\| .*\n)*\s+\| .*migration 0042 failed/);
        expect(r.stderr).toMatch(new RegExp(`the old process serves on: generation 1 \\(pid ${v1Pid}\\)`));
        expect((await status(d)).app?.pid).toBe(v1Pid);
      }
    } finally {
      await verifyLoad(load);
    }
    const s = await status(d);
    expect(s.serving).toBe(true);
    expect(s.app).toMatchObject({ pid: v1Pid, alive: true, generation: 1 });
    const aborted = (await history(d)).filter((j) => j.trigger === 'admin');
    expect(aborted).toHaveLength(6);
    for (const j of aborted) {
      expect(j).toMatchObject({ state: 'FAILED', handoff: { outcome: 'aborted', oldPid: v1Pid, newPid: v1Pid } });
      expect(j.handoff?.successorStderr).toMatch(/migration 0042 failed/);
    }
    await worlds.w.stop(d);
  });

  it('a build that hangs after Begin is bounded by --ready-timeout: the upgrade aborts within it and requests that waited complete on the old process', { timeout: 120_000 }, async () => {
    const { d, rel } = await startOnV1({ handoff: { bakeS: 0 } });
    const v1Pid = (await status(d)).app!.pid;
    const load = new KvLoad(d.port, { conns: 16 });
    let requestsAtAbort = 0;
    try {
      rel.deploy({ name: 'hangs', env: { KV_HANG_AFTER_BEGIN: '1' } });
      const t0 = Date.now();
      const r = await upgrade(d, '--ready-timeout', '1.5');
      const took = Date.now() - t0;
      requestsAtAbort = load.requests;
      expect(r.code, r.stdout + r.stderr).toBe(2);
      expect(r.stderr).toMatch(/E_READY_TIMEOUT/);
      expect(r.stderr).toMatch(/its stderr says: .*hanging after Begin/); // its stderr, in the answer
      expect(took).toBeLessThan(15_000);
      await pollUntil(async () => load.requests > requestsAtAbort + 200 || undefined, 'requests to flow again after the abort', 20_000);
    } finally {
      await verifyLoad(load);
    }
    expect((await status(d)).app?.pid).toBe(v1Pid);
    await worlds.w.stop(d);
  });

  it('a build that crashes after Ready, inside its bake window, is rolled back to the last known-good build by itself (a rollback job), with no acknowledged write lost', { timeout: 120_000 }, async () => {
    const { d, rel } = await startOnV1({ handoff: { bakeS: 4 } });
    await waitGood(d, 1);
    const load = new KvLoad(d.port, { conns: 8 });
    let v2Pid = 0;
    try {
      rel.deploy({ name: 'v2', env: { KV_CRASH_AFTER_READY_S: '0.5' } });
      const r = await upgrade(d);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      v2Pid = Number(/-> (\d+)\)/.exec(r.stdout)![1]);
      const rollback = await pollUntil(async () => (await history(d)).find((j) => j.trigger === 'rollback' && j.state === 'SUCCEEDED'), 'an automatic rollback job', 30_000, 200);
      expect(rollback.handoff?.rollback).toMatchObject({ automatic: true, from: { buildId: 'v2' }, to: { buildId: 'v1', resolved: [rel.script('v1')] } });
      expect(rollback.handoff?.rollback?.reason).toMatch(/exited \(code 1, signal -\) \d+\.\d s after its commit, inside its bake window/);
      const s = await status(d);
      expect(s.serving).toBe(true);
      expect(s.app?.pid).toBe(rollback.handoff?.newPid);
      expect(s.builds.current).toMatchObject({ buildId: 'v1', resolved: [rel.script('v1')], state: 'good' });
      expect(isAlive(v2Pid)).toBe(false);
      // Loads on: the rolled-back build serves reads and writes.
      const before = load.ackedWrites;
      await pollUntil(async () => load.ackedWrites > before + 50 || undefined, 'writes acknowledged by the rolled-back build', 20_000);
    } finally {
      await load.stop();
    }
    // The crash itself resets the connections v2 held (it was the process that died): only
    // such failures are allowed, and nothing acknowledged is lost.
    const kinds = Object.keys(load.failures);
    expect(kinds.filter((k) => !/ECONNRESET|ECONNREFUSED|EPIPE|socket hang up|hang_up|reset/i.test(k)), JSON.stringify(load.failures)).toEqual([]);
    const { lost } = await load.verify();
    expect(lost).toEqual([]);
    await worlds.w.stop(d);
  });

  it('baton rollback goes back to the previous good build on demand (a handoff), marks the one it leaves bad, and says when there is nothing to go back to (exit 5)', { timeout: 120_000 }, async () => {
    const { d, rel } = await startOnV1({ handoff: { bakeS: 1 } });
    await waitGood(d, 1);
    rel.deploy({ name: 'v2' });
    const up = await upgrade(d);
    expect(up.code, up.stdout + up.stderr).toBe(0);
    await waitGood(d, 2);
    const v2Pid = (await status(d)).app!.pid;
    const load = new KvLoad(d.port, { conns: 8 });
    try {
      const r = await worlds.w.baton(['rollback', '--state-dir', d.stateDir, '--reason', 'wrong totals on the dashboard']);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/rolled back to build v1 \(.*releases\/v1\/app\.sh\), generation 1 \(from build v2 .*generation 2\): wrong totals on the dashboard/);
      expect(r.stdout).toMatch(new RegExp(`committed: generation 3 \\(pid ${v2Pid} -> \\d+\\)`));
    } finally {
      await verifyLoad(load);
    }
    const s = await status(d);
    expect(s.builds.current).toMatchObject({ generation: 3, buildId: 'v1', state: 'good' });
    const job = (await history(d))[0]!;
    expect(job).toMatchObject({ trigger: 'admin', state: 'SUCCEEDED', handoff: { rollback: { automatic: false, reason: 'wrong totals on the dashboard', to: { buildId: 'v1' }, from: { buildId: 'v2' } } } });
    // v2 is bad now, v1 serves: nothing earlier to go back to.
    const again = await worlds.w.baton(['rollback', '--state-dir', d.stateDir]);
    expect(again.code, again.stdout + again.stderr).toBe(5);
    expect(again.stderr).toMatch(/refused: .*E_NO_ROLLBACK_TARGET/);
    await worlds.w.stop(d);
  });

  it('an in-place deploy cannot be rolled back, and baton says why', { timeout: 60_000 }, async () => {
    const { d, rel } = await startOnV1({ handoff: { bakeS: 0 } });
    rel.deploy({ name: 'v1', env: { KV_BUILD_ID: 'v1b' } }); // same directory, files replaced
    const up = await upgrade(d);
    expect(up.code, up.stdout + up.stderr).toBe(0);
    const r = await worlds.w.baton(['rollback', '--state-dir', d.stateDir, '--json']);
    expect(r.code).toBe(5);
    const job = JSON.parse(r.stdout) as JobRecord;
    expect(job).toMatchObject({ state: 'SKIPPED', code: 'E_NO_ROLLBACK_TARGET' });
    expect(job.reason).toMatch(/resolves to the same files as the serving one .*cannot be rolled back; deploy each release to its own directory/);
    await worlds.w.stop(d);
  });

  it('health CRITICAL inside the bake window rolls back by itself', { timeout: 120_000 }, async () => {
    const { d, rel } = await startOnV1({ handoff: { bakeS: 6 }, healthIntervalS: 0.3 });
    await waitGood(d, 1);
    const override = path.join(d.dir, 'v2-health');
    writeFileSync(override, 'CRITICAL cannot reach the payments database');
    rel.deploy({ name: 'v2', env: { KV_PROBE_OVERRIDE: override } });
    const load = new KvLoad(d.port, { conns: 8 });
    try {
      const up = await upgrade(d);
      expect(up.code, up.stdout + up.stderr).toBe(0);
      const job = await pollUntil(async () => (await history(d)).find((j) => j.trigger === 'rollback' && j.state !== 'PENDING' && j.state !== 'RUNNING'), 'an automatic rollback to finish', 30_000, 200);
      expect(job.state).toBe('SUCCEEDED');
      expect(job.handoff?.rollback).toMatchObject({ automatic: true, to: { buildId: 'v1' } });
      expect(job.handoff?.rollback?.reason).toMatch(/health CRITICAL .* inside its bake window \(override: cannot reach the payments database\)/);
    } finally {
      await verifyLoad(load);
    }
    expect((await status(d)).builds.current).toMatchObject({ buildId: 'v1' });
    await worlds.w.stop(d);
  });

  it('an old process that cannot serve again after an abort, and a cold start that fails once: upgrade exits 4 (nothing serves), status says DOWN, and the restart policy brings the last good build back', { timeout: 120_000 }, async () => {
    // No IPC copies and no spares: the incumbent cannot listen again after the abort.
    const { d, rel } = await startOnV1({ handoff: { listenerSpares: 0, listenerCopies: false, bakeS: 0 }, restart: { maxRestarts: 5, windowS: 60 } });
    // v1 again, now failing its next three starts (the cold start after the abort and two restarts).
    const markers = [1, 2, 3].map((i) => path.join(d.dir, `fail-start-${i}`));
    rel.deploy({ name: 'v1', pre: `for m in ${markers.join(' ')}; do if [ -e "$m" ]; then rm -f "$m"; echo "v1: cannot read /etc/app.conf" >&2; exit 1; fi; done` });
    rel.deploy({ name: 'broken', env: { KV_FAIL_AFTER_BEGIN: '1' } });
    // First without failures: the cold start after the abort starts the build that served (v1), not the broken one.
    const first = await upgrade(d);
    expect(first.code, first.stdout + first.stderr).toBe(2);
    expect(first.stderr).toMatch(/the old process could not serve again .*; cold start committed: pid (\d+)/);
    expect((await status(d)).builds.current).toMatchObject({ buildId: 'v1', resolved: [rel.script('v1')] });
    for (const m of markers) writeFileSync(m, '');
    const r = await upgrade(d);
    expect(r.code, r.stdout + r.stderr).toBe(4);
    expect(r.stderr).toMatch(/the old process could not serve again .*; cold start aborted/);
    expect(r.stderr).toMatch(/NOTHING SERVES/);
    expect(existsSync(markers[0]!)).toBe(false);
    const down = await worlds.w.baton(['status', '--state-dir', d.stateDir]);
    expect(down.stdout).toMatch(/^app +DOWN: no app process is serving.*; (a restart is scheduled|a handoff is running)$/m);
    const back = await pollUntil(async () => {
      const s = await status(d);
      return s.serving ? s : undefined;
    }, 'the restart policy to bring the service back', 30_000, 200);
    expect(back.builds.current).toMatchObject({ buildId: 'v1', resolved: [rel.script('v1')] });
    const restart = (await history(d)).find((j) => j.trigger === 'restart' && j.state === 'SUCCEEDED');
    expect(restart?.handoff?.newPid).toBe(back.app?.pid);
    await worlds.w.stop(d);
  });

  it('a good build that starts crash-looping falls back to the previous good build before the restart policy gives up', { timeout: 120_000 }, async () => {
    const { d, rel } = await startOnV1({ handoff: { bakeS: 0 }, restart: { maxRestarts: 2, windowS: 60 } });
    const crash = path.join(d.dir, 'v2-crashes');
    rel.deploy({ name: 'v2', pre: `if [ -e ${crash} ]; then echo "v2: config schema mismatch" >&2; exit 1; fi` });
    const up = await upgrade(d);
    expect(up.code, up.stdout + up.stderr).toBe(0);
    const v2 = await status(d);
    expect(v2.builds.current).toMatchObject({ buildId: 'v2', state: 'good' });
    // From now on v2 cannot start; its serving process dies.
    writeFileSync(crash, '');
    process.kill(v2.app!.pid, 'SIGKILL');
    const back = await pollUntil(async () => {
      const s = await status(d);
      return s.serving && s.builds.current?.buildId === 'v1' ? s : undefined;
    }, 'the previous good build to serve', 60_000, 200);
    expect(back.app?.generation).toBeGreaterThan(2);
    const jobs = await history(d);
    const rollback = jobs.find((j) => j.trigger === 'rollback');
    expect(rollback).toMatchObject({ state: 'SUCCEEDED', handoff: { rollback: { automatic: true, reason: 'it crash-looped', from: { buildId: 'v2' }, to: { buildId: 'v1' } } } });
    expect(jobs.filter((j) => j.trigger === 'restart' && j.state === 'FAILED').length).toBeGreaterThanOrEqual(2);
    expect(d.child.exitCode).toBeNull(); // baton did not give up
    await worlds.w.stop(d);
  });

  it('baton run restarted on a broken newest build starts the last known-good one instead, and says so', { timeout: 120_000 }, async () => {
    const { d, rel } = await startOnV1({ handoff: { bakeS: 0 } });
    rel.deploy({ name: 'broken', env: { KV_FAIL_AFTER_BEGIN: '1' } }); // deployed, not yet upgraded to
    await worlds.w.stop(d);
    const again = await worlds.w.startDaemon({ dir: d.dir, command: rel.command, extraArgs: ['--config', path.join(d.dir, 'baton.json')] });
    const s = await status(again);
    expect(s.serving).toBe(true);
    expect(s.builds.current).toMatchObject({ buildId: 'v1', resolved: [rel.script('v1')], state: 'good' });
    const start = (await history(again))[0]!;
    expect(start).toMatchObject({ trigger: 'cold-start', state: 'SUCCEEDED', handoff: { rollback: { automatic: true, to: { buildId: 'v1' } } } });
    expect(start.handoff?.rollback?.reason).toMatch(/the newest build did not start: .*migration 0042 failed/);
    await worlds.w.stop(again);
  });
});
