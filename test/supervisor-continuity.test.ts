/**
 * Supervisor continuity (issue 22): baton replaces or restarts itself without refusing
 * a connection and without restarting the app. Through the real `baton` binary and the
 * kv fixture, with keep-alive load and writes running through every step, and the
 * outcome asserted: what `baton upgrade --self` said and its exit code, which
 * supervisor and which app process serve, the history, fds and memory, and that no
 * request failed and no acknowledged write was lost.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { JobRecord } from '../src/daemon/jobs.js';
import { isAlive } from '../src/os/proc.js';
import { useCliWorlds, type DaemonHandle } from './support/cli.js';
import { exitOf, Harness, pollUntil } from './support/harness.js';
import { KV, KvLoad, verifyLoad } from './support/kv-load.js';
import { request } from './support/engine.js';

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

const history = (d: DaemonHandle): Promise<JobRecord[]> => worlds.w.history(d);

function selfUpgrade(d: DaemonHandle): ReturnType<typeof worlds.w.baton> {
  return worlds.w.baton(['upgrade', '--self', '--json', '--state-dir', d.stateDir], {}, 120_000);
}


function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
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

/** fixtures/kv's /stats (the app's own counters). */
async function kvStats(port: number): Promise<{ http: { acceptCopiesListening: number } }> {
  return JSON.parse((await request(port, 'GET', '/stats')).body) as { http: { acceptCopiesListening: number } };
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
    // The adapter's accept fan-out holds 15 extra listener copies until its backlog is taken.
    await pollUntil(async () => (await kvStats(d.port)).http.acceptCopiesListening === 0 || undefined, 'the accept fan-out window to end', 10_000);
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
        // On disk too (the old one writes no state file once it handed over): a crash now would still show it.
        const onDisk = (JSON.parse(readFileSync(path.join(d.stateDir, 'jobs.json'), 'utf8')) as { jobs: JobRecord[] }).jobs.find((j) => j.id === job.id);
        expect(onDisk?.state).toBe('SUCCEEDED');
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

describe('SIGUSR2 to baton run', () => {
  it('does what baton upgrade --self does: a new supervisor serves, the app keeps its pid, the history has the job (trigger signal)', { timeout: 120_000 }, async () => {
    const d = await startKv();
    const first = await status(d);
    const load = new KvLoad(d.port, { conns: 8 });
    let newPid = 0;
    try {
      d.child.kill('SIGUSR2');
      expect(await exitOf(d.child)).toEqual({ code: 0, signal: null });
      const s = await pollUntil(async () => {
        const st = await status(d).catch(() => undefined);
        return st && st.supervisor.pid !== first.supervisor.pid ? st : undefined;
      }, 'the new supervisor to answer', 30_000);
      newPid = s.supervisor.pid;
      expect(s.app?.pid).toBe(first.app!.pid);
      const job = (await history(d)).find((j) => j.kind === 'supervisor');
      expect(job).toMatchObject({ state: 'SUCCEEDED', trigger: 'signal', supervisor: { oldPid: first.supervisor.pid, newPid, appPid: first.app!.pid } });
    } finally {
      await verifyLoad(load);
    }
    await stopSupervisor(d, newPid);
  });
});

describe('baton upgrade --self: what goes wrong', () => {
  /** A supervisor on kv with load; returns what the rows check. */
  async function world(env: Record<string, string> = {}, extraArgs: string[] = []): Promise<{ d: DaemonHandle; appPid: number; supPid: number; load: KvLoad }> {
    const d = await startKv(extraArgs, env);
    const s = await status(d);
    return { d, appPid: s.app!.pid, supPid: s.supervisor.pid, load: new KvLoad(d.port, { conns: 8 }) };
  }

  /** The old supervisor serves on: its admin socket answers, the app is the same, and a handoff of the app commits. */
  async function oldServesOn(d: DaemonHandle, supPid: number, appPid: number): Promise<void> {
    const s = await status(d);
    expect(s.supervisor.pid).toBe(supPid);
    expect(s.app?.pid).toBe(appPid);
    await upgradeApp(d);
  }

  for (const point of ['handover.new_after_prepared', 'handover.new_after_go'] as const) {
    it(`the new supervisor dies at ${point}: exit 2, the old one serves on (admin reopened, the app untouched), no request fails`, { timeout: 120_000 }, async () => {
      const { d, appPid, supPid, load } = await world({ BATON_CRASH_POINT: point });
      try {
        const r = await selfUpgrade(d);
        expect(r.code, r.stdout + r.stderr).toBe(2);
        const job = JSON.parse(r.stdout) as JobRecord;
        expect(job).toMatchObject({ kind: 'supervisor', state: 'FAILED', code: 'E_SELF_UPGRADE_FAILED' });
        expect(job.reason).toMatch(new RegExp(`the new supervisor \\(pid \\d+\\) exited \\(code -, signal SIGKILL\\) before it served; the old supervisor \\(pid ${supPid}\\) serves on`));
        await oldServesOn(d, supPid, appPid);
      } finally {
        await verifyLoad(load);
      }
      await worlds.w.stop(d);
    });
  }

  it('the old supervisor dies right after go (handover.old_after_go): the new one carries on and serves, the app untouched, no request fails', { timeout: 120_000 }, async () => {
    const { d, appPid, supPid, load } = await world({ BATON_CRASH_POINT: 'handover.old_after_go' });
    let newPid = 0;
    try {
      const r = await selfUpgrade(d);
      expect(r.code, 'the request dies with the old supervisor').toBe(1);
      expect(await exitOf(d.child)).toEqual({ code: null, signal: 'SIGKILL' });
      const s = await pollUntil(async () => {
        const st = await status(d).catch(() => undefined);
        return st && st.supervisor.pid !== supPid ? st : undefined;
      }, 'the new supervisor to answer', 30_000);
      newPid = s.supervisor.pid;
      expect(s.app?.pid).toBe(appPid);
      const job = (await history(d)).find((j) => j.kind === 'supervisor');
      expect(job).toMatchObject({ state: 'SUCCEEDED', supervisor: { oldPid: supPid, newPid, appPid } });
      await upgradeApp(d);
    } finally {
      await verifyLoad(load);
    }
    await stopSupervisor(d, newPid);
  });

  it('a configuration that cannot apply live is refused naming the key (exit 2, the old one serves on); one that can applies: a new listener, a metrics listener', { timeout: 150_000 }, async () => {
    const dir = h.tempDir('baton-continuity-');
    const config = path.join(dir, 'baton.json');
    const dirs = { dataDir: path.join(dir, 'data'), stateDir: path.join(dir, 'state') };
    const write = (c: Record<string, unknown>): void => writeFileSync(config, JSON.stringify({ listen: ['l0=tcp://127.0.0.1:0'], ...dirs, ...c }));
    write({ handoff: { readyTimeoutS: 10 } });
    const d = await worlds.w.startDaemon({ dir, command: KV, listen: null, dirFlags: false, extraArgs: ['--config', config] });
    const first = await status(d);
    const appPid = first.app!.pid;
    let supPid = first.supervisor.pid;
    const load = new KvLoad(d.port, { conns: 8 });
    const refused = async (pattern: RegExp): Promise<void> => {
      const r = await selfUpgrade(d);
      expect(r.code, r.stdout + r.stderr).toBe(2);
      expect((JSON.parse(r.stdout) as JobRecord).reason).toMatch(pattern);
      expect((await status(d)).supervisor.pid, 'the old supervisor serves on').toBe(supPid);
    };
    try {
      write({ handoff: { readyTimeoutS: 'soon' } });
      await refused(/the new supervisor failed: .*"handoff.readyTimeoutS"/);
      write({ dataDir: path.join(dir, 'elsewhere') });
      await refused(/"dataDir" changed from .* to .*elsewhere; the running app uses the old one/);
      write({ socketActivation: true });
      await refused(/"socketActivation" changed to true; the running app was started in the other mode/);
      write({ listen: ['l0=tcp://127.0.0.1:1'] });
      await refused(/"listen": listener l0 changed from tcp:\/\/127.0.0.1:\d+ to tcp:\/\/127.0.0.1:1; a listener's address cannot change/);
      write({ listen: ['other=tcp://127.0.0.1:0'] });
      await refused(/"listen": listener l0 \(tcp:\/\/127.0.0.1:\d+\) is gone from the configuration/);

      const metricsPort = await freePort();
      write({ listen: ['l0=tcp://127.0.0.1:0', 'second=tcp://127.0.0.1:0'], metrics: `127.0.0.1:${metricsPort}`, handoff: { readyTimeoutS: 5 } });
      const added = await selfUpgrade(d);
      expect(added.code, added.stdout + added.stderr).toBe(0);
      supPid = (JSON.parse(added.stdout) as JobRecord).supervisor!.newPid;
      const s = await status(d);
      expect(s.supervisor.pid).toBe(supPid);
      expect(s.listeners.map((l) => l.name)).toEqual(['l0', 'second']);
      expect(s.listeners[0]!.address).toBe(first.listeners[0]!.address);
      expect(s.app?.pid).toBe(appPid);
      expect(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()).toMatch(/^baton_/m);
      // The new listener reaches the app at its next handoff.
      await upgradeApp(d);
      const second = Number(s.listeners[1]!.address.split(':').pop());
      expect((await fetch(`http://127.0.0.1:${second}/healthz`)).status).toBe(200);
    } finally {
      await verifyLoad(load);
    }
    await stopSupervisor(d, supPid);
  });
});

describe('baton run again after the supervisor was killed', () => {
  it('idle: it takes the listeners back from the app it left serving and re-adopts it: no connection refused or reset, the app not restarted, every write readable, an upgrade then commits', { timeout: 120_000 }, async () => {
    const d = await startKv();
    const appPid = (await status(d)).app!.pid;
    const load = new KvLoad(d.port, { conns: 16 });
    let d2: DaemonHandle | undefined;
    try {
      await new Promise((r) => setTimeout(r, 500));
      d.child.kill('SIGKILL');
      await exitOf(d.child);
      await new Promise((r) => setTimeout(r, 500)); // the orphan serves on, unsupervised
      d2 = await worlds.w.startDaemon({ dir: d.dir, command: KV, listen: `tcp://127.0.0.1:${d.port}`, extraArgs: ['--name', 'continuity'] });
      const s = await status(d2);
      expect(s.supervisor.pid).toBe(d2.child.pid);
      expect(s.app?.pid, 'the app was not restarted').toBe(appPid);
      expect(d2.out.stderr + JSON.stringify(d2.out.lines)).toMatch(new RegExp(`"event":"daemon.listeners_reclaimed","appPid":${appPid}`));
      await new Promise((r) => setTimeout(r, 500));
      await upgradeApp(d2);
      expect((await status(d2)).app?.pid).not.toBe(appPid);
    } finally {
      await verifyLoad(load);
    }
    await worlds.w.stop(d2!);
  });

  for (const point of ['supervisor.after_drained', 'supervisor.after_seal_complete'] as const) {
    it(`mid-handoff (${point}): the restarted supervisor takes the listeners back from a survivor and adopts the one that serves; every acknowledged write is readable and an upgrade commits`, { timeout: 150_000 }, async () => {
      const d = await startKv([], { BATON_CRASH_POINT: point });
      const load = new KvLoad(d.port, { conns: 8 });
      let d2: DaemonHandle | undefined;
      try {
        const r = await worlds.w.baton(['upgrade', '--state-dir', d.stateDir], {}, 60_000);
        expect(r.code).toBe(1); // the supervisor died under it
        expect(await exitOf(d.child)).toEqual({ code: null, signal: 'SIGKILL' });
        d2 = await worlds.w.startDaemon({ dir: d.dir, command: KV, listen: `tcp://127.0.0.1:${d.port}`, extraArgs: ['--name', 'continuity'] });
        expect(d2.out.stderr + JSON.stringify(d2.out.lines)).toMatch(/"event":"daemon.listeners_reclaimed"/);
        expect(d2.out.stderr + JSON.stringify(d2.out.lines)).not.toMatch(/"event":"daemon.takeover"/);
        await upgradeApp(d2);
      } finally {
        await verifyLoad(load);
      }
      await worlds.w.stop(d2!);
    });
  }
});
