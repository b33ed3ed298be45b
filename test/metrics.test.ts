/**
 * `baton run --metrics HOST:PORT`: Prometheus metrics scraped over HTTP from the real
 * daemon, before and after an upgrade; a taken metrics port fails the start cleanly.
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { adminRequest } from '../src/daemon/admin.js';
import { adminSocketPath } from '../src/daemon/daemon.js';
import { request, taggedPids } from './support/engine.js';
import { Harness, pollUntil } from './support/harness.js';
import { useCliWorlds } from './support/cli.js';

const h = new Harness();
const worlds = useCliWorlds(h);

async function freePort(): Promise<number> {
  const srv = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => srv.once('listening', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

async function scrape(port: number): Promise<string> {
  const r = await request(port, 'GET', '/metrics');
  expect(r.status).toBe(200);
  return r.body;
}

/** Value of one sample line, e.g. `baton_handoffs_total{outcome="committed",service="x"}`. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_:]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

describe('metrics', () => {
  it('exposes up, generation, handoffs by outcome, phase and heartbeat histograms; they move with an upgrade', async () => {
    const port = await freePort();
    const d = await worlds.w.startDaemon({ extraArgs: ['--metrics', `127.0.0.1:${port}`] });
    let text = await scrape(port);
    expect(sample(text, 'baton_up')).toBe(1);
    expect(sample(text, 'baton_generation')).toBe(1);
    expect(sample(text, 'baton_handoffs_total', { outcome: 'committed' })).toBe(1); // the cold start
    expect(sample(text, 'baton_handoff_in_progress')).toBe(0);
    expect(text).toContain('baton_process_resident_memory_bytes');

    const up = await worlds.w.baton(['upgrade', '--json', '--state-dir', d.stateDir]);
    expect(up.code, up.stderr).toBe(0);
    text = await scrape(port);
    expect(sample(text, 'baton_generation')).toBe(2);
    expect(sample(text, 'baton_handoffs_total', { outcome: 'committed' })).toBe(2);
    expect(sample(text, 'baton_handoff_duration_seconds_count', { outcome: 'committed' })).toBe(2);
    expect(sample(text, 'baton_handoff_phase_duration_seconds_count', { phase: 'sealing' })).toBe(2);
    expect(sample(text, 'baton_heartbeat_gap_seconds_count', { peer: 'incumbent' })).toBeGreaterThan(0);
    expect((await request(port, 'GET', '/nope')).status).toBe(404);

    const stop = await worlds.w.baton(['stop', '--state-dir', d.stateDir]);
    expect(stop.code, stop.stderr).toBe(0);
    // The endpoint goes away with the supervisor.
    await pollUntil(async () => (await request(port, 'GET', '/metrics').then(() => false, () => true)) || undefined, 'metrics port closed', 15_000);
  });

  it('maintenance: jobs by type and outcome, the job duration histogram, skipped runs by code, probe and health status gauges', async () => {
    const port = await freePort();
    // Seal blocks 3 s: a maintenance run asked for during the upgrade is surely skipped.
    // Bad probes: the probe gauges carry other values than 0.
    const d = await worlds.w.startDaemon({ extraArgs: ['--metrics', `127.0.0.1:${port}`], env: { PRIM_SEAL_BLOCK_MS: '3000', PRIM_BAD_PROBES: '1' } });
    let text = await scrape(port);
    expect(sample(text, 'baton_job_running')).toBe(0);
    expect(sample(text, 'baton_jobs_total', { type: 'work' })).toBeUndefined();

    const ok = await worlds.w.baton(['maintenance', 'run', 'work', '--params', '{"steps":4,"stepMs":60}', '--state-dir', d.stateDir]);
    expect(ok.code, ok.stderr).toBe(0);
    const failed = await worlds.w.baton(['maintenance', 'run', 'work', '--params', '{"steps":4,"stepMs":10,"fail":true}', '--state-dir', d.stateDir]);
    expect(failed.code).toBe(2);
    const upgrade = worlds.w.baton(['upgrade', '--state-dir', d.stateDir]);
    await pollUntil(async () => (await worlds.w.status(d)).phase !== 'idle', 'the upgrade to start', 10_000, 20);
    const skipped = await adminRequest(adminSocketPath(d.stateDir), 'POST', '/v1/jobs', { task: 'work' }, { timeoutMs: 10_000 });
    expect(skipped.status).toBe(409);
    expect((await upgrade).code).toBe(0);
    const health = await worlds.w.baton(['health', '--state-dir', d.stateDir]);
    expect(health.code).toBe(2); // the bad probes

    text = await scrape(port);
    expect(sample(text, 'baton_jobs_total', { type: 'work', outcome: 'succeeded' })).toBe(1);
    expect(sample(text, 'baton_jobs_total', { type: 'work', outcome: 'failed' })).toBe(1);
    expect(sample(text, 'baton_jobs_total', { type: 'work', outcome: 'skipped' })).toBe(1);
    expect(sample(text, 'baton_jobs_skipped_total', { type: 'work', code: 'E_LEASE_HELD' })).toBe(1);
    // Skipped runs never started: no duration observed for them.
    expect(sample(text, 'baton_job_duration_seconds_count', { type: 'work', outcome: 'succeeded' })).toBe(1);
    expect(sample(text, 'baton_job_duration_seconds_count', { type: 'work', outcome: 'failed' })).toBe(1);
    expect(sample(text, 'baton_job_duration_seconds_count', { type: 'work', outcome: 'skipped' })).toBeUndefined();
    expect(sample(text, 'baton_job_duration_seconds_sum', { type: 'work', outcome: 'succeeded' })).toBeGreaterThanOrEqual(4 * 0.06);
    expect(sample(text, 'baton_job_duration_seconds_bucket', { type: 'work', outcome: 'succeeded', le: '0.01' })).toBe(0);
    expect(sample(text, 'baton_job_duration_seconds_bucket', { type: 'work', outcome: 'succeeded', le: '+Inf' })).toBe(1);
    expect(sample(text, 'baton_job_running')).toBe(0);
    // Probe gauges: 0 OK, 1 DEGRADED, 2 UNKNOWN, 3 CRITICAL; the aggregate is the worst.
    expect(sample(text, 'baton_probe_status', { probe: 'http' })).toBe(0);
    expect(sample(text, 'baton_probe_status', { probe: 'store' })).toBe(0);
    expect(sample(text, 'baton_probe_status', { probe: 'degraded' })).toBe(1);
    expect(sample(text, 'baton_probe_status', { probe: 'throws' })).toBe(2);
    expect(sample(text, 'baton_health_status')).toBe(2);

    const stop = await worlds.w.baton(['stop', '--state-dir', d.stateDir]);
    expect(stop.code, stop.stderr).toBe(0);
  });

  it('a metrics port that is taken fails the start with the field named, and nothing is left running', async () => {
    const blocker = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => blocker.once('listening', r));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const dir = h.tempDir('baton-metrics-');
      const r = await worlds.w.baton(['run', '--listen', 'tcp://127.0.0.1:0', '--data-dir', `${dir}/data`, '--state-dir', `${dir}/state`, '--metrics', `127.0.0.1:${port}`, '--', 'node', '-e', '']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/"metrics": cannot listen on 127\.0\.0\.1:\d+/);
      expect(await taggedPids(worlds.tag)).toEqual([]);
    } finally {
      blocker.close();
    }
  });
});
