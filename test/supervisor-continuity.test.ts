/**
 * Supervisor continuity (issue 22): baton replaces or restarts itself without refusing
 * a connection and without restarting the app. Through the real `baton` binary and the
 * kv fixture, with keep-alive load and writes running through every step, and the
 * outcome asserted: what `baton upgrade --self` said and its exit code, which
 * supervisor and which app process serve, the history, fds and memory, and that no
 * request failed and no acknowledged write was lost.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { JobRecord } from '../src/daemon/jobs.js';
import { isAlive } from '../src/os/proc.js';
import { useCliWorlds, type DaemonHandle } from './support/cli.js';
import { exitOf, Harness, pollUntil } from './support/harness.js';
import { KV, KvLoad } from './support/kv-load.js';

const h = new Harness();
const worlds = useCliWorlds(h);

interface StatusJson {
  supervisor: { pid: number };
  app: { pid: number; generation: number } | null;
  listeners: { name: string; address: string }[];
  serving: boolean;
}

async function status(d: DaemonHandle): Promise<StatusJson> {
  return (await worlds.w.status(d)) as unknown as StatusJson;
}

async function history(d: DaemonHandle): Promise<JobRecord[]> {
  const r = await worlds.w.baton(['history', '--json', '--limit', '100', '--state-dir', d.stateDir]);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { jobs: JobRecord[] }).jobs;
}

function selfUpgrade(d: DaemonHandle): ReturnType<typeof worlds.w.baton> {
  return worlds.w.baton(['upgrade', '--self', '--json', '--state-dir', d.stateDir], {}, 120_000);
}

async function verifyLoad(load: KvLoad): Promise<void> {
  await load.stop();
  expect(load.failures, `failed requests: ${JSON.stringify(load.failures)}`).toEqual({});
  expect(load.ackedWrites).toBeGreaterThan(0);
  const { lost, resurrected } = await load.verify();
  expect(lost, 'lost acknowledged writes').toEqual([]);
  expect(resurrected).toEqual([]);
}

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
}

/** `baton stop` for a supervisor that is not the test's child (it came from a self-upgrade or a restart): it must exit. */
async function stopSupervisor(d: DaemonHandle, pid: number): Promise<void> {
  const r = await worlds.w.baton(['stop', '--state-dir', d.stateDir]);
  expect(r.code, r.stderr).toBe(0);
  await pollUntil(async () => !isAlive(pid) || undefined, `supervisor ${pid} to exit`, 30_000);
}

async function startKv(extraArgs: string[] = [], env: Record<string, string> = {}): Promise<DaemonHandle> {
  return worlds.w.startDaemon({ command: KV, extraArgs: ['--name', 'continuity', ...extraArgs], env });
}

async function upgradeApp(d: DaemonHandle): Promise<void> {
  const r = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir], {}, 90_000);
  expect(r.code, r.stdout + r.stderr).toBe(0);
}

describe('baton upgrade --self', () => {
  it('twenty in a row under keep-alive load with writes: each hands over to a new supervisor, the app keeps its pid, no request fails, no write is lost, fds and memory stay flat', { timeout: 300_000 }, async () => {
    const d = await startKv();
    const first = await status(d);
    const appPid = first.app!.pid;
    const appFds0 = fdCount(appPid);
    const load = new KvLoad(d.port, { conns: 16 });
    const supervisors = [first.supervisor.pid];
    const fds: number[] = [];
    const rss: number[] = [];
    try {
      for (let i = 1; i <= 20; i++) {
        const before = supervisors[supervisors.length - 1]!;
        const r = await selfUpgrade(d);
        expect(r.code, `self-upgrade ${i}: ${r.stdout}${r.stderr}`).toBe(0);
        const job = JSON.parse(r.stdout) as JobRecord;
        expect(job).toMatchObject({ kind: 'supervisor', state: 'SUCCEEDED', supervisor: { oldPid: before, appPid, generation: 1 } });
        const now = job.supervisor!.newPid;
        expect(now).not.toBe(before);
        if (i === 1) expect(await exitOf(d.child)).toEqual({ code: 0, signal: null });
        await pollUntil(async () => !isAlive(before) || undefined, `supervisor ${before} to exit`, 10_000);
        const s = await status(d);
        expect(s.supervisor.pid).toBe(now);
        expect(s.app).toMatchObject({ pid: appPid, generation: 1 });
        supervisors.push(now);
        fds.push(fdCount(now));
        rss.push(rssKiB(now));
      }
    } finally {
      await verifyLoad(load);
    }
    expect(new Set(supervisors).size).toBe(21);
    // Each supervisor is a new process: what one holds must not grow from one to the next.
    expect(Math.max(...fds) - Math.min(...fds), `supervisor fds: ${fds.join(' ')}`).toBeLessThanOrEqual(2);
    expect(Math.max(...rss), `supervisor RSS KiB: ${rss.join(' ')}`).toBeLessThan(Math.min(...rss) * 1.5);
    expect(Math.abs(fdCount(appPid) - appFds0), 'the app holds what it held').toBeLessThanOrEqual(2);
    const jobs = (await history(d)).filter((j) => j.kind === 'supervisor');
    expect(jobs).toHaveLength(20);
    expect(jobs.every((j) => j.state === 'SUCCEEDED')).toBe(true);
    // The app it adopted hands over as usual: the first handoff after the self-upgrades commits.
    await upgradeApp(d);
    expect((await status(d)).app!.pid).not.toBe(appPid);
    await stopSupervisor(d, supervisors[supervisors.length - 1]!);
  });
});
