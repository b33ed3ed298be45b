/**
 * A peer in another language (issue 7): fixtures/python-peer is an incumbent/successor
 * written in Python 3 with the standard library only, from protocol/PROTOCOL.md alone; since
 * issue 24 its protocol side is the Python SDK (sdk/python), so this suite is the SDK's too.
 *
 *  - its msgpack codec against the golden vectors (python3 -m unittest test_codec);
 *  - a real Supervisor runs it: cold start, handoffs Python → Python under keep-alive
 *    load with every acknowledged write read back, aborts (unhealthy Ready, failed seal,
 *    failed drain, a successor that dies at start) after which the Python incumbent
 *    serves again and the next handoff commits; World teardown proves no process is left.
 *
 * Skipped when python3 (>= 3.9, the SDK's minimum) is not installed.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeFrame, FrameDecoder, type DecodedFrame } from '../src/wire/codec.js';
import { lockHolder } from '../src/os/lock.js';
import type { Message } from '../src/wire/schema.js';
import type { HandoffSpec } from '../src/supervisor/options.js';
import { healthz, Load, lostWrites, request, ROOT } from './support/engine.js';
import { pollUntil } from './support/harness.js';
import { useWorlds, type World, type WorldOptions } from './support/world.js';

process.env.BATON_LOG_LEVEL ??= 'warn';

const PEER_DIR = path.join(ROOT, 'fixtures/python-peer');
const PYTHON_PEER = ['python3', path.join(PEER_DIR, 'peer.py')];
const python = spawnSync('python3', ['-c', 'import sys; print(sys.version_info >= (3, 9))'], { encoding: 'utf8' });
const hasPython = python.status === 0 && python.stdout.trim() === 'True';

const worlds = useWorlds();
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanups.splice(0)) f();
});

function pythonWorld(opts: WorldOptions = {}): Promise<World> {
  return worlds.start({
    ...opts,
    appEnv: { PYTHONDONTWRITEBYTECODE: '1', PYPEER_SHARDS: '2', ...opts.appEnv },
    supervisor: { command: PYTHON_PEER, ...opts.supervisor },
  });
}

async function putAll(w: World, n: number, prefix: string, acked: Map<string, string>): Promise<void> {
  for (let i = 0; i < n; i++) {
    const key = `${prefix}${i}`;
    const value = `value-${key}-ü`;
    const r = await request(w.port, 'PUT', `/kv/${key}`, value);
    expect(r.status, r.body).toBe(200);
    acked.set(key, value);
  }
}

/** A hand-driven supervisor connection to the incumbent's control socket. */
class ControlClient {
  private readonly frames: DecodedFrame[] = [];
  private waiters: (() => void)[] = [];
  readonly closed: Promise<void>;
  private readonly socket: net.Socket;

  constructor(socketPath: string) {
    const decoder = new FrameDecoder();
    this.socket = net.connect(socketPath);
    this.socket.on('data', (b) => {
      this.frames.push(...decoder.push(b));
      for (const w of this.waiters.splice(0)) w();
    });
    this.closed = new Promise((resolve) => this.socket.on('close', () => resolve()));
    this.socket.on('error', () => undefined);
  }

  async next(timeoutMs = 5_000): Promise<DecodedFrame> {
    const until = Date.now() + timeoutMs;
    while (this.frames.length === 0) {
      if (Date.now() > until) throw new Error('no frame from the incumbent');
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
    return this.frames.shift()!;
  }

  send(msg: Message): void {
    this.socket.write(encodeFrame(msg));
  }

  close(): void {
    this.socket.destroy();
  }
}

function envOf(pid: number): Record<string, string> {
  return Object.fromEntries(
    readFileSync(`/proc/${pid}/environ`, 'utf8')
      .split('\0')
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
}

const revisionSum = (revs: Record<string, string>) => Object.values(revs).reduce((a, r) => a + Number(r), 0);

describe.skipIf(!hasPython)('python peer: codec', () => {
  it('encodes and decodes every golden vector, and rejects every invalid one with its code', () => {
    const r = spawnSync('python3', ['-m', 'unittest', '-v', 'test_codec'], {
      cwd: PEER_DIR,
      encoding: 'utf8',
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
      timeout: 30_000,
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/Ran (\d+) tests/);
    expect(Number(/Ran (\d+) tests/.exec(r.stderr)![1])).toBeGreaterThanOrEqual(10);
    expect(r.stderr).toMatch(/\nOK\s*$/);
  });
});

describe.skipIf(!hasPython)('python peer under a real supervisor', () => {
  it('cold start, then 5 handoffs Python → Python under keep-alive load: every acknowledged write survives', async () => {
    const w = await pythonWorld();
    const gen1 = w.sup.incumbent!.pid;
    expect(await w.settledServer()).toBe(gen1);
    const first = await healthz(w.port);
    expect(first).toEqual({ pid: gen1, generation: 1, revisions: { '0': '0', '1': '0' } });

    const acked = new Map<string, string>();
    await putAll(w, 20, 'cold-', acked);
    const load = new Load(w.port, 4);
    const pids = [gen1];
    try {
      await new Promise((r) => setTimeout(r, 200));
      for (let i = 0; i < 5; i++) {
        const old = w.sup.incumbent!;
        const result = await w.sup.performHandoff();
        expect(result.outcome, `${result.code}: ${result.reason}`).toBe('committed');
        expect(result.oldPid).toBe(old.pid);
        expect(result.phases.map((p) => p.phase)).toEqual(['spawning', 'hello', 'draining', 'sealing', 'begin', 'await_ready', 'committing']);
        // The old Python incumbent exits by itself, with status 0, after Committed.
        expect(await old.exited).toEqual({ code: 0, signal: undefined });
        pids.push(result.newPid!);
        expect(await w.settledServer()).toBe(result.newPid);
        expect((await lockHolder(w.dataDir))?.owner.pid).toBe(result.newPid);
        expect((await healthz(w.port)).generation).toBe(i + 2);
        await putAll(w, 5, `h${i}-`, acked);
      }
    } finally {
      await load.stop();
    }
    expect(new Set(pids).size).toBe(6);
    expect(load.failures, `failed requests: ${JSON.stringify(load.failures)}`).toEqual({});
    expect(load.acked.size).toBeGreaterThan(0);
    for (const [k, v] of load.acked) acked.set(k, v);
    expect(await lostWrites(w.port, acked)).toEqual([]);
    // Every acknowledged PUT is one revision: nothing was lost or written twice across 5 seals.
    expect(revisionSum((await healthz(w.port)).revisions)).toBe(acked.size);
  });

  const aborts: { name: string; incumbentEnv?: Record<string, string>; spec?: HandoffSpec; code: string }[] = [
    { name: 'successor reports healthzOk=false', spec: { successorEnv: { PYPEER_HEALTHZ_FALSE: '1' } }, code: 'E_READY_REJECTED' },
    { name: 'seal fails once (the lock is never released)', incumbentEnv: { PYPEER_SEAL_FAIL_ONCE: 'MARKER' }, code: 'E_SEAL_FAILED' },
    { name: 'drain fails once', incumbentEnv: { PYPEER_DRAIN_FAIL_ONCE: 'MARKER' }, code: 'E_DRAIN_FAILED' },
    { name: 'successor exits at start', spec: { successorEnv: { PYPEER_START_FAIL: '1' } }, code: 'E_PEER_DIED' },
    { name: 'successor cannot open its data after Begin (its Error E_OPEN_FAILED)', spec: { successorEnv: { PYPEER_OPEN_FAIL: '1' } }, code: 'E_PEER_ERROR' },
  ];
  for (const c of aborts) {
    it(`abort: ${c.name} → ${c.code}; the Python incumbent resumes, serves, and the next handoff commits`, async () => {
      // Fail-once knobs remember across processes through a marker file: the resumed incumbent and the next successor work.
      const markers = mkdtempSync(path.join(tmpdir(), 'pypeer-markers-'));
      cleanups.push(() => rmSync(markers, { recursive: true, force: true }));
      const env = Object.fromEntries(Object.entries(c.incumbentEnv ?? {}).map(([k, v]) => [k, v === 'MARKER' ? path.join(markers, k) : v]));
      const w = await pythonWorld({ appEnv: env });
      const gen1 = w.sup.incumbent!.pid;
      const acked = new Map<string, string>();
      await putAll(w, 10, 'before-', acked);

      const result = await w.sup.performHandoff(c.spec);
      expect(result.outcome).toBe('aborted');
      expect(result.code, result.reason).toBe(c.code);
      expect(w.sup.incumbent!.pid).toBe(gen1);
      expect(await w.settledServer()).toBe(gen1);
      expect((await lockHolder(w.dataDir))?.owner.pid).toBe(gen1);
      expect(await lostWrites(w.port, acked)).toEqual([]);
      await putAll(w, 10, 'resumed-', acked);

      const next = await w.sup.performHandoff();
      expect(next.outcome, `${next.code}: ${next.reason}`).toBe('committed');
      expect(await w.settledServer()).toBe(next.newPid);
      expect(await lostWrites(w.port, acked)).toEqual([]);
      expect(revisionSum((await healthz(w.port)).revisions)).toBe(acked.size);
    });
  }

  it('control socket: 0600 in a 0700 dir, Hello first, one supervisor at a time (E_BUSY), a wrong handoffId is E_WRONG_HANDOFF, and the incumbent serves on', async () => {
    const w = await pythonWorld();
    const pid = w.sup.incumbent!.pid;
    const controlPath = envOf(pid).BATON_CONTROL_PATH!;
    // The new incumbent renames its socket over the path after its Committed, i.e. maybe
    // a moment after the cold start's result is in (PROTOCOL.md section 2): wait for it.
    const st = await pollUntil(() => {
      const s = statSync(controlPath, { throwIfNoEntry: false });
      return s?.isSocket() ? s : undefined;
    }, 'the incumbent control socket', 5_000);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(controlPath)).mode & 0o777).toBe(0o700);

    const first = new ControlClient(controlPath);
    const hello = await first.next();
    expect(hello.version).toBe(1);
    expect(hello.message).toMatchObject({ type: 'Hello', role: 'incumbent', pid, protoMin: 1, protoMax: 1 });

    const second = new ControlClient(controlPath);
    const busy = await second.next();
    expect(busy.message).toMatchObject({ type: 'Error', code: 'E_BUSY' });
    await second.closed;

    first.send({ type: 'HelloAck', handoffId: 'h-test', protoVersion: 1 });
    first.send({ type: 'Heartbeat', tsMs: BigInt(Date.now()), phase: 'test' });
    first.send({ type: 'PrepareHandoff', handoffId: 'h-other', successorPid: 1, deadlineMs: BigInt(Date.now() + 60_000), drainGraceMs: 5_000 });
    let reply = await first.next();
    while (reply.message.type === 'Heartbeat') reply = await first.next();
    expect(reply.message).toMatchObject({ type: 'Error', code: 'E_WRONG_HANDOFF' });
    await first.closed;

    // Not in a handoff: it keeps serving and accepts the next supervisor.
    const acked = new Map<string, string>();
    await putAll(w, 3, 'after-', acked);
    expect(await w.servingPid()).toBe(pid);
    const result = await w.sup.performHandoff();
    expect(result.outcome, `${result.code}: ${result.reason}`).toBe('committed');
    expect(await lostWrites(w.port, acked)).toEqual([]);
  });

  it('an app whose Hello lists no "probes" is asked once, then never again: no periodic control session it did not ask for (PROTOCOL.md 7.9)', async () => {
    const w = await pythonWorld();
    expect(await w.sup.probe()).toEqual([]); // the first session learns its Hello.features (none)
    const control = path.join(w.stateDir, 'control', 'incumbent.sock');
    renameSync(control, `${control}.away`); // from here on any session would fail to connect
    try {
      expect(await w.sup.probe()).toEqual([]);
    } finally {
      renameSync(`${control}.away`, control);
    }
  });

  it('a successor that ignores Abort is killed holding the lock; the incumbent takes it over from the dead holder', async () => {
    const w = await pythonWorld();
    const gen1 = w.sup.incumbent!.pid;
    const acked = new Map<string, string>();
    await putAll(w, 5, 'a-', acked);
    const result = await w.sup.performHandoff({ deadlineMs: 2_000, successorEnv: { PYPEER_NEVER_READY: '1', PYPEER_IGNORE_ABORT: '1' } });
    expect(result.outcome).toBe('aborted');
    expect(result.code, result.reason).toBe('E_TIMEOUT');
    expect(await w.settledServer()).toBe(gen1);
    expect((await lockHolder(w.dataDir))?.owner.pid).toBe(gen1);
    await putAll(w, 5, 'b-', acked);
    const next = await w.sup.performHandoff();
    expect(next.outcome, `${next.code}: ${next.reason}`).toBe('committed');
    expect(await lostWrites(w.port, acked)).toEqual([]);
  });

  it('the incumbent dies mid-drain: the Python successor is promoted and recovers every acknowledged write from the log', async () => {
    const markers = mkdtempSync(path.join(tmpdir(), 'pypeer-markers-'));
    cleanups.push(() => rmSync(markers, { recursive: true, force: true }));
    const w = await pythonWorld({ appEnv: { PYPEER_DRAIN_CRASH_ONCE: path.join(markers, 'crash') } });
    const gen1 = w.sup.incumbent!.pid;
    const acked = new Map<string, string>();
    await putAll(w, 20, 'p-', acked);
    const result = await w.sup.performHandoff();
    expect(result.outcome, `${result.code}: ${result.reason}`).toBe('committed');
    expect(result.promoted).toBe(true);
    expect(result.newPid).not.toBe(gen1);
    expect(await w.settledServer()).toBe(result.newPid);
    expect(await lostWrites(w.port, acked)).toEqual([]);
    expect(revisionSum((await healthz(w.port)).revisions)).toBe(acked.size);
    const next = await w.sup.performHandoff();
    expect(next.outcome, `${next.code}: ${next.reason}`).toBe('committed');
  });

  it('a seal that keeps the app thread busy past the liveness timeout still commits (heartbeats come from their own thread)', async () => {
    const w = await pythonWorld({ timeouts: { livenessMs: 3_000 }, appEnv: { PYPEER_SEAL_BLOCK_MS: '4500' } });
    const acked = new Map<string, string>();
    await putAll(w, 5, 's-', acked);
    const result = await w.sup.performHandoff();
    expect(result.outcome, `${result.code}: ${result.reason}`).toBe('committed');
    expect(result.phases.find((p) => p.phase === 'sealing')!.ms).toBeGreaterThanOrEqual(4_000);
    expect(await lostWrites(w.port, acked)).toEqual([]);
  });
});

