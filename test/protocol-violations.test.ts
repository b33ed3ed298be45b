/**
 * Protocol violations from either peer end in a clean abort with a clear error:
 * nobody crashes, the incumbent keeps (or gets back) the data-dir lock and serves,
 * no acknowledged write is lost, and the next real handoff commits.
 *
 * Real peers, no mocks: a real Supervisor and the primitive app as the incumbent;
 * the misbehaving successor is fixtures/rogue-successor.ts (spawned by the
 * supervisor, per handoff), the misbehaving supervisor is test/support/rogue-supervisor.ts
 * (a client of the incumbent's control socket).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { lockHolder } from '../src/os/lock.js';
import { isAlive } from '../src/os/proc.js';
import { MAX_FRAME_LENGTH, type Message, type MessageOf } from '../src/wire/schema.js';
import { lostWrites, ROOT } from './support/engine.js';
import { RogueSupervisor } from './support/rogue-supervisor.js';
import { putAll, World, type WorldOptions } from './support/world.js';

const ROGUE_SUCCESSOR = ['node', path.join(ROOT, 'dist/fixtures/rogue-successor.js')];

let world: World | undefined;
const rogues: RogueSupervisor[] = [];

async function startWorld(opts: WorldOptions = {}): Promise<World> {
  world = new World(opts);
  const cold = await world.sup.start();
  expect(cold.outcome, cold.reason).toBe('committed');
  return world;
}

afterEach(async () => {
  for (const r of rogues.splice(0)) r.close();
  const leftovers = await world?.teardown();
  world = undefined;
  expect(leftovers ?? []).toEqual([]);
});

/** `pid` is the one live lock holder, answers HTTP, has every acked write and takes new ones. */
async function expectServing(w: World, pid: number, acked: Map<string, string>, prefix: string): Promise<void> {
  expect(await w.settledServer()).toBe(pid);
  const holder = await lockHolder(w.dataDir);
  expect(holder?.owner.pid).toBe(pid);
  expect(holder?.alive).toBe(true);
  expect(await lostWrites(w.port, acked)).toEqual([]);
  await putAll(w, 4, prefix, acked);
}

/** A real handoff after the violation commits and loses nothing. */
async function expectNextHandoffCommits(w: World, acked: Map<string, string>): Promise<void> {
  const next = await w.sup.performHandoff();
  expect(next.outcome, next.reason).toBe('committed');
  expect(await w.settledServer()).toBe(next.newPid);
  expect((await lockHolder(w.dataDir))?.owner.pid).toBe(next.newPid);
  expect(await lostWrites(w.port, acked)).toEqual([]);
}

/** What the rogue successor was told (its record file), and its pid. */
function rogueRecord(w: World): { pid: number; received: Record<string, unknown>[] } {
  const files = existsSync(w.markers) ? readdirSync(w.markers).filter((f) => /^rogue-\d+\.jsonl$/.test(f)) : [];
  expect(files).toHaveLength(1);
  const file = files[0]!;
  const received = readFileSync(path.join(w.markers, file), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { pid: Number(/^rogue-(\d+)/.exec(file)![1]), received };
}

// ---------------------------------------------------------------------------

describe('a misbehaving successor: the handoff aborts, the incumbent serves again', () => {
  const cases: {
    mode: string;
    env?: Record<string, string>;
    world?: WorldOptions;
    /** HandoffResult.code. */
    code: string;
    reason: RegExp;
    /** What the rogue is told: the Error sent before closing (PROTOCOL.md 10), then Abort while the channel is open (7.4). */
    told: string[];
  }[] = [
    { mode: 'garbage', code: 'E_BAD_MSGPACK', reason: /not valid msgpack: reserved byte 0xc1/, told: ['Error E_BAD_MSGPACK'] },
    {
      mode: 'oversize',
      code: 'E_FRAME_TOO_LARGE',
      reason: new RegExp(`length ${MAX_FRAME_LENGTH + 1} exceeds the cap`),
      told: ['Error E_FRAME_TOO_LARGE'],
    },
    { mode: 'bad_version', code: 'E_BAD_VERSION', reason: /frame version 99 outside the accepted range 1\.\.1/, told: ['Error E_BAD_VERSION'] },
    {
      mode: 'wrong_handoff',
      code: 'E_WRONG_HANDOFF',
      reason: /successor sent Ready for handoff \S+, expected \S+/,
      told: ['Error E_WRONG_HANDOFF', 'Abort'],
    },
    {
      // PROTOCOL.md 8/8.1: a Ready before Begin is out of turn, noticed while the supervisor waits on the incumbent.
      // The incumbent's seal takes 500 ms here, so the Ready surely arrives before Begin
      // goes out (a Ready that crosses Begin on the wire is indistinguishable from an answer).
      mode: 'out_of_order',
      world: { appEnv: { PRIM_SEAL_BLOCK_MS: '500' } },
      code: 'E_UNEXPECTED_MESSAGE',
      reason: /successor sent Ready (during|before)/,
      told: ['Error E_UNEXPECTED_MESSAGE'],
    },
    {
      // The supervisor's receive timeout shortened from 10 s; still above the 2 s heartbeat interval of the real incumbent.
      mode: 'silent',
      world: { timeouts: { livenessMs: 3_000 } },
      code: 'E_LIVENESS_TIMEOUT',
      reason: /successor silent for 3000 ms/,
      told: [],
    },
    // PROTOCOL.md 4 step 2: a Hello that is refused is answered with Error{code}, then the channel closes.
    { mode: 'bad_hello', code: 'E_WRONG_ROLE', reason: /successor introduced itself as incumbent/, told: ['Error E_WRONG_ROLE'] },
    {
      mode: 'bad_hello',
      env: { ROGUE_HELLO: 'pid' },
      code: 'E_WRONG_PID',
      reason: /successor says pid \d+, expected \d+/,
      told: ['Error E_WRONG_PID'],
    },
    {
      mode: 'version_mismatch',
      code: 'E_VERSION_MISMATCH',
      reason: /no common protocol version: peer speaks 2\.\.3/,
      told: ['Error E_VERSION_MISMATCH'],
    },
    // PROTOCOL.md 3/10: a stream that ends inside a frame is E_TRUNCATED.
    { mode: 'truncated', code: 'E_TRUNCATED', reason: /stream ended inside a frame/, told: [] },
  ];
  for (const c of cases) {
    const title = `${c.mode}${c.env ? ` ${JSON.stringify(c.env)}` : ''} → ${c.code}`;
    it(title, async () => {
      const w = await startWorld(c.world);
      const gen1 = w.sup.incumbent!.pid;
      const acked = await putAll(w, 8, 'a');

      const result = await w.sup.performHandoff({ command: ROGUE_SUCCESSOR, successorEnv: { ROGUE_MODE: c.mode, ...c.env } });
      expect(result.outcome).toBe('aborted');
      expect(result.code, result.reason).toBe(c.code);
      expect(result.reason).toMatch(c.reason);
      expect(result.newPid).toBe(gen1);
      expect(w.sup.incumbent?.pid).toBe(gen1);

      // The rogue was killed and reaped by the abort, and told why where the protocol says so.
      const rogue = rogueRecord(w);
      expect(isAlive(rogue.pid)).toBe(false);
      const told = rogue.received
        .filter((m) => m.type === 'Error' || m.type === 'Abort')
        .map((m) => (m.type === 'Error' ? `Error ${String(m.code)}` : 'Abort'));
      expect(told).toEqual(c.told);

      await expectServing(w, gen1, acked, 'b');
      await expectNextHandoffCommits(w, acked);
    });
  }
});

// ---------------------------------------------------------------------------

/** A frame header (version 1) followed by a body that is not msgpack (0xc1 is never valid). */
function framedGarbage(): Buffer {
  const body = Buffer.from([0xc1, 0x13, 0x37, 0xde, 0xad, 0xbe, 0xef]);
  const header = Buffer.alloc(6);
  header.writeUInt32BE(2 + body.length, 0);
  header.writeUInt16BE(1, 4);
  return Buffer.concat([header, body]);
}

function u32be(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}

const heartbeat = (): Message => ({ type: 'Heartbeat', tsMs: BigInt(Date.now()), phase: 'rogue' });
const prepareHandoff = (handoffId: string): Message => ({
  type: 'PrepareHandoff',
  handoffId,
  successorPid: 1,
  deadlineMs: BigInt(Date.now() + 30_000),
  drainGraceMs: 5_000,
});

async function rogueSupervisor(w: World, handoffId?: string): Promise<RogueSupervisor> {
  const r = await RogueSupervisor.connect(w.sup.controlPath);
  rogues.push(r);
  if (handoffId !== undefined) await r.handshake(handoffId);
  return r;
}

describe('a misbehaving supervisor on the incumbent control socket: Error, close, the incumbent keeps serving', () => {
  const cases: {
    name: string;
    /** Complete the handshake (Hello → HelloAck) before acting. */
    attach: boolean;
    act: (r: RogueSupervisor) => void;
    /** The Error code the incumbent answers before closing; null: it closes without one. */
    code: string | null;
  }[] = [
    { name: 'garbage instead of HelloAck', attach: false, act: (r) => r.raw(framedGarbage()), code: 'E_BAD_MSGPACK' },
    { name: 'garbage after HelloAck', attach: true, act: (r) => r.raw(framedGarbage()), code: 'E_BAD_MSGPACK' },
    {
      name: 'unframed text (an HTTP request)',
      attach: true,
      act: (r) => r.raw(Buffer.from('GET /healthz HTTP/1.1\r\n\r\n')),
      code: 'E_FRAME_TOO_LARGE',
    },
    {
      name: `a length prefix over the cap (${MAX_FRAME_LENGTH + 1}), no body`,
      attach: true,
      act: (r) => r.raw(u32be(MAX_FRAME_LENGTH + 1)),
      code: 'E_FRAME_TOO_LARGE',
    },
    { name: 'a length prefix below 2', attach: true, act: (r) => r.raw(u32be(1)), code: 'E_FRAME_TOO_SHORT' },
    {
      name: 'HelloAck with header version 2 (handshake frames are version 1)',
      attach: false,
      act: (r) => r.send({ type: 'HelloAck', handoffId: 'h', protoVersion: 1 }, 2),
      code: 'E_BAD_VERSION',
    },
    { name: 'a frame with version 99 after HelloAck', attach: true, act: (r) => r.send(heartbeat(), 99), code: 'E_BAD_VERSION' },
    {
      name: 'HelloAck choosing version 99',
      attach: false,
      act: (r) => r.send({ type: 'HelloAck', handoffId: 'h', protoVersion: 99 }, 1),
      // PROTOCOL.md 10: a peer sends Error{code} before closing on a protocol error.
      code: 'E_VERSION_MISMATCH',
    },
    {
      name: 'SealRequest before PrepareHandoff',
      attach: true,
      act: (r) => r.send({ type: 'SealRequest', handoffId: r.handoffId }),
      code: 'E_UNEXPECTED_MESSAGE',
    },
    {
      name: 'Commit before PrepareHandoff (must not make it exit)',
      attach: true,
      act: (r) => r.send({ type: 'Commit', handoffId: r.handoffId }),
      code: 'E_UNEXPECTED_MESSAGE',
    },
    {
      name: 'PrepareHandoff with a wrong handoff id',
      attach: true,
      act: (r) => r.send(prepareHandoff(`not-${r.handoffId}`)),
      code: 'E_WRONG_HANDOFF',
    },
  ];
  for (const c of cases) {
    const title = `${c.name} → ${c.code ? `Error{${c.code}}` : 'close'}`;
    it(title, async () => {
      const w = await startWorld();
      const gen1 = w.sup.incumbent!.pid;
      const acked = await putAll(w, 8, 'a');

      const r = await rogueSupervisor(w, c.attach ? `rogue-${c.code}` : undefined);
      if (!c.attach) await r.expect('Hello');
      c.act(r);
      if (c.code === null) {
        expect(await r.next()).toEqual({ type: 'EOF' });
      } else {
        const err = await r.expectErrorAndClose();
        expect(err.code, err.message).toBe(c.code);
        expect(err.message.length).toBeGreaterThan(0);
      }

      // Nothing was started: no drain, no seal; the lock never moved.
      expect(w.hooks(gen1)).not.toContain('drain');
      await expectServing(w, gen1, acked, 'b');
      expect(w.sup.incumbent?.alive).toBe(true);
      await expectNextHandoffCommits(w, acked);
    });
  }
});

describe('a misbehaving supervisor mid-handoff: the incumbent aborts on its own and serves again', () => {
  /** A valid PrepareHandoff → Drained (and optionally SealRequest → SealComplete) from the rogue. */
  async function drainAndMaybeSeal(r: RogueSupervisor, seal: boolean): Promise<void> {
    r.send(prepareHandoff(r.handoffId));
    await r.expect('Drained');
    if (!seal) return;
    r.send({ type: 'SealRequest', handoffId: r.handoffId });
    for (;;) {
      const m = await r.next();
      if (m.type === 'SealComplete') return;
      expect(m.type).toBe('SealProgress');
    }
  }

  it('garbage after Drained → Error{E_BAD_MSGPACK}; the incumbent re-listens', async () => {
    const w = await startWorld();
    const gen1 = w.sup.incumbent!.pid;
    const acked = await putAll(w, 8, 'a');
    const r = await rogueSupervisor(w, 'rogue-drained');
    await drainAndMaybeSeal(r, false);
    r.raw(framedGarbage());
    expect((await r.expectErrorAndClose()).code).toBe('E_BAD_MSGPACK');
    await expectServing(w, gen1, acked, 'b');
    expect(w.hooks(gen1)).toEqual(expect.arrayContaining(['drain', 'resume']));
    expect(w.hooks(gen1)).not.toContain('seal');
    await expectNextHandoffCommits(w, acked);
  });

  it('Commit naming another handoff after SealComplete → Error{E_WRONG_HANDOFF}; the incumbent does not exit, re-takes the lock', async () => {
    const w = await startWorld();
    const gen1 = w.sup.incumbent!.pid;
    const acked = await putAll(w, 8, 'a');
    const r = await rogueSupervisor(w, 'rogue-sealed');
    await drainAndMaybeSeal(r, true);
    expect(await lockHolder(w.dataDir)).toBeUndefined(); // released before SealComplete
    r.send({ type: 'Commit', handoffId: 'some-other-handoff' });
    expect((await r.expectErrorAndClose()).code).toBe('E_WRONG_HANDOFF');
    await expectServing(w, gen1, acked, 'b');
    expect(w.hooks(gen1)).toEqual(expect.arrayContaining(['drain', 'seal', 'resume']));
    await expectNextHandoffCommits(w, acked);
  });

  it('Commit for a handoff it already aborted on its own → Error{E_ABORTED}, no exit', async () => {
    const w = await startWorld();
    const gen1 = w.sup.incumbent!.pid;
    const acked = await putAll(w, 8, 'a');
    const first = await rogueSupervisor(w, 'rogue-aborted');
    await drainAndMaybeSeal(first, true);
    first.raw(framedGarbage());
    expect((await first.expectErrorAndClose()).code).toBe('E_BAD_MSGPACK');
    await expectServing(w, gen1, acked, 'b'); // self-aborted: lock re-taken, serving

    // A supervisor comes back and commits that handoff: the incumbent must refuse and stay.
    const second = await rogueSupervisor(w, 'rogue-aborted');
    second.send({ type: 'Commit', handoffId: 'rogue-aborted' });
    const err = await second.expectErrorAndClose();
    // PROTOCOL.md 7.5/8.2: the incumbent remembers the handoff it aborted and refuses to commit it.
    expect(err.code, err.message).toBe('E_ABORTED');
    await expectServing(w, gen1, acked, 'c');
    await expectNextHandoffCommits(w, acked);
  });

  it('silence after SealComplete (no heartbeats) → the incumbent drops it after its liveness timeout and re-takes the lock', async () => {
    // The apps' receive timeout (BATON_LIVENESS_MS) shortened; still above the 2 s heartbeat interval of a real supervisor.
    const w = await startWorld({ appEnv: { BATON_LIVENESS_MS: '3000' } });
    const gen1 = w.sup.incumbent!.pid;
    const acked = await putAll(w, 8, 'a');
    const r = await rogueSupervisor(w, 'rogue-silent');
    await drainAndMaybeSeal(r, true);
    const t0 = Date.now();
    expect((await r.next(10_000)).type).toBe('EOF');
    expect(Date.now() - t0).toBeGreaterThan(2_000);
    await expectServing(w, gen1, acked, 'b');
    await expectNextHandoffCommits(w, acked);
  });
});

describe('two supervisors: one session at a time (E_BUSY)', () => {
  it('a connection while a real handoff runs gets Error{E_BUSY}; the real handoff is not affected and commits', async () => {
    const w = await startWorld();
    const gen1 = w.sup.incumbent!.pid;
    const acked = await putAll(w, 8, 'a');
    // An idle client connection makes the drain last PRIM_IDLE_GRACE_MS (500 ms): time to knock meanwhile.
    const idle = net.connect(w.port, '127.0.0.1');
    idle.on('error', () => undefined);
    await new Promise((resolve) => idle.once('connect', resolve));
    let busy: Promise<MessageOf<'Error'>> | undefined;
    w.sup.on('phase', (phase: string) => {
      if (phase !== 'draining' || busy) return;
      busy = rogueSupervisor(w).then((r) => r.expectErrorAndClose());
      busy.catch(() => undefined); // awaited below
    });
    const result = await w.sup.performHandoff();
    idle.destroy();
    expect(busy).toBeDefined();
    const err = await busy!;
    expect(err.code, err.message).toBe('E_BUSY');
    expect(result.outcome, result.reason).toBe('committed');
    expect(result.oldPid).toBe(gen1);
    await expectServing(w, result.newPid!, acked, 'b');
    await expectNextHandoffCommits(w, acked);
  });

  // Also a regression test: before 2945fc9 the E_BUSY answer rejected Supervisor.stepHello's incumbent handshake
  // while it was not yet awaited (the successor was still booting): an unhandled rejection, which kills a supervisor
  // process under Node's default --unhandled-rejections=throw.
  it('a real handoff while another supervisor holds the session aborts with E_BUSY; once it hangs up, a handoff commits', async () => {
    const w = await startWorld();
    const gen1 = w.sup.incumbent!.pid;
    const acked = await putAll(w, 8, 'a');
    const r = await rogueSupervisor(w, 'rogue-holder');

    const result = await w.sup.performHandoff();
    expect(result.outcome).toBe('aborted');
    expect(result.code, result.reason).toBe('E_PEER_ERROR');
    expect(result.reason).toMatch(/E_BUSY/);
    expect(w.hooks(gen1)).not.toContain('drain');
    await expectServing(w, gen1, acked, 'b');

    await r.hangUp();
    // The incumbent drops the session right after the close it just answered.
    await new Promise((resolve) => setTimeout(resolve, 200));
    await expectNextHandoffCommits(w, acked);
  });
});
