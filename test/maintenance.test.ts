/**
 * Maintenance jobs, probes and the one lease (issue 8), through the real binary: tasks run
 * inside the serving app (fixtures/primitive task `work`), progress is visible while they
 * run, cancellation, probes that throw or hang, the lease policy against upgrades, and an
 * incumbent SIGKILLed mid-job. Every process carries this suite's BATON_TEST_TAG.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { adminRequest } from '../src/daemon/admin.js';
import { adminSocketPath } from '../src/daemon/daemon.js';
import { JobStore } from '../src/daemon/jobs.js';
import { healthz, request, ROOT } from './support/engine.js';
import { Harness, pollUntil } from './support/harness.js';
import { useCliWorlds, type DaemonHandle } from './support/cli.js';
import type { JobRecord } from '../src/daemon/jobs.js';

const h = new Harness();
const worlds = useCliWorlds(h);

const stopDaemon = (d: DaemonHandle): Promise<void> => worlds.w.stop(d);

const api = (d: DaemonHandle, method: string, url: string, body?: unknown) => adminRequest(adminSocketPath(d.stateDir), method, url, body, { timeoutMs: 20_000 });

async function job(d: DaemonHandle, id: string): Promise<JobRecord> {
  const r = await api(d, 'GET', `/v1/jobs/${id}`);
  expect(r.status).toBe(200);
  return r.body.job as JobRecord;
}

/** The newest maintenance job once it is RUNNING. */
async function runningJob(d: DaemonHandle, task = 'work'): Promise<JobRecord> {
  return pollUntil(
    async () => {
      const r = await api(d, 'GET', '/v1/jobs?kind=maintenance&limit=1');
      const j = (r.body.jobs as JobRecord[])[0];
      return j && j.state === 'RUNNING' && j.maintenance?.task === task ? j : undefined;
    },
    'a running maintenance job',
    15_000,
    20,
  );
}

function maintenance(d: DaemonHandle, args: string[]) {
  return worlds.w.baton(['maintenance', 'run', ...args, '--state-dir', d.stateDir]);
}

describe('maintenance jobs', () => {
  it('runs a task through the CLI with live progress; the job is in jobs, history, status and the audit log', async () => {
    const markers = h.tempDir('markers-');
    const d = await worlds.w.startDaemon({ env: { PRIM_MARKERS: markers } });
    const running = maintenance(d, ['work', '--params', '{"steps":12,"stepMs":150}', '--reason', 'test run', '--urgency', 'low']);
    // Progress is readable at any moment over the API while the task runs.
    const j = await runningJob(d);
    const mid = await pollUntil(async () => {
      const p = (await job(d, j.id)).maintenance?.progress;
      return p && p.done > 0 && p.done < 12 ? p : undefined;
    }, 'a progress snapshot mid-run');
    expect(mid.total).toBe(12);
    expect(mid.counters.steps).toBe(mid.done);
    const r = await running;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/started in pid \d+ \(generation 1\)/);
    expect(r.stdout).toMatch(/progress \d+\/12 \(\d+%\)/);
    expect(r.stdout).toContain('succeeded: work in');
    const done = await job(d, j.id);
    expect(done).toMatchObject({ kind: 'maintenance', state: 'SUCCEEDED', trigger: 'admin', maintenance: { task: 'work', urgency: 'low', requestReason: 'test run', result: { steps: 12, keys: 0 }, progress: { done: 12, total: 12 } } });
    expect(done.durationMs).toBeGreaterThanOrEqual(12 * 150);

    const jobs = await worlds.w.baton(['jobs', '--state-dir', d.stateDir]);
    expect(jobs.code).toBe(0);
    expect(jobs.stdout).toMatch(new RegExp(`${j.id.slice(0, 8)} maintenance work +low +SUCCEEDED`));
    const history = await worlds.w.baton(['history', '--json', '--state-dir', d.stateDir]);
    expect((JSON.parse(history.stdout) as { jobs: JobRecord[] }).jobs.map((x) => x.kind)).toEqual(['maintenance', 'handoff']);
    const status = await worlds.w.baton(['status', '--state-dir', d.stateDir]);
    expect(status.stdout).toMatch(/maintenance +last: work SUCCEEDED/);
    const audit = readFileSync(path.join(d.stateDir, 'audit.log'), 'utf8');
    expect(audit).toMatch(/"method":"POST","path":"\/v1\/jobs".*"state":"SUCCEEDED"/);
    // The app was told the node started (StartupCompleted) …
    expect(readdirSync(markers).some((f) => f.endsWith('.startup-completed'))).toBe(true);
    await stopDaemon(d);
    // … and that a stop was requested (Shutdown), before it drained.
    expect(readdirSync(markers).some((f) => f.endsWith('.shutdown-requested'))).toBe(true);
  });

  it('cancels a running job (CANCELLED, exit 5); a task that ignores the cancel is cut off and the next upgrade commits', async () => {
    const d = await worlds.w.startDaemon();
    const running = maintenance(d, ['work', '--params', '{"steps":200,"stepMs":50}']);
    const j = await runningJob(d);
    const c = await worlds.w.baton(['maintenance', 'cancel', j.id, '--state-dir', d.stateDir, '--reason', 'operator changed their mind']);
    expect(c.code, c.stderr).toBe(0);
    const r = await running;
    expect(r.code, r.stdout + r.stderr).toBe(5);
    expect(r.stderr).toContain('cancelled: operator changed their mind');
    expect(await job(d, j.id)).toMatchObject({ state: 'CANCELLED', code: 'E_CANCELLED' });
    expect((await api(d, 'POST', `/v1/jobs/${j.id}/cancel`)).status).toBe(409); // already over

    const hung = maintenance(d, ['work', '--params', '{"hang":true}']);
    const hj = await runningJob(d);
    expect((await api(d, 'POST', `/v1/jobs/${hj.id}/cancel`, {})).status).toBe(202);
    const hr = await hung;
    expect(hr.code).toBe(5);
    expect((await job(d, hj.id)).reason).toMatch(/did not acknowledge the cancel within 5000 ms/);
    // The incumbent serves on and takes the next session at once: an upgrade commits.
    const up = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    expect(up.code, up.stdout + up.stderr).toBe(0);
    await stopDaemon(d);
  });

  it('admin API: bad requests are 400, unknown jobs 404, handoffs cannot be cancelled (409)', async () => {
    const d = await worlds.w.startDaemon();
    expect((await api(d, 'POST', '/v1/jobs', { task: 'work', urgency: 'urgent' })).status).toBe(400);
    expect((await api(d, 'POST', '/v1/jobs', { task: '../x' })).status).toBe(400);
    expect((await api(d, 'POST', '/v1/jobs', { task: 'work', extra: 1 })).status).toBe(400);
    expect((await api(d, 'GET', '/v1/jobs/nope')).status).toBe(404);
    const handoff = ((await api(d, 'GET', '/v1/jobs?kind=handoff')).body.jobs as JobRecord[])[0]!;
    expect((await api(d, 'POST', `/v1/jobs/${handoff.id}/cancel`)).status).toBe(409);
    expect((await api(d, 'DELETE', '/v1/jobs')).status).toBe(405);
    // An unknown task runs nowhere: FAILED with the app's list of tasks.
    const unknown = await api(d, 'POST', '/v1/jobs', { task: 'nosuchtask' });
    expect(unknown.body.job).toMatchObject({ state: 'FAILED', code: 'E_TASK_FAILED' });
    expect((unknown.body.job as JobRecord).reason).toContain('registered: work');
    const failing = await maintenance(d, ['work', '--params', '{"steps":4,"stepMs":10,"fail":true}']);
    expect(failing.code).toBe(2);
    expect(failing.stderr).toContain('work failed on purpose at step 2');
    // A body field a route does not know is a 400 that names it, before anything is done.
    const id = (unknown.body.job as JobRecord).id;
    const cases: [string, Record<string, unknown>, string][] = [
      [`/v1/jobs/${id}/cancel`, { reason: 'x', force: true }, '"force": unknown field; known: reason'],
      [`/v1/jobs/${id}/cancel`, { reason: 42 }, '"reason": expected a string (got 42)'],
      ['/v1/stop', { timeoutS: 5, now: true }, '"now": unknown field; known: timeoutS'],
      ['/v1/rollback', { because: 'x' }, '"because": unknown field; known: reason'],
    ];
    for (const [url, body, message] of cases) {
      const r = await api(d, 'POST', url, body);
      expect(r.status, url).toBe(400);
      expect(r.body).toMatchObject({ error: { code: 'E_BAD_REQUEST', message } });
    }
    await stopDaemon(d); // still running: the bad stop request did nothing
  });
});

describe('health probes', () => {
  it('reports every probe; one that throws, hangs or overruns 10 ms is UNKNOWN with the reason; nothing crashes', async () => {
    const d = await worlds.w.startDaemon({ env: { PRIM_BAD_PROBES: '1' } });
    const r = await worlds.w.baton(['health', '--json', '--state-dir', d.stateDir]);
    expect(r.code).toBe(2); // not OK
    const report = JSON.parse(r.stdout) as { status: string; probes: { name: string; status: string; message: string; source: string }[]; supervisor: { generation: number; lock: { pid: number } } };
    const by = Object.fromEntries(report.probes.map((p) => [p.name, p]));
    expect(by.http).toMatchObject({ status: 'OK', source: 'supervisor' });
    expect(by.store).toMatchObject({ status: 'OK', source: 'app', message: '0 keys' });
    expect(by.throws).toMatchObject({ status: 'UNKNOWN', message: 'threw: probe failed on purpose' });
    expect(by.hangs).toMatchObject({ status: 'UNKNOWN', message: 'no answer within 10 ms' });
    expect(by.busy!.status).toBe('UNKNOWN');
    expect(by.busy!.message).toMatch(/answered in [\d.]+ ms \(limit 10 ms\)/);
    expect(by.degraded).toMatchObject({ status: 'DEGRADED' });
    expect(report.status).toBe('UNKNOWN');
    const hz = await healthz(d.port);
    expect(report.supervisor).toMatchObject({ generation: 1, lock: { pid: hz.pid } });
    // Probes also answer while a job runs (on the job's connection), and in `baton status`.
    const running = maintenance(d, ['work', '--params', '{"steps":20,"stepMs":100}']);
    await runningJob(d);
    const during = await worlds.w.baton(['status', '--state-dir', d.stateDir]);
    expect(during.stdout).toMatch(/maintenance +running: work RUNNING/);
    expect(during.stdout).toMatch(/probes +UNKNOWN/);
    expect(during.stdout).toMatch(/UNKNOWN +throws +threw: probe failed on purpose/);
    expect((await running).code).toBe(0);
    expect((await healthz(d.port)).pid).toBe(hz.pid); // the app never crashed
    await stopDaemon(d);
  });
});

describe('one lease for handoffs and maintenance', () => {
  it('maintenance requested while an upgrade runs is SKIPPED at once (409, "lease held by handoff")', async () => {
    // The seal blocks 4 s, so the upgrade is surely still running when we ask (over the
    // API, in-process: a CLI process may take seconds to start on a loaded machine).
    const d = await worlds.w.startDaemon({ env: { PRIM_SEAL_BLOCK_MS: '4000' } });
    const upgrade = worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    await pollUntil(async () => (await worlds.w.status(d)).phase !== 'idle', 'the upgrade to start', 10_000, 20);
    const t0 = Date.now();
    const r = await api(d, 'POST', '/v1/jobs', { task: 'work' });
    expect(Date.now() - t0).toBeLessThan(2_000); // at once, not after the upgrade
    expect(r.status, JSON.stringify(r.body)).toBe(409);
    const skipped = r.body.job as JobRecord;
    expect(skipped).toMatchObject({ kind: 'maintenance', state: 'SKIPPED', code: 'E_LEASE_HELD' });
    expect(skipped.reason).toMatch(/^lease held by handoff [0-9a-f-]+ \(phase \w+\)$/);
    expect(skipped.startedAt).toBeUndefined();
    expect((await upgrade).code).toBe(0);
    expect(((await api(d, 'GET', '/v1/jobs?kind=maintenance')).body.jobs as JobRecord[])[0]!.id).toBe(skipped.id);
    await stopDaemon(d);
  });

  it('an upgrade requested while maintenance runs waits for it; past --lease-wait it cancels it; a critical job refuses the upgrade', async () => {
    const d = await worlds.w.startDaemon();
    // 1. The job ends within the wait: it SUCCEEDS, then the upgrade commits.
    // 3 s: long enough that the upgrade surely arrives while it runs, even on a loaded machine.
    const short = maintenance(d, ['work', '--params', '{"steps":30,"stepMs":100}']);
    const sj = await runningJob(d);
    const up1 = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    expect(up1.code, up1.stdout + up1.stderr).toBe(0);
    expect(up1.stdout).toContain(`waiting up to 30 s for maintenance job ${sj.id}`);
    expect((await short).code).toBe(0);
    expect((await job(d, sj.id)).state).toBe('SUCCEEDED');
    // 2. The job outlasts --lease-wait: it is CANCELLED with the reason, the upgrade commits.
    const long = maintenance(d, ['work', '--params', '{"steps":300,"stepMs":100}']);
    const lj = await runningJob(d);
    const up2 = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir, '--lease-wait', '1']);
    expect(up2.code, up2.stdout + up2.stderr).toBe(0);
    expect((await long).code).toBe(5);
    expect(await job(d, lj.id)).toMatchObject({ state: 'CANCELLED', reason: 'a handoff waited 1000 ms for the lease' });
    expect((await healthz(d.port)).generation).toBe(3);
    // 3. A critical job is not cancelled for an upgrade: the upgrade is refused (exit 3).
    const critical = maintenance(d, ['work', '--urgency', 'critical', '--params', '{"steps":300,"stepMs":100}']);
    const cj = await runningJob(d);
    const up3 = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir, '--lease-wait', '0.5']);
    expect(up3.code, up3.stdout + up3.stderr).toBe(3);
    expect(up3.stderr).toMatch(/refused: lease held by critical maintenance job .* \(E_LEASE_HELD\)/);
    expect((await job(d, cj.id)).state).toBe('RUNNING');
    expect((await api(d, 'POST', `/v1/jobs/${cj.id}/cancel`)).status).toBe(202);
    expect((await critical).code).toBe(5);
    expect((await healthz(d.port)).generation).toBe(3);
    await stopDaemon(d);
  });

  it('the incumbent SIGKILLed mid-job: the job is FAILED with the reason and the service comes back', async () => {
    const d = await worlds.w.startDaemon();
    const before = await healthz(d.port);
    const running = maintenance(d, ['work', '--params', '{"steps":300,"stepMs":100}']);
    await runningJob(d);
    process.kill(before.pid, 'SIGKILL');
    const r = await running;
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`failed: incumbent \\(pid ${before.pid}\\) exited \\(code -, signal SIGKILL\\) during job .* \\(E_PEER_DIED\\)`));
    const back = await pollUntil(async () => {
      const hz = await healthz(d.port).catch(() => undefined);
      return hz && hz.pid !== before.pid ? hz : undefined;
    }, 'the restarted app', 20_000, 50);
    expect(back.generation).toBe(2);
    // The restart is recorded once it committed (just after the new process answers).
    const jobs = await pollUntil(async () => {
      const list = (await api(d, 'GET', '/v1/jobs')).body.jobs as JobRecord[];
      return list[0]?.trigger === 'restart' ? list : undefined;
    }, 'the restart in the history');
    expect(jobs.map((j) => `${j.kind}:${j.trigger}:${j.state}`).slice(0, 2)).toEqual(['handoff:restart:SUCCEEDED', 'maintenance:admin:FAILED']);
    // The lease is free again: the next job runs in the new process.
    const again = await maintenance(d, ['work', '--params', '{"steps":2,"stepMs":10}']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`started in pid ${back.pid}`);
    await stopDaemon(d);
  });
});

describe('job history retention', () => {
  it('prunes finished jobs by age (injectable clock) and count, never a running one; survives a reload', async () => {
    const dir = h.tempDir('jobs-');
    let now = Date.parse('2026-01-01T00:00:00Z');
    const file = path.join(dir, 'jobs.json');
    const store = new JobStore(file, { maxRecords: 3, maxAgeS: 24 * 3600 }, undefined, () => now);
    const old = store.create('maintenance', 'schedule');
    old.createdAt = new Date(now).toISOString();
    await store.finish(old, 'SUCCEEDED');
    old.endedAt = new Date(now).toISOString();
    const running = store.create('maintenance', 'admin');
    await store.start(running);
    now += 25 * 3600 * 1000; // a day and an hour later
    const fresh = store.create('handoff', 'admin');
    fresh.endedAt = new Date(now).toISOString();
    await store.finish(fresh, 'SUCCEEDED');
    fresh.endedAt = new Date(now).toISOString();
    await store.persist();
    expect(store.get(old.id)).toBeUndefined();
    expect(store.get(running.id)?.state).toBe('RUNNING');
    for (let i = 0; i < 5; i++) {
      const j = store.create('maintenance', 'admin');
      await store.finish(j, 'SKIPPED', { code: 'E_LEASE_HELD' });
      j.endedAt = new Date(now).toISOString();
    }
    await store.persist();
    const finished = store.list(100).filter((j) => j.state !== 'RUNNING');
    expect(finished).toHaveLength(3);
    expect(existsSync(file)).toBe(true);
    const reloaded = new JobStore(file, { maxRecords: 10, maxAgeS: 24 * 3600 }, undefined, () => now);
    await reloaded.load();
    // A job left RUNNING by a dead supervisor is FAILED on load.
    expect(reloaded.get(running.id)).toMatchObject({ state: 'FAILED', code: 'E_SUPERVISOR_RESTARTED' });
  });
});

describe('fixtures/kv maintenance', () => {
  const KV = ['node', path.join(ROOT, 'dist/fixtures/kv/main.js')];
  const logBytes = (dataDir: string): number => readdirSync(dataDir).filter((f) => /^shard-\d+\.log$/.test(f)).reduce((a, f) => a + statSync(path.join(dataDir, f)).size, 0);

  it('compaction keeps every acknowledged write readable and shrinks the logs; verification passes; a handoff after it commits', async () => {
    const d = await worlds.w.startDaemon({ command: KV });
    const acked = new Map<string, string | null>();
    // 40 keys overwritten 20 times, every fifth key deleted at the end: mostly dead records.
    for (let round = 0; round < 20; round++) {
      await Promise.all(Array.from({ length: 40 }, async (_, k) => {
        const value = `v${round}-${'x'.repeat(200)}`;
        const r = await request(d.port, 'PUT', `/kv/key-${k}`, value);
        expect(r.status).toBe(200);
        acked.set(`key-${k}`, value);
      }));
    }
    for (let k = 0; k < 40; k += 5) {
      expect((await request(d.port, 'DELETE', `/kv/key-${k}`)).status).toBe(200);
      acked.set(`key-${k}`, null);
    }
    const before = logBytes(d.dataDir);
    // Writes keep coming while compaction runs; they wait for their shard and are kept.
    let writing = true;
    let extra = 0;
    const writer = (async () => {
      while (writing) {
        const key = `during-${extra}`;
        const r = await request(d.port, 'PUT', `/kv/${key}`, `d${extra}`);
        if (r.status === 200) acked.set(key, `d${extra}`);
        extra++;
      }
    })();
    const r = await maintenance(d, ['compaction', '--json']);
    writing = false;
    await writer;
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as JobRecord;
    expect(j.state).toBe('SUCCEEDED');
    const result = j.maintenance!.result as { shards: number; bytesBefore: number; bytesAfter: number; recordsDropped: number };
    expect(result.shards).toBe(4);
    expect(result.recordsDropped).toBeGreaterThan(700);
    expect(j.maintenance!.progress).toMatchObject({ done: 4, total: 4 });
    const after = logBytes(d.dataDir);
    expect(after).toBeLessThan(before / 5);
    const check = async (): Promise<void> => {
      for (const [key, value] of acked) {
        const g = await request(d.port, 'GET', `/kv/${key}`);
        if (value === null) expect(g.status, key).toBe(404);
        else expect(g.status === 200 && (JSON.parse(g.body) as { value: string }).value === value, key).toBe(true);
      }
    };
    await check();
    const v = await maintenance(d, ['verification']);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout).toMatch(/succeeded: verification .*"ok":true/);
    // Revisions survived the rewrite: the successor verifies the seal of the compacted logs.
    const up = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    expect(up.code, up.stdout + up.stderr).toBe(0);
    await check();
    const health = JSON.parse((await worlds.w.baton(['health', '--json', '--state-dir', d.stateDir])).stdout) as { status: string; probes: { name: string; status: string }[] };
    expect(health.status).toBe('OK');
    expect(health.probes.map((p) => p.name)).toEqual(['http', 'shards', 'garbage']);
    await stopDaemon(d);
  });
});
