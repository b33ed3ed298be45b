/**
 * Supervisor crash matrix: the supervisor dies (SIGKILL) at each of its crash points in
 * the middle of a handoff; a new supervisor starts with the same state dir and the same
 * listener (held outside, as systemd holds socket-activated listeners), reads the
 * journal, and recovers: exactly one live lock holder answering on the listener, no
 * acknowledged write lost, no orphan, and a follow-up handoff commits.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CRASH_POINT_NAMES } from '../src/os/crashpoints.js';
import { isAlive } from '../src/os/proc.js';
import { bindListener, parseListenAddress, type HeldListener } from '../src/os/listeners.js';
import { lockHolder } from '../src/os/lock.js';
import type { HandoffResult, RecoveryReport } from '../src/supervisor/results.js';
import { healthz, killTagged, lostWrites, newTag, PRIMITIVE, request, SUPERVISOR_HOST, taggedPids } from './support/engine.js';
import { exitOf, Harness, LineReader, pollUntil } from './support/harness.js';

const h = new Harness();
let listener: HeldListener | undefined;
let tag = '';

afterEach(async () => {
  const leftovers = await pollUntil(async () => ((await taggedPids(tag)).length === 0 ? [] : undefined), 'no leftovers', 10_000).catch(() =>
    killTagged(tag),
  );
  listener?.close();
  listener = undefined;
  await h.cleanup();
  expect(leftovers).toEqual([]);
});

function startHost(dir: string): { host: ChildProcess; out: LineReader } {
  const host = h.node(SUPERVISOR_HOST, [], {
    stdio: ['pipe', 'pipe', 'pipe', listener!.fd],
    env: {
      ...process.env,
      BATON_TEST_TAG: tag,
      BATON_LOG_LEVEL: 'warn',
      BATON_HOST_CONFIG: JSON.stringify({
        dataDir: path.join(dir, 'data'),
        stateDir: path.join(dir, 'state'),
        command: PRIMITIVE,
        appEnv: { BATON_TEST_TAG: tag, BATON_LIVENESS_MS: '3000' },
      }),
    },
  });
  return { host, out: new LineReader(host) };
}

/** A fresh world (tag, temp dir, listener held here) and its first supervisor, once it serves. */
async function firstSupervisor(): Promise<{ dir: string; markers: string; port: number; first: ReturnType<typeof startHost> }> {
  tag = newTag();
  const dir = h.tempDir('baton-recovery-');
  listener = bindListener(parseListenAddress('tcp://127.0.0.1:0'));
  const port = Number(listener.address.split(':').pop());
  const first = startHost(dir);
  await first.out.next((l: { event: string }) => l.event === 'ready', 'first supervisor ready', 20_000);
  return { dir, markers: path.join(dir, 'markers'), port, first };
}

function send(host: ChildProcess, cmd: unknown): void {
  host.stdin!.write(`${JSON.stringify(cmd)}\n`);
}

const points = CRASH_POINT_NAMES.filter((p) => p.startsWith('supervisor.'));

describe('supervisor killed while idle → restart re-adopts the serving incumbent (B1)', () => {
  it('no cold start next to the orphan: the same process serves, and the next handoff commits', async () => {
    const { dir, port, first } = await firstSupervisor();
    const gen1 = (await healthz(port)).pid;
    expect((await request(port, 'PUT', '/kv/idle', 'kept')).status).toBe(200);
    first.host.kill('SIGKILL');
    await exitOf(first.host);

    const second = startHost(dir);
    const rec = await second.out.next<{ event: string; report: RecoveryReport }>((l) => l.event === 'recovered', 'recovery', 30_000);
    expect(rec.report.phase).toBe('idle');
    expect(rec.report.survivor?.pid).toBe(gen1);
    await second.out.next((l: { event: string }) => l.event === 'ready', 'second supervisor ready', 30_000);
    expect((await healthz(port)).pid).toBe(gen1);
    send(second.host, { op: 'handoff' });
    const next = await second.out.next<{ event: string; result: HandoffResult }>((l) => l.event === 'result' && l.result.oldPid === gen1, 'follow-up handoff', 30_000);
    expect(next.result.outcome, next.result.reason).toBe('committed');
    expect(JSON.parse((await request(port, 'GET', '/kv/idle')).body).value).toBe('kept');
    send(second.host, { op: 'stop' });
    await second.out.next((l: { event: string }) => l.event === 'stopped', 'stopped', 20_000);
  }, 90_000);
});

describe('supervisor crash → restart → recovery from the journal', () => {
  for (const point of points) {
    it(point, async () => {
      const { dir, markers, port, first } = await firstSupervisor();
      const acked = new Map<string, string>();
      for (let i = 0; i < 10; i++) {
        expect((await request(port, 'PUT', `/kv/r${i}`, `v${i}`)).status).toBe(200);
        acked.set(`r${i}`, `v${i}`);
      }
      send(first.host, { op: 'arm', point, markerDir: markers });
      send(first.host, { op: 'handoff', spec: point === 'supervisor.during_abort' ? { successorEnv: { PRIM_HEALTHZ_FALSE: '1' } } : {} });
      const exit = await exitOf(first.host);
      expect(exit.signal).toBe('SIGKILL');
      expect(existsSync(markers) && readdirSync(markers).some((f) => f.startsWith(point))).toBe(true);

      const second = startHost(dir);
      const rec = await second.out.next<{ event: string; report: RecoveryReport }>((l) => l.event === 'recovered', 'recovery', 30_000);
      expect(rec.report.handoffId).toBeTruthy();
      await second.out.next((l: { event: string }) => l.event === 'ready', 'second supervisor ready', 30_000);

      const serving = await pollUntil(
        async () => {
          const holder = await lockHolder(path.join(dir, 'data'));
          const pid = (await healthz(port).catch(() => undefined))?.pid;
          return holder?.alive && holder.owner.pid === pid ? pid : undefined;
        },
        'one live lock holder answering HTTP',
        20_000,
        50,
      );
      expect(await lostWrites(port, acked)).toEqual([]);

      send(second.host, { op: 'handoff' });
      const next = await second.out.next<{ event: string; result: HandoffResult }>(
        (l) => l.event === 'result' && l.result.oldPid === serving,
        'follow-up handoff',
        30_000,
      );
      expect(next.result.outcome, next.result.reason).toBe('committed');
      expect((await healthz(port)).pid).toBe(next.result.newPid);
      expect(await lostWrites(port, acked)).toEqual([]);
      send(second.host, { op: 'stop' });
      await second.out.next((l: { event: string }) => l.event === 'stopped', 'stopped', 20_000);
    }, 90_000);
  }
});

describe('two faults at once: the supervisor dies after an unhealthy Ready, and the incumbent dies', () => {
  it('the unhealthy successor never commits on its own: it steps aside, and the restarted supervisor cold-starts a healthy generation', async () => {
    const { dir, markers, port, first } = await firstSupervisor();
    const gen1 = (await healthz(port)).pid;
    expect((await request(port, 'PUT', '/kv/two', 'faults')).status).toBe(200);
    send(first.host, { op: 'arm', point: 'supervisor.after_ready', markerDir: markers });
    send(first.host, { op: 'handoff', spec: { successorEnv: { PRIM_HEALTHZ_FALSE: '1' } } });
    const successor = (await first.out.next<{ event: string; pid: number }>((l) => l.event === 'spawned', 'the successor', 20_000)).pid;
    expect((await exitOf(first.host)).signal).toBe('SIGKILL');
    // The incumbent dies right after the supervisor (the successor, holding the lock since its Ready, sees it gone).
    process.kill(gen1, 'SIGKILL');
    // Old rule: it waited for the incumbent's exit and committed on its own, unhealthy, and was adopted.
    await pollUntil(() => (isAlive(successor) ? undefined : true), 'the unhealthy successor to step aside', 10_000, 50);

    const second = startHost(dir);
    const rec = await second.out.next<{ event: string; report: RecoveryReport }>((l) => l.event === 'recovered', 'recovery', 30_000);
    expect(rec.report.survivor).toBeUndefined();
    const cold = await second.out.next<{ event: string; result: HandoffResult }>((l) => l.event === 'result', 'the cold start', 30_000);
    expect(cold.result.outcome, cold.result.reason).toBe('committed');
    expect((await healthz(port)).pid).toBe(cold.result.newPid);
    expect(JSON.parse((await request(port, 'GET', '/kv/two')).body).value).toBe('faults');
    send(second.host, { op: 'stop' });
    await second.out.next((l: { event: string }) => l.event === 'stopped', 'stopped', 20_000);
  }, 90_000);
});
